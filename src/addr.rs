//! Address newtypes: `Domain`, `LocalPart`, `Address`.
//!
//! Parse, don't validate: a value of these types is always usable as a path component
//! (no `/`, `\`, NUL, control characters, never `.` or `..`), so a name from the network
//! or the command line cannot escape `domains/` or `data_dir/mail/` by construction.
//! (SPEC §11.)

use idna::uts46::{AsciiDenyList, DnsLength, Hyphens, Uts46};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddrError {
    #[error("empty address")]
    Empty,
    #[error("address has no domain (expected user@domain)")]
    NoDomain,
    #[error("invalid domain {0:?}: {1}")]
    BadDomain(String, &'static str),
    #[error("invalid local part {0:?}: {1}")]
    BadLocalPart(String, &'static str),
}

/// RFC 1035 §2.3.4: the whole name, in its ACE form, without the root dot.
const MAX_DOMAIN_OCTETS: usize = 253;
/// RFC 1035 §2.3.4.
const MAX_LABEL_OCTETS: usize = 63;
/// RFC 5321 §4.5.3.1.1.
const MAX_LOCAL_OCTETS: usize = 64;

/// A domain name, stored in its Unicode, lower-case form (the folder name under `domains/`).
/// Built from either the Unicode or the ACE (`xn--`) form, any case (UTS 46 mapping).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Domain {
    unicode: String,
    // Kept beside the Unicode form so that `to_ascii` cannot fail; both are a function of
    // each other, so the derived comparisons still only depend on the name.
    ascii: String,
}

/// RFC 1123 §2.1 host names: dot-separated labels of letters, digits and `-`, 1-63 each,
/// at most 253 in all; no trailing dot (we print it in greetings and certificates as is).
/// `hostname` in `conf/tambo.json`, and what a chasquid import may carry over.
pub fn is_host_name(s: &str) -> bool {
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    s.len() <= 253 && s.split('.').all(label_ok)
}

impl Domain {
    pub fn parse(s: &str) -> Result<Domain, AddrError> {
        let bad = |why| AddrError::BadDomain(s.to_string(), why);
        check_domain_syntax(s).map_err(bad)?;
        let domain = match plain_ldh(s) {
            // What UTS 46 would make of it, without the cost of running it (domains are
            // parsed several times per message).
            Some(plain) => Domain {
                unicode: plain.clone(),
                ascii: plain,
            },
            None => Domain::from_uts46(s).map_err(bad)?,
        };
        check_ace_lengths(&domain.ascii).map_err(bad)?;
        if domain.ascii.parse::<std::net::Ipv4Addr>().is_ok() {
            // RFC 1123 §2.1: a host name never has the dotted-decimal form.
            return Err(bad("IP addresses are not domain names"));
        }
        Ok(domain)
    }

    /// Both forms through UTS 46 (IDNA): mapping, validity, ACE encoding and decoding.
    fn from_uts46(s: &str) -> Result<Domain, &'static str> {
        let ascii = to_ace(s).ok_or("not a valid host name (IDNA / LDH rules)")?;
        let unicode = to_unicode(&ascii).ok_or("invalid IDNA label")?;
        Ok(Domain { unicode, ascii })
    }
    /// Unicode lower-case form (folder names, lookups, logs).
    pub fn as_str(&self) -> &str {
        &self.unicode
    }
    /// ACE form (`xn--...`), for DNS and for peers without SMTPUTF8.
    pub fn to_ascii(&self) -> String {
        self.ascii.clone()
    }
}

/// Checks on the raw input that UTS 46 would either map away silently or report without
/// a useful reason.
fn check_domain_syntax(s: &str) -> Result<(), &'static str> {
    if s.is_empty() {
        return Err("empty");
    }
    // RFC 5321 §4.1.3: address literals are not domains; we do not accept mail for them.
    if s.starts_with('[') {
        return Err("IP literals are not accepted");
    }
    if let Some(c) = s.chars().find(|&c| is_forbidden_in_domain(c)) {
        return Err(match c {
            '/' | '\\' => "contains a slash",
            '@' => "contains '@'",
            c if c.is_whitespace() => "contains whitespace",
            c if c.is_control() => "contains a control character",
            _ => "contains a character not allowed in host names",
        });
    }
    if s.starts_with('.') {
        return Err("starts with a dot");
    }
    if s.ends_with('.') {
        return Err("ends with a dot");
    }
    if s.split('.').any(str::is_empty) {
        return Err("empty label");
    }
    Ok(())
}

fn is_forbidden_in_domain(c: char) -> bool {
    matches!(c, '/' | '\\' | '@' | '%' | '!' | ':' | '[' | ']')
        || c.is_whitespace()
        || c.is_control()
}

/// RFC 1035 §2.3.4 limits, measured on the ACE form as it goes on the wire. UTS 46 mapping
/// may turn other full stops (U+3002 ...) into dots, so empty labels are checked again here.
fn check_ace_lengths(ascii: &str) -> Result<(), &'static str> {
    if ascii.len() > MAX_DOMAIN_OCTETS {
        return Err("longer than 253 octets");
    }
    for label in ascii.split('.') {
        if label.is_empty() {
            return Err("empty label");
        }
        if label.len() > MAX_LABEL_OCTETS {
            return Err("label longer than 63 octets");
        }
    }
    Ok(())
}

/// UTS 46 ToASCII with the STD3 (LDH) deny list; hyphens only checked at label ends,
/// because `ab--cd` labels exist in the wild (RFC 5891 §4.2.3.1 applies to U-labels we
/// produce, not to the names other people picked). Lengths are checked by the caller so
/// that the error says which limit was hit.
/// `s` in lower case when it is a plain ASCII host name, whose UTS 46 processing is only
/// that: letters, digits and hyphens (RFC 1123 §2.1), no label starting or ending with a
/// hyphen, none in ACE form (`xn--`, which UTS 46 must decode and check). Empty labels are
/// refused before this is called.
fn plain_ldh(s: &str) -> Option<String> {
    let ldh = s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if !ldh {
        return None;
    }
    let lower = s.to_ascii_lowercase();
    let plain = lower.split('.').all(|label| {
        !label.starts_with('-') && !label.ends_with('-') && !label.starts_with("xn--")
    });
    plain.then_some(lower)
}

fn to_ace(s: &str) -> Option<String> {
    Uts46::new()
        .to_ascii(
            s.as_bytes(),
            AsciiDenyList::STD3,
            Hyphens::CheckFirstLast,
            DnsLength::Ignore,
        )
        .ok()
        .map(|cow| cow.into_owned())
}

fn to_unicode(ascii: &str) -> Option<String> {
    let (unicode, result) = Uts46::new().to_unicode(
        ascii.as_bytes(),
        AsciiDenyList::STD3,
        Hyphens::CheckFirstLast,
    );
    // UTS 46 mapping already folds case; lower-casing again only guards the folder-name
    // invariant (SPEC §2: domain folder names are lower-case).
    result.ok().map(|()| unicode.to_lowercase())
}

/// A local part (the part before `@`), as given (case preserved). UTF-8 allowed (SMTPUTF8).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LocalPart(String);

impl LocalPart {
    pub fn parse(s: &str) -> Result<LocalPart, AddrError> {
        check_local_part(s).map_err(|why| AddrError::BadLocalPart(s.to_string(), why))?;
        Ok(LocalPart(s.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// Lower-case only (the "exact" lookup key).
    pub fn lowercase(&self) -> LocalPart {
        // Not re-parsed: lower-casing never produces a forbidden character or a leading
        // dot, and the few characters whose lower case is longer (U+0130 ...) may push
        // the value past 64 octets, which is harmless for a lookup key or a folder name.
        LocalPart(self.0.to_lowercase())
    }
    /// Lower-case, everything from the first suffix separator on removed, drop characters removed.
    /// (SPEC §3 `suffix_separators`, `drop_characters`; chasquid's normalisation.)
    ///
    /// Differences from chasquid (`aliases.RemoveDropsAndSuffix` + PRECIS
    /// UsernameCaseMapped): a value that would become empty (`+tag`, `...` with `.`
    /// dropped) keeps its lower-cased form instead of becoming the empty user, a value that
    /// would start with `.` does too (it must stay a valid folder name), and case mapping
    /// is Unicode `to_lowercase` rather than PRECIS (no NFC / width mapping).
    pub fn normalize(&self, drop_characters: &str, suffix_separators: &str) -> LocalPart {
        let lower = self.lowercase();
        let base = cut_suffix(lower.as_str(), suffix_separators);
        let dropped: String = base
            .chars()
            .filter(|c| !drop_characters.contains(*c))
            .collect();
        if dropped.is_empty() || dropped.starts_with('.') {
            return lower;
        }
        // Removing characters from a valid value keeps every remaining character valid;
        // only the leading dot (checked above) could be newly exposed.
        LocalPart(dropped)
    }
}

/// Everything before the first suffix separator, unless that is empty.
fn cut_suffix<'a>(s: &'a str, separators: &str) -> &'a str {
    match s.find(|c| separators.contains(c)) {
        Some(0) | None => s,
        Some(i) => &s[..i],
    }
}

fn check_local_part(s: &str) -> Result<(), &'static str> {
    if s.is_empty() {
        return Err("empty");
    }
    if s.len() > MAX_LOCAL_OCTETS {
        return Err("longer than 64 octets");
    }
    // Path safety (SPEC §11): covers `.` and `..` too.
    if s.starts_with('.') {
        return Err("starts with a dot");
    }
    match s.chars().find(|&c| !is_local_part_char(c)) {
        None => Ok(()),
        Some('@') => Err("contains '@'"),
        Some('/' | '\\') => Err("contains a slash"),
        Some('"') => Err("contains a quote"),
        Some(c) if c.is_control() => Err("contains a control character"),
        Some(c) if c.is_whitespace() => Err("contains whitespace"),
        Some(_) => Err("contains a character not allowed in a local part"),
    }
}

/// RFC 5322 §3.2.3 atext plus `.` (dot-atom), minus `/` (a path separator), plus any
/// non-ASCII character that is neither a control nor whitespace (RFC 6531 §3.3 UTF8-non-ascii).
fn is_local_part_char(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_alphanumeric() || "!#$%&'*+-=?^_`{|}~.".contains(c)
    } else {
        !c.is_control() && !c.is_whitespace()
    }
}

/// `local@domain`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address {
    local: LocalPart,
    domain: Domain,
}

impl Address {
    pub fn new(local: LocalPart, domain: Domain) -> Address {
        Address { local, domain }
    }
    /// Parses `local@domain` (splits at the last `@`).
    pub fn parse(s: &str) -> Result<Address, AddrError> {
        if s.is_empty() {
            return Err(AddrError::Empty);
        }
        // RFC 5321 §4.1.2: the domain never contains `@`, so the last one separates; an `@`
        // left in the local part (quoted in SMTP) is then refused by `LocalPart::parse`.
        let (local, domain) = s.rsplit_once('@').ok_or(AddrError::NoDomain)?;
        Ok(Address {
            local: LocalPart::parse(local)?,
            domain: Domain::parse(domain)?,
        })
    }
    pub fn local(&self) -> &LocalPart {
        &self.local
    }
    pub fn domain(&self) -> &Domain {
        &self.domain
    }
    /// `local@ace-domain`, for peers that did not offer SMTPUTF8 (the local part is as is).
    pub fn to_ascii_domain(&self) -> String {
        format!("{}@{}", self.local, self.domain.ascii)
    }
}

impl FromStr for Domain {
    type Err = AddrError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Domain::parse(s)
    }
}
impl FromStr for LocalPart {
    type Err = AddrError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LocalPart::parse(s)
    }
}
impl FromStr for Address {
    type Err = AddrError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Address::parse(s)
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.unicode)
    }
}
impl fmt::Display for LocalPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn domain_valid() {
        let cases = [
            // input, as_str, to_ascii
            ("example.test", "example.test", "example.test"),
            ("EXAMPLE.test", "example.test", "example.test"),
            ("bücher.example", "bücher.example", "xn--bcher-kva.example"),
            ("BÜCHER.example", "bücher.example", "xn--bcher-kva.example"),
            (
                "xn--bcher-kva.example",
                "bücher.example",
                "xn--bcher-kva.example",
            ),
            (
                "XN--BCHER-KVA.EXAMPLE",
                "bücher.example",
                "xn--bcher-kva.example",
            ),
            ("localhost", "localhost", "localhost"),
            ("a-b.c-d.example", "a-b.c-d.example", "a-b.c-d.example"),
            (
                "r3---sn-abc.example",
                "r3---sn-abc.example",
                "r3---sn-abc.example",
            ),
            ("1.2.3.example", "1.2.3.example", "1.2.3.example"),
            ("例え.テスト", "例え.テスト", "xn--r8jz45g.xn--zckzah"),
        ];
        for (input, unicode, ascii) in cases {
            let d = Domain::parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(d.as_str(), unicode, "{input:?}");
            assert_eq!(d.to_ascii(), ascii, "{input:?}");
        }
    }

    #[test]
    fn domain_idna_equivalence() {
        let forms = ["bücher.example", "xn--bcher-kva.example", "Bücher.Example"];
        let first = Domain::parse(forms[0]).unwrap();
        for f in forms {
            assert_eq!(Domain::parse(f).unwrap(), first, "{f:?}");
        }
        assert_eq!(
            Domain::parse("EXAMPLE.test").unwrap(),
            Domain::parse("example.TEST").unwrap()
        );
    }

    #[test]
    fn domain_invalid() {
        let long_label = format!("{}.example", "a".repeat(64));
        let long_name = format!("{}.example", vec!["a".repeat(60); 5].join("."));
        let ok_label = format!("{}.example", "a".repeat(63));
        assert!(Domain::parse(&ok_label).is_ok());
        let ok_name = format!("{0}.{0}.{0}.{1}", "a".repeat(63), "b".repeat(61));
        assert_eq!(ok_name.len(), MAX_DOMAIN_OCTETS);
        assert!(Domain::parse(&ok_name).is_ok());
        assert!(Domain::parse(&format!("{ok_name}b")).is_err());
        let cases: Vec<&str> = vec![
            "",
            ".",
            "..",
            "example.test.",
            ".example.test",
            "a..b",
            "[127.0.0.1]",
            "[IPv6:::1]",
            "127.0.0.1",
            "a/b.example",
            "a\\b.example",
            "..\\..",
            "user@example.test",
            "exa mple.test",
            "example.test\n",
            "exa\0mple.test",
            "exa\tmple.test",
            "exa\u{7f}mple.test",
            "exa%mple.test",
            "exa!mple.test",
            "example.test:25",
            "under_score.example",
            "-leading.example",
            "trailing-.example",
            "xn--zz.example",
            "a\u{ff0f}b.example",
            "a\u{3002}\u{3002}b",
            &long_label,
            &long_name,
        ];
        for input in cases {
            match Domain::parse(input) {
                Err(AddrError::BadDomain(..)) => {}
                other => panic!("{input:?}: expected BadDomain, got {other:?}"),
            }
        }
    }

    #[test]
    fn local_part_valid() {
        let cases = [
            "alice",
            "Alice",
            "a.b",
            "a+tag",
            "a..b",
            "a.",
            "*",
            "!#$%&'*+-=?^_`{|}~",
            "josé",
            "用户",
            "x".repeat(64).leak(),
        ];
        for input in cases {
            let lp = LocalPart::parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(lp.as_str(), input, "case must be preserved");
        }
    }

    #[test]
    fn local_part_invalid() {
        let cases = [
            "",
            ".",
            "..",
            ".hidden",
            "a@b",
            "a/b",
            "../etc",
            "a\\b",
            "a\0b",
            "a\rb",
            "a\nb",
            "a\tb",
            "a b",
            "a\u{a0}b",
            "a\u{85}b",
            "a\"b",
            "a,b",
            "a(b)",
            "a<b>",
            "a:b",
            "a;b",
            "a[b]",
            "x".repeat(65).leak(),
            "ü".repeat(33).leak(),
        ];
        for input in cases {
            match LocalPart::parse(input) {
                Err(AddrError::BadLocalPart(..)) => {}
                other => panic!("{input:?}: expected BadLocalPart, got {other:?}"),
            }
        }
    }

    #[test]
    fn normalize_table() {
        let cases = [
            // input, drop, suffix, lowercase, normalized
            ("Alice", ".", "+", "alice", "alice"),
            ("A.Lice", ".", "+", "a.lice", "alice"),
            ("alice+tag", ".", "+", "alice+tag", "alice"),
            ("al.ice+t.ag", ".", "+", "al.ice+t.ag", "alice"),
            ("alice-tag+x", ".", "-+", "alice-tag+x", "alice"),
            ("+tag", ".", "+", "+tag", "+tag"),
            ("a...", ".", "+", "a...", "a"),
            ("-.-", ".-", "+", "-.-", "-.-"),
            ("a.b", "a", "+", "a.b", "a.b"),
            ("JOSÉ+x", "", "+", "josé+x", "josé"),
            ("a.b+c", "", "", "a.b+c", "a.b+c"),
        ];
        for (input, drop, suffix, lower, normalized) in cases {
            let lp = LocalPart::parse(input).unwrap();
            assert_eq!(lp.lowercase().as_str(), lower, "{input:?}");
            assert_eq!(lp.normalize(drop, suffix).as_str(), normalized, "{input:?}");
        }
    }

    #[test]
    fn address_parse() {
        let a = Address::parse("Bob.Smith@XN--BCHER-KVA.example").unwrap();
        assert_eq!(a.local().as_str(), "Bob.Smith");
        assert_eq!(a.domain().as_str(), "bücher.example");
        assert_eq!(a.to_string(), "Bob.Smith@bücher.example");
        assert_eq!(a.to_ascii_domain(), "Bob.Smith@xn--bcher-kva.example");
        assert_eq!(Address::parse(""), Err(AddrError::Empty));
        assert_eq!(Address::parse("bob"), Err(AddrError::NoDomain));
        let cases = [
            ("@example.test", "local"),
            ("bob@", "domain"),
            ("a@b@example.test", "local"),
            ("bob@exa mple.test", "domain"),
            ("../x@example.test", "local"),
        ];
        for (input, which) in cases {
            let got = Address::parse(input);
            let ok = matches!(
                (which, &got),
                ("local", Err(AddrError::BadLocalPart(..)))
                    | ("domain", Err(AddrError::BadDomain(..)))
            );
            assert!(ok, "{input:?}: {got:?}");
        }
    }

    fn assert_path_safe(s: &str) {
        assert!(!s.is_empty());
        assert!(s != "." && s != "..", "{s:?}");
        assert!(!s.starts_with('.'), "{s:?}");
        assert!(!s.contains(['/', '\\', '\0']), "{s:?}");
        assert!(!s.chars().any(char::is_control), "{s:?}");
    }

    proptest! {
        #[test]
        fn whatever_parses_is_path_safe(s in any::<String>()) {
            if let Ok(d) = Domain::parse(&s) {
                assert_path_safe(d.as_str());
                assert_path_safe(&d.to_ascii());
            }
            if let Ok(lp) = LocalPart::parse(&s) {
                assert_path_safe(lp.as_str());
                assert_path_safe(lp.lowercase().as_str());
                assert_path_safe(lp.normalize(".", "+").as_str());
                assert_path_safe(lp.normalize(".-_a", "+-").as_str());
            }
        }

        #[test]
        fn path_like_strings_are_safe(s in "[./\\\\a\0@+-]{0,12}") {
            if let Ok(lp) = LocalPart::parse(&s) {
                assert_path_safe(lp.as_str());
                assert_path_safe(lp.normalize(".a", "+").as_str());
            }
            if let Ok(d) = Domain::parse(&s) {
                assert_path_safe(d.as_str());
            }
        }

        #[test]
        fn plain_host_names_need_no_uts46(s in "[a-zA-Z0-9-]{1,12}(\\.[a-zA-Z0-9-]{1,12}){0,3}") {
            if let Some(plain) = plain_ldh(&s) {
                let full = Domain::from_uts46(&s).expect("UTS 46 accepts a plain host name");
                prop_assert_eq!(&full.ascii, &plain);
                prop_assert_eq!(&full.unicode, &plain);
            }
        }

        #[test]
        fn domain_round_trips_through_ace(s in "[a-zA-Zü0-9-]{1,20}\\.[a-z]{2,5}") {
            if let Ok(d) = Domain::parse(&s) {
                prop_assert_eq!(Domain::parse(&d.to_ascii()).unwrap(), d.clone());
                prop_assert_eq!(Domain::parse(d.as_str()).unwrap(), d);
            }
        }
    }
}
