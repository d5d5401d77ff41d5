//! Local delivery over LMTP (RFC 2033), e.g. to Dovecot: `unix:/path` or `host:port`.
