//! `conf/access`: sendmail-style access rules (SPEC §7), one a line,
//! `<Kind>:<pattern> <ACTION> [text]`, `#` comments and blank lines ignored.
//!
//! Patterns:
//! - `Connect:` a client address or CIDR network (`203.0.113.9`, `192.168.1.0/24`,
//!   `2001:db8::/32`); IPv4-mapped IPv6 clients match IPv4 rules.
//! - `From:` and `To:` an address: `user@example.net` (that address), `@example.org` (that
//!   domain only), `example.org` (that domain and its subdomains, as sendmail), `user@` (that
//!   local part at any domain). `From:<>` matches only the null sender `<>`, which no other
//!   pattern matches. Local parts compare case-insensitively and exactly otherwise (no
//!   suffix or drop-character normalisation); domains in IDNA-normalised form, so
//!   `xn--bcher-kva.example` and `BÜCHER.example` are the same domain.
//!
//! Lookups return the first rule of the asked kind that matches, in file order. What each
//! action means, for the SMTP driver:
//!
//! | stage | `OK` | `RELAY` | `REJECT [text]` | `DISCARD` |
//! | --- | --- | --- | --- | --- |
//! | Connect | accept | also: may relay to any recipient, as `relay_networks` | 554 5.7.1 as the greeting, then close | every message of the connection is accepted and dropped |
//! | From (MAIL) | accept | (a parse error: a sender is forgeable) | 554 5.7.1 to MAIL | the message is accepted (250 after DATA) and dropped |
//! | To (RCPT) | accept | also: may relay to this recipient even if not local | 554 5.7.1 to that RCPT only | this recipient is accepted and dropped; the others are delivered |
//!
//! `OK` only ends the evaluation of access rules at that stage (so an `OK` before a wider
//! `REJECT` makes an exception); it grants nothing else: the relay rule, the sender
//! restriction of submission and the other stages' rules still apply. `RELAY` never
//! overrides a `REJECT` of another stage. Every `DISCARD` is logged by the driver.
//! A REJECT without text uses "Access denied" ([`Action::reply`]).

use crate::addr::{Domain, LocalPart};
use crate::config::settings::IpNet;
use crate::proto::reply::Reply;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}: {msg}", path.display())]
    Parse {
        path: PathBuf,
        line: usize,
        msg: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Ok,
    Relay,
    /// The text, if the rule had one, is the reply text (printable ASCII, checked on load).
    Reject(Option<String>),
    Discard,
}

/// The reply text of a REJECT without its own.
pub const DEFAULT_REJECT_TEXT: &str = "Access denied";

/// RFC 5321 §4.5.3.1.5: a reply line is at most 512 octets; leave room for the code,
/// the enhanced code and the CRLF.
const MAX_TEXT_LEN: usize = 400;

impl Action {
    /// The reply of a REJECT at any stage (Postfix's `access_map_reject_code` is 554 too).
    pub fn reply(&self) -> Option<Reply> {
        let Action::Reject(text) = self else {
            return None;
        };
        let text = text.as_deref().unwrap_or(DEFAULT_REJECT_TEXT).to_string();
        Some(Reply::new(554, "5.7.1", text))
    }
}

/// An address pattern of a `From:` or `To:` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
enum AddrPattern {
    /// `user@example.net`; the local part is lower-cased.
    Address(String, Domain),
    /// `@example.org`.
    Domain(Domain),
    /// `example.org`: the domain and its subdomains.
    DomainTree(Domain),
    /// `user@`, lower-cased.
    Local(String),
    /// `<>`, the null reverse-path (From only).
    Null,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessRules {
    // One list per kind; each in file order, which is all "first match wins" needs.
    connect: Vec<(IpNet, Action)>,
    from: Vec<(AddrPattern, Action)>,
    to: Vec<(AddrPattern, Action)>,
}

impl AccessRules {
    /// A missing file means no rules.
    pub fn load(path: &Path) -> Result<AccessRules, AccessError> {
        match std::fs::read_to_string(path) {
            Ok(text) => AccessRules::parse(path, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(AccessRules::default()),
            Err(source) => Err(AccessError::Io {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// `path` is only used in errors.
    pub fn parse(path: &Path, text: &str) -> Result<AccessRules, AccessError> {
        let (rules, mut problems) = AccessRules::parse_all(path, text);
        match problems.is_empty() {
            true => Ok(rules),
            false => Err(problems.swap_remove(0)),
        }
    }

    /// [`AccessRules::parse`] that goes on past a bad line: the good rules, and every bad
    /// line with its number (`util check`).
    pub fn parse_all(path: &Path, text: &str) -> (AccessRules, Vec<AccessError>) {
        let mut rules = AccessRules::default();
        let mut problems = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Err(msg) = rules.add_line(line) {
                problems.push(AccessError::Parse {
                    path: path.to_path_buf(),
                    line: i + 1,
                    msg,
                });
            }
        }
        (rules, problems)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn len(&self) -> usize {
        self.connect.len() + self.from.len() + self.to.len()
    }

    /// The action of the first `Connect:` rule that contains `ip`.
    pub fn connect(&self, ip: IpAddr) -> Option<&Action> {
        self.connect
            .iter()
            .find(|(net, _)| net.contains(ip))
            .map(|(_, action)| action)
    }

    /// The action of the first `From:` rule matching the envelope sender (`user@domain`,
    /// with or without angle brackets; `""` or `"<>"` is the null sender).
    pub fn from(&self, sender: &str) -> Option<&Action> {
        first_match(&self.from, sender)
    }

    /// The action of the first `To:` rule matching the recipient.
    pub fn to(&self, rcpt: &str) -> Option<&Action> {
        first_match(&self.to, rcpt)
    }

    fn add_line(&mut self, line: &str) -> Result<(), String> {
        let (rule, rest) = split_word(line);
        let (kind, pattern) = rule
            .split_once(':')
            .ok_or_else(|| format!("expected Connect:, From: or To: before {rule:?}"))?;
        if pattern.is_empty() {
            return Err(format!("missing pattern after {kind}:"));
        }
        let (action, text) = split_word(rest);
        let action = parse_action(action, text)?;
        match kind.to_ascii_lowercase().as_str() {
            "connect" => {
                let net = IpNet::parse(pattern)?;
                self.connect.push((net, action));
            }
            "from" => {
                if action == Action::Relay {
                    return Err("RELAY is not allowed in From: rules (senders are forged \
                                easily); use Connect: or To:"
                        .into());
                }
                self.from.push((parse_addr_pattern(pattern, true)?, action));
            }
            "to" => self.to.push((parse_addr_pattern(pattern, false)?, action)),
            _ => {
                return Err(format!(
                    "unknown kind {kind:?} (expected Connect, From or To)"
                ));
            }
        }
        Ok(())
    }
}

/// The first whitespace-separated word and the rest, trimmed.
fn split_word(s: &str) -> (&str, &str) {
    match s.split_once(char::is_whitespace) {
        Some((word, rest)) => (word, rest.trim()),
        None => (s, ""),
    }
}

fn parse_action(word: &str, text: &str) -> Result<Action, String> {
    if word.is_empty() {
        return Err("missing action (OK, RELAY, REJECT or DISCARD)".into());
    }
    let action = match word.to_ascii_uppercase().as_str() {
        "OK" => Action::Ok,
        "RELAY" => Action::Relay,
        "DISCARD" => Action::Discard,
        "REJECT" => return Ok(Action::Reject(reply_text(text)?)),
        _ => return Err(format!("unknown action {word:?}")),
    };
    if !text.is_empty() {
        return Err(format!(
            "text after {word} (only REJECT takes a reply text)"
        ));
    }
    Ok(action)
}

/// The peer sees this text: printable ASCII only (no control character that could forge
/// reply lines); whitespace runs (tab, a lone CR ...) fold to one space.
fn reply_text(text: &str) -> Result<Option<String>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    let folded = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if let Some(c) = folded
        .chars()
        .find(|c| !(c.is_ascii_graphic() || *c == ' '))
    {
        return Err(format!(
            "reply text may only hold printable ASCII, found {c:?}"
        ));
    }
    if folded.len() > MAX_TEXT_LEN {
        return Err(format!("reply text longer than {MAX_TEXT_LEN} characters"));
    }
    Ok(Some(folded))
}

fn parse_addr_pattern(pattern: &str, null_allowed: bool) -> Result<AddrPattern, String> {
    let bad = |e: crate::addr::AddrError| format!("bad address pattern {pattern:?}: {e}");
    if pattern == "<>" {
        if !null_allowed {
            return Err("<> (the null sender) is only valid in From: rules".into());
        }
        return Ok(AddrPattern::Null);
    }
    match pattern.rsplit_once('@') {
        None => Ok(AddrPattern::DomainTree(
            Domain::parse(pattern).map_err(bad)?,
        )),
        Some(("", domain)) => Ok(AddrPattern::Domain(Domain::parse(domain).map_err(bad)?)),
        Some((local, "")) => Ok(AddrPattern::Local(lower_local(local).map_err(bad)?)),
        Some((local, domain)) => Ok(AddrPattern::Address(
            lower_local(local).map_err(bad)?,
            Domain::parse(domain).map_err(bad)?,
        )),
    }
}

fn lower_local(s: &str) -> Result<String, crate::addr::AddrError> {
    Ok(LocalPart::parse(s)?.lowercase().as_str().to_string())
}

/// An envelope address as the session hands it over, split for matching. The domain is
/// None when it is not a domain name (an address literal): only local-part rules match then.
enum Envelope {
    Null,
    Addr {
        local: String,
        domain: Option<Domain>,
    },
}

impl Envelope {
    fn parse(s: &str) -> Envelope {
        let s = s.trim();
        let s = s
            .strip_prefix('<')
            .and_then(|s| s.strip_suffix('>'))
            .unwrap_or(s);
        if s.is_empty() {
            return Envelope::Null;
        }
        let (local, domain) = s.rsplit_once('@').unwrap_or((s, ""));
        Envelope::Addr {
            local: local.to_lowercase(),
            domain: Domain::parse(domain).ok(),
        }
    }
}

fn first_match<'a>(rules: &'a [(AddrPattern, Action)], addr: &str) -> Option<&'a Action> {
    if rules.is_empty() {
        // The common case: no rules of this kind, so the address need not be parsed.
        return None;
    }
    let envelope = Envelope::parse(addr);
    rules
        .iter()
        .find(|(pattern, _)| matches(pattern, &envelope))
        .map(|(_, action)| action)
}

fn matches(pattern: &AddrPattern, envelope: &Envelope) -> bool {
    let Envelope::Addr { local, domain } = envelope else {
        return *pattern == AddrPattern::Null;
    };
    match pattern {
        AddrPattern::Null => false,
        AddrPattern::Local(l) => l == local,
        AddrPattern::Address(l, d) => l == local && domain.as_ref() == Some(d),
        AddrPattern::Domain(d) => domain.as_ref() == Some(d),
        AddrPattern::DomainTree(d) => domain.as_ref().is_some_and(|got| in_tree(got, d)),
    }
}

/// `got` is `tree` or one of its subdomains (compared on the normalised Unicode form, label
/// by label: `badexample.org` is not under `example.org`).
fn in_tree(got: &Domain, tree: &Domain) -> bool {
    let (got, tree) = (got.as_str(), tree.as_str());
    got == tree
        || got
            .strip_suffix(tree)
            .is_some_and(|head| head.ends_with('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(text: &str) -> AccessRules {
        AccessRules::parse(Path::new("conf/access"), text).unwrap()
    }

    fn reject(text: &str) -> Action {
        Action::Reject(Some(text.to_string()))
    }

    #[test]
    fn parses_every_form() {
        let text = "\
# comment
   # indented comment

Connect:192.168.1.0/24 RELAY
connect:203.0.113.9 REJECT
CONNECT:2001:db8::/32 ok
Connect:10.0.0.1 DISCARD
From:spam@example.net REJECT go away
from:@example.org Discard
From:example.com OK
From:user@ reject
From:<> REJECT  no\tbounces   here
To:info@ OK
To:postmaster@example.org RELAY
To:@example.org REJECT
To:example.com discard
";
        let r = rules(text);
        assert_eq!(r.len(), 13);
        let d = |s: &str| Domain::parse(s).unwrap();
        let connect: Vec<(String, Action)> = r
            .connect
            .iter()
            .map(|(n, a)| (n.to_string(), a.clone()))
            .collect();
        assert_eq!(
            connect,
            vec![
                ("192.168.1.0/24".to_string(), Action::Relay),
                ("203.0.113.9/32".to_string(), Action::Reject(None)),
                ("2001:db8::/32".to_string(), Action::Ok),
                ("10.0.0.1/32".to_string(), Action::Discard),
            ]
        );
        assert_eq!(
            r.from,
            vec![
                (
                    AddrPattern::Address("spam".into(), d("example.net")),
                    reject("go away")
                ),
                (AddrPattern::Domain(d("example.org")), Action::Discard),
                (AddrPattern::DomainTree(d("example.com")), Action::Ok),
                (AddrPattern::Local("user".into()), Action::Reject(None)),
                (AddrPattern::Null, reject("no bounces here")),
            ]
        );
        assert_eq!(
            r.to,
            vec![
                (AddrPattern::Local("info".into()), Action::Ok),
                (
                    AddrPattern::Address("postmaster".into(), d("example.org")),
                    Action::Relay
                ),
                (AddrPattern::Domain(d("example.org")), Action::Reject(None)),
                (AddrPattern::DomainTree(d("example.com")), Action::Discard),
            ]
        );
    }

    #[test]
    fn parse_errors_name_file_and_line() {
        let cases = [
            ("Connect:1.2.3.4 DENY", 1, r#"unknown action "DENY""#),
            ("# c\n\nConnect:1.2.3.4 DENY", 3, r#"unknown action "DENY""#),
            (
                "Connect:1.2.3.4",
                1,
                "missing action (OK, RELAY, REJECT or DISCARD)",
            ),
            (
                "Helo:x.example OK",
                1,
                r#"unknown kind "Helo" (expected Connect, From or To)"#,
            ),
            (
                "1.2.3.4 REJECT",
                1,
                r#"expected Connect:, From: or To: before "1.2.3.4""#,
            ),
            (
                "Connect: 1.2.3.4 REJECT",
                1,
                "missing pattern after Connect:",
            ),
            (
                "Connect:1.2.3.4/33 OK",
                1,
                r#""1.2.3.4/33": prefix length must be 0-32"#,
            ),
            (
                "Connect:example.org OK",
                1,
                r#""example.org" is not an IP address or network"#,
            ),
            (
                "Connect:::1/129 OK",
                1,
                r#""::1/129": prefix length must be 0-128"#,
            ),
            (
                "OK\nConnect:1.2.3.4 OK now",
                1,
                r#"expected Connect:, From: or To: before "OK""#,
            ),
            (
                "Connect:1.2.3.4 OK\nConnect:1.2.3.4 OK now",
                2,
                "text after OK (only REJECT takes a reply text)",
            ),
            (
                "To:a@ RELAY x",
                1,
                "text after RELAY (only REJECT takes a reply text)",
            ),
            (
                "From:a@b.example DISCARD x",
                1,
                "text after DISCARD (only REJECT takes a reply text)",
            ),
            (
                "From:example.org RELAY",
                1,
                "RELAY is not allowed in From: rules (senders are forged easily); use Connect: or To:",
            ),
            (
                "To:<> OK",
                1,
                "<> (the null sender) is only valid in From: rules",
            ),
            (
                "From:a@[127.0.0.1] OK",
                1,
                r#"bad address pattern "a@[127.0.0.1]": invalid domain "[127.0.0.1]": IP literals are not accepted"#,
            ),
            (
                "From:@ OK",
                1,
                r#"bad address pattern "@": invalid domain "": empty"#,
            ),
            ("To:exa mple.org OK", 1, r#"unknown action "mple.org""#),
            (
                "To:.a@ OK",
                1,
                r#"bad address pattern ".a@": invalid local part ".a": starts with a dot"#,
            ),
            (
                "To:a@b@ OK",
                1,
                r#"bad address pattern "a@b@": invalid local part "a@b": contains '@'"#,
            ),
            (
                "To:a@ REJECT bad\u{7}bell",
                1,
                r#"reply text may only hold printable ASCII, found '\u{7}'"#,
            ),
            (
                "To:a@ REJECT bad\0nul",
                1,
                r#"reply text may only hold printable ASCII, found '\0'"#,
            ),
            (
                "To:a@ REJECT bad\u{7f}del",
                1,
                r#"reply text may only hold printable ASCII, found '\u{7f}'"#,
            ),
            (
                "To:a@ REJECT déjà",
                1,
                r#"reply text may only hold printable ASCII, found 'é'"#,
            ),
        ];
        for (text, line, msg) in cases {
            let err = AccessRules::parse(Path::new("conf/access"), text).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("conf/access:{line}: {msg}"),
                "{text:?}"
            );
        }
        let long = format!("To:a@ REJECT {}", "x".repeat(MAX_TEXT_LEN + 1));
        let err = AccessRules::parse(Path::new("conf/access"), &long).unwrap_err();
        assert_eq!(
            err.to_string(),
            "conf/access:1: reply text longer than 400 characters"
        );
        let ok = format!("To:a@ REJECT {}", "x".repeat(MAX_TEXT_LEN));
        assert_eq!(rules(&ok).len(), 1);
    }

    #[test]
    fn reject_text_is_one_clean_line() {
        // A lone CR (or tab, form feed ...) inside a line is whitespace: folded to a space,
        // so the text can never end the reply line early.
        let r = rules("To:a@ REJECT  spaced \t out\r250 forged \x0c\r\nTo:b@ OK\n");
        assert_eq!(r.to("a@x.example"), Some(&reject("spaced out 250 forged")));
        assert_eq!(r.to("b@x.example"), Some(&Action::Ok));
        let reply = r.to("a@x.example").and_then(Action::reply).unwrap();
        assert_eq!(reply.to_bytes(), b"554 5.7.1 spaced out 250 forged\r\n");
    }

    #[test]
    fn load_missing_file_is_empty_and_io_errors_name_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("access");
        assert!(AccessRules::load(&path).unwrap().is_empty());
        std::fs::write(&path, "To:a@ OK\nTo:b@ NOPE\n").unwrap();
        let err = AccessRules::load(&path).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{}:2: unknown action \"NOPE\"", path.display())
        );
        std::fs::write(&path, "To:a@ OK\n").unwrap();
        assert_eq!(AccessRules::load(&path).unwrap().len(), 1);
        let err = AccessRules::load(tmp.path()).unwrap_err();
        assert!(matches!(err, AccessError::Io { .. }), "{err}");
        assert!(
            err.to_string()
                .starts_with(&tmp.path().display().to_string())
        );
    }

    #[test]
    fn connect_matching() {
        let r = rules(
            "Connect:192.0.2.5 OK\n\
             Connect:192.0.2.0/24 REJECT no thanks\n\
             Connect:10.0.0.0/8 RELAY\n\
             Connect:2001:db8::/32 DISCARD\n\
             Connect:2001:db8:1::/48 REJECT never reached\n\
             Connect:::1 RELAY\n",
        );
        let cases: &[(&str, Option<Action>)] = &[
            ("192.0.2.5", Some(Action::Ok)),
            ("192.0.2.6", Some(reject("no thanks"))),
            ("192.0.3.1", None),
            ("10.255.1.2", Some(Action::Relay)),
            ("11.0.0.1", None),
            // IPv4-mapped IPv6 clients (dual-stack listeners) match IPv4 rules.
            ("::ffff:192.0.2.5", Some(Action::Ok)),
            ("::ffff:192.0.2.200", Some(reject("no thanks"))),
            ("::ffff:10.1.1.1", Some(Action::Relay)),
            ("2001:db8:1::7", Some(Action::Discard)),
            ("2001:db9::1", None),
            ("::1", Some(Action::Relay)),
            ("127.0.0.1", None),
        ];
        for (ip, want) in cases {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(r.connect(ip), want.as_ref(), "{ip}");
        }
    }

    #[test]
    fn from_matching() {
        let r = rules(
            "To:spam@example.net OK\n\
             From:ok@example.net OK\n\
             From:spam@example.net REJECT go away\n\
             From:@example.org DISCARD\n\
             From:bücher.example REJECT books\n\
             From:mailer-daemon@ REJECT\n\
             From:<> REJECT no bounces\n",
        );
        let cases: &[(&str, Option<Action>)] = &[
            ("spam@example.net", Some(reject("go away"))),
            ("<spam@example.net>", Some(reject("go away"))),
            ("SPAM@Example.NET", Some(reject("go away"))),
            ("ok@example.net", Some(Action::Ok)),
            ("other@example.net", None),
            ("spam@sub.example.net", None),
            // `@domain`: that domain only.
            ("a@example.org", Some(Action::Discard)),
            ("a@EXAMPLE.org", Some(Action::Discard)),
            ("a@sub.example.org", None),
            // Bare domain: the domain and its subdomains, in either IDNA form.
            ("a@bücher.example", Some(reject("books"))),
            ("a@xn--bcher-kva.example", Some(reject("books"))),
            ("a@XN--BCHER-KVA.EXAMPLE", Some(reject("books"))),
            ("a@mx.BÜCHER.example", Some(reject("books"))),
            ("a@notbücher.example", None),
            ("a@bücher.example.com", None),
            // `local@`: any domain.
            ("MAILER-DAEMON@anything.example", Some(Action::Reject(None))),
            ("mailer-daemon@[192.0.2.1]", Some(Action::Reject(None))),
            ("mailer-daemonx@a.example", None),
            // The null sender matches only `From:<>`.
            ("", Some(reject("no bounces"))),
            ("<>", Some(reject("no bounces"))),
        ];
        for (sender, want) in cases {
            assert_eq!(r.from(sender), want.as_ref(), "{sender:?}");
        }
        assert_eq!(rules("From:example.org OK").from("<>"), None);
        assert_eq!(rules("From:@example.org OK").from(""), None);
    }

    #[test]
    fn to_matching_first_match_wins_within_the_kind() {
        let r = rules(
            "From:info@ REJECT\n\
             Connect:0.0.0.0/0 REJECT\n\
             To:abuse@example.com OK\n\
             To:example.com REJECT\n\
             To:info@ OK\n\
             To:info@example.net REJECT never reached\n\
             To:partner.example RELAY\n\
             To:@partner.example REJECT never reached\n\
             To:bin@ DISCARD\n",
        );
        let cases: &[(&str, Option<Action>)] = &[
            ("abuse@example.com", Some(Action::Ok)),
            ("ABUSE@EXAMPLE.COM", Some(Action::Ok)),
            ("sales@example.com", Some(Action::Reject(None))),
            ("info@example.com", Some(Action::Reject(None))),
            ("info@example.net", Some(Action::Ok)),
            ("Info@anywhere.example", Some(Action::Ok)),
            ("x@partner.example", Some(Action::Relay)),
            ("x@eu.partner.example", Some(Action::Relay)),
            ("bin@example.org", Some(Action::Discard)),
            ("nobody@example.org", None),
            ("", None),
            ("<>", None),
            ("no-at-sign", None),
        ];
        for (rcpt, want) in cases {
            assert_eq!(r.to(rcpt), want.as_ref(), "{rcpt:?}");
        }
    }

    #[test]
    fn reject_replies() {
        let cases = [
            (
                Action::Reject(Some("go away".into())),
                Some("554 5.7.1 go away\r\n"),
            ),
            (Action::Reject(None), Some("554 5.7.1 Access denied\r\n")),
            (Action::Ok, None),
            (Action::Relay, None),
            (Action::Discard, None),
        ];
        for (action, want) in cases {
            let got = action
                .reply()
                .map(|r| String::from_utf8(r.to_bytes()).unwrap());
            assert_eq!(got.as_deref(), want, "{action:?}");
        }
    }
}
