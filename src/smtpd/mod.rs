//! SMTP listeners and the I/O driver of a session.
