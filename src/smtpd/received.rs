//! The Received trace header (RFC 5321 §4.4, RFC 5322 §3.6.7) and RFC 5322 dates.

use std::net::IpAddr;
use time::OffsetDateTime;

/// What the Received header says about the hop.
pub struct Hop<'a> {
    pub helo: &'a str,
    pub ip: IpAddr,
    pub hostname: &'a str,
    pub esmtp: bool,
    pub tls: bool,
    pub authenticated: bool,
    pub id: &'a str,
    /// Named only when the message has a single recipient (privacy, as Postfix does).
    pub single_rcpt: Option<&'a str>,
}

/// `Received: from <helo> ([ip]) by <hostname> (tambo) with <proto> id <id> [for <rcpt>]; <date>`
/// folded on three lines. `with` is SMTP/ESMTP plus S (TLS) and A (AUTH) as in RFC 3848.
pub fn header(hop: &Hop<'_>, now: OffsetDateTime) -> String {
    let mut with = String::from(if hop.esmtp { "ESMTP" } else { "SMTP" });
    if hop.tls {
        with.push('S');
    }
    if hop.authenticated {
        with.push('A');
    }
    let for_clause = hop
        .single_rcpt
        .map(|r| format!("\r\n\tfor <{}>", sanitize(r)))
        .unwrap_or_default();
    format!(
        "Received: from {} ([{}])\r\n\tby {} (tambo) with {} id {}{};\r\n\t{}\r\n",
        sanitize(hop.helo),
        hop.ip,
        hop.hostname,
        with,
        hop.id,
        for_clause,
        crate::message::date::rfc5322_date(now)
    )
}

/// Client-supplied text (HELO, addresses) inside a header: no control characters, no
/// parentheses that would unbalance a comment.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() || c == '(' || c == ')' {
                '?'
            } else {
                c
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn header_with_tls_and_auth() {
        let hop = Hop {
            helo: "client.example",
            ip: "192.0.2.7".parse().unwrap(),
            hostname: "mx.example.test",
            esmtp: true,
            tls: true,
            authenticated: true,
            id: "0123456789abcdef",
            single_rcpt: Some("alice@example.test"),
        };
        let h = header(&hop, datetime!(2026-11-22 21:57:14 UTC));
        assert_eq!(
            h,
            "Received: from client.example ([192.0.2.7])\r\n\tby mx.example.test (tambo) with ESMTPSA id 0123456789abcdef\r\n\tfor <alice@example.test>;\r\n\tSun, 22 Nov 2026 21:57:14 +0000\r\n"
        );
    }

    #[test]
    fn helo_cannot_break_the_header() {
        let hop = Hop {
            helo: "evil)\u{7}(x",
            ip: "::1".parse().unwrap(),
            hostname: "mx",
            esmtp: false,
            tls: false,
            authenticated: false,
            id: "1",
            single_rcpt: None,
        };
        let h = header(&hop, datetime!(2026-01-02 03:04:05 UTC));
        assert!(
            h.starts_with("Received: from evil???x ([::1])\r\n\tby mx (tambo) with SMTP id 1;")
        );
    }
}
