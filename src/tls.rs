//! TLS certificates: conf/certs/<name>/, SNI, self-signed fallback.
