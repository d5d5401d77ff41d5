//! The I/O side of the SMTP/LMTP client: connect, greeting, EHLO/LHLO, STARTTLS, one
//! transaction with the data streamed from the queue file, every read under a deadline.
