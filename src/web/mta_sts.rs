//! The MTA-STS policy of our domains (RFC 8461 §3.2): what `util dns-records` prints and what
//! `https_listen` serves at `mta-sts.<domain>/.well-known/mta-sts.txt`, from one function.

use crate::config::Settings;
use std::path::Path;

/// RFC 8461 §3.2 wants `max_age` in weeks or more for a stable policy; one week.
pub const MAX_AGE: u64 = 604_800;

/// RFC 8461 §5: `enforce` makes senders refuse a certificate that does not verify. With no
/// certificate under `conf/certs/` and no ACME the server presents a self-signed one, so only
/// `testing` (report, deliver anyway) is safe.
pub fn mode(settings: &Settings) -> &'static str {
    if settings.acme.is_some() || has_configured_cert(&settings.config_dir) {
        "enforce"
    } else {
        "testing"
    }
}

fn has_configured_cert(config_dir: &Path) -> bool {
    let certs = config_dir.join("conf").join("certs");
    std::fs::read_dir(certs).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.path().join("fullchain.pem").is_file())
    })
}

/// RFC 8461 §3.2: the policy body, one `key: value` a line; `mx` is our host name (A-labels).
pub fn policy_lines(mode: &str, mx: &str) -> Vec<String> {
    vec![
        "version: STSv1".to_string(),
        format!("mode: {mode}"),
        format!("mx: {mx}"),
        format!("max_age: {MAX_AGE}"),
    ]
}

/// The policy as served: CRLF-terminated lines (§3.2 allows CRLF or LF; CRLF is the ABNF's).
pub fn policy_text(mode: &str, mx: &str) -> String {
    let mut text = policy_lines(mode, mx).join("\r\n");
    text.push_str("\r\n");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_parses_as_a_sender_would() {
        let text = policy_text("enforce", "mail.example.com");
        let policy = crate::courier::mta_sts::parse_policy(&text, "id1", 0).expect("parses");
        assert!(policy.enforced(), "{text}");
        assert!(policy.mx_allowed("mail.example.com"), "{text}");
        assert!(!policy.mx_allowed("other.example.com"), "{text}");
    }
}
