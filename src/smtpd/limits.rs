//! Caps on concurrent connections, overall and per client address (issue 5).
