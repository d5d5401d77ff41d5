//! Remote delivery over SMTP (SPEC §8): MX lookup with A/AAAA fallback, hosts in preference
//! order, STARTTLS whenever offered, TLS level and MTA-STS enforced, all recipients of one
//! destination in one transaction.
