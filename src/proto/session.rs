//! SMTP server session state machine (sans-I/O).
