//! SMTP command-line parser (RFC 5321 §4.1, RFC 6531 SMTPUTF8, RFC 1870 SIZE, RFC 4954 AUTH).
//! Pure: one line (without its CRLF) in, a `Command` or a `Reply`-ready error out.

use crate::addr::{Address, Domain, LocalPart};
use crate::proto::reply::Reply;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReversePath {
    /// `MAIL FROM:<>`
    Null,
    Addr(Address),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardPath {
    /// `RCPT TO:<Postmaster>` without a domain (RFC 5321 §4.5.1).
    Postmaster,
    Addr(Address),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    SevenBit,
    EightBitMime,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MailParams {
    pub size: Option<u64>,
    pub body: Option<Body>,
    pub smtputf8: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Helo(String),
    Ehlo(String),
    Mail {
        from: ReversePath,
        params: MailParams,
    },
    Rcpt {
        to: ForwardPath,
    },
    Data,
    Rset,
    Noop,
    Quit,
    Vrfy,
    Expn,
    Help,
    StartTls,
    /// `AUTH <mechanism> [initial-response]`, mechanism upper-cased.
    Auth {
        mechanism: String,
        initial: Option<String>,
    },
    /// `GET`, `POST`, `CONNECT` (cross-protocol attacks).
    Http,
}

/// Parses one command line (without CRLF).
///
/// The verb is matched on raw bytes first, so an unknown verb is "unrecognized" (500 5.5.1)
/// whatever follows it; the arguments of a known verb must be UTF-8 (501 5.5.4 otherwise).
pub fn parse(line: &[u8]) -> Result<Command, Reply> {
    // Trailing blanks are tolerated: some clients send `DATA ` or `QUIT\t`.
    let line = line.trim_ascii_end();
    if line.is_empty() {
        return Err(Reply::new(500, "5.5.2", "empty command"));
    }
    let (verb, args) = match line.iter().position(|&b| b == b' ') {
        Some(i) => (&line[..i], Some(&line[i + 1..])),
        None => (line, None),
    };
    let verb = Verb::from_bytes(verb).ok_or_else(unrecognized)?;
    if verb == Verb::Http {
        return Ok(Command::Http);
    }
    let args = match args {
        Some(a) => Some(std::str::from_utf8(a).map_err(|_| syntax("invalid UTF-8"))?),
        None => None,
    };
    verb.parse_args(args)
}

/// The verbs we know; anything else (BDAT included: CHUNKING is not offered) is unrecognized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    Helo,
    Ehlo,
    Mail,
    Rcpt,
    Data,
    Rset,
    Noop,
    Quit,
    Vrfy,
    Expn,
    Help,
    StartTls,
    Auth,
    Http,
}

const VERBS: &[(&[u8], Verb)] = &[
    (b"HELO", Verb::Helo),
    (b"EHLO", Verb::Ehlo),
    (b"MAIL", Verb::Mail),
    (b"RCPT", Verb::Rcpt),
    (b"DATA", Verb::Data),
    (b"RSET", Verb::Rset),
    (b"NOOP", Verb::Noop),
    (b"QUIT", Verb::Quit),
    (b"VRFY", Verb::Vrfy),
    (b"EXPN", Verb::Expn),
    (b"HELP", Verb::Help),
    (b"STARTTLS", Verb::StartTls),
    (b"AUTH", Verb::Auth),
    (b"GET", Verb::Http),
    (b"POST", Verb::Http),
    (b"CONNECT", Verb::Http),
];

impl Verb {
    /// RFC 5321 §2.4: verbs are case-insensitive.
    fn from_bytes(verb: &[u8]) -> Option<Verb> {
        VERBS
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(verb))
            .map(|&(_, v)| v)
    }

    fn parse_args(self, args: Option<&str>) -> Result<Command, Reply> {
        match self {
            Verb::Helo => hello_arg(args, "syntax: HELO hostname").map(Command::Helo),
            Verb::Ehlo => hello_arg(args, "syntax: EHLO hostname").map(Command::Ehlo),
            Verb::Mail => parse_mail(args.unwrap_or("")),
            Verb::Rcpt => parse_rcpt(args.unwrap_or("")),
            Verb::Data => no_args(args, Command::Data, "syntax: DATA"),
            Verb::Rset => no_args(args, Command::Rset, "syntax: RSET"),
            Verb::Quit => no_args(args, Command::Quit, "syntax: QUIT"),
            Verb::StartTls => no_args(args, Command::StartTls, "syntax: STARTTLS"),
            Verb::Noop => Ok(Command::Noop),
            Verb::Help => Ok(Command::Help),
            Verb::Vrfy => some_arg(args, "syntax: VRFY address").map(|_| Command::Vrfy),
            Verb::Expn => some_arg(args, "syntax: EXPN list").map(|_| Command::Expn),
            Verb::Auth => parse_auth(args),
            Verb::Http => Ok(Command::Http),
        }
    }
}

fn syntax(text: &'static str) -> Reply {
    Reply::new(501, "5.5.4", text)
}

fn unrecognized() -> Reply {
    Reply::new(500, "5.5.1", "unrecognized command")
}

fn bad_sender() -> Reply {
    Reply::new(501, "5.1.7", "bad sender address syntax")
}

fn bad_recipient() -> Reply {
    Reply::new(501, "5.1.3", "bad recipient address syntax")
}

fn unsupported_param() -> Reply {
    Reply::new(555, "5.5.4", "unsupported parameter")
}

fn no_args(args: Option<&str>, cmd: Command, usage: &'static str) -> Result<Command, Reply> {
    match args.map(str::trim) {
        None | Some("") => Ok(cmd),
        Some(_) => Err(syntax(usage)),
    }
}

/// The argument words, or a syntax error when there are none.
fn some_arg<'a>(args: Option<&'a str>, usage: &'static str) -> Result<&'a str, Reply> {
    match args.map(str::trim) {
        Some(a) if !a.is_empty() => Ok(a),
        _ => Err(syntax(usage)),
    }
}

/// RFC 5321 §4.1.1.1: `HELO domain` / `EHLO domain-or-address-literal`, kept as given. Only the
/// first word counts (like Postfix); control characters are refused because the name ends up
/// in the Received header and the logs.
fn hello_arg(args: Option<&str>, usage: &'static str) -> Result<String, Reply> {
    let arg = some_arg(args, usage)?;
    let name = arg.split(' ').next().unwrap_or(arg);
    if name.chars().any(char::is_control) {
        return Err(syntax(usage));
    }
    Ok(name.to_string())
}

/// RFC 4954 §4: `AUTH mechanism [initial-response]`.
fn parse_auth(args: Option<&str>) -> Result<Command, Reply> {
    const USAGE: &str = "syntax: AUTH mechanism [initial-response]";
    let arg = some_arg(args, USAGE)?;
    let mut words = arg.split(' ').filter(|w| !w.is_empty());
    let mechanism = words.next().ok_or_else(|| syntax(USAGE))?;
    let initial = words.next();
    if words.next().is_some() {
        return Err(syntax(USAGE));
    }
    // RFC 4422 §3.1: mechanism names are upper-case letters, digits, `-` and `_`.
    let mech_ok = mechanism
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    let initial_ok = initial.is_none_or(|i| i.bytes().all(|b| b.is_ascii_graphic()));
    if !mech_ok || !initial_ok {
        return Err(syntax(USAGE));
    }
    Ok(Command::Auth {
        mechanism: mechanism.to_ascii_uppercase(),
        initial: initial.map(str::to_string),
    })
}

/// RFC 5321 §4.1.1.2: `MAIL FROM:<reverse-path> [SP mail-parameters]`.
fn parse_mail(args: &str) -> Result<Command, Reply> {
    let (path, params) = split_path(args, "FROM:", "syntax: MAIL FROM:<address>")?;
    let from = if path.is_empty() {
        ReversePath::Null
    } else {
        ReversePath::Addr(parse_mailbox(path).ok_or_else(bad_sender)?)
    };
    let params = parse_mail_params(params)?;
    Ok(Command::Mail { from, params })
}

/// RFC 5321 §4.1.1.3: `RCPT TO:<forward-path> [SP rcpt-parameters]`. We offer no extension
/// with RCPT parameters (no DSN yet), so any parameter is refused.
fn parse_rcpt(args: &str) -> Result<Command, Reply> {
    let (path, params) = split_path(args, "TO:", "syntax: RCPT TO:<address>")?;
    if params.split(' ').any(|p| !p.is_empty()) {
        return Err(unsupported_param());
    }
    // RFC 5321 §4.5.1: `<Postmaster>` without a domain, any case.
    if path.eq_ignore_ascii_case("postmaster") {
        return Ok(Command::Rcpt {
            to: ForwardPath::Postmaster,
        });
    }
    let addr = parse_mailbox(path).ok_or_else(bad_recipient)?;
    Ok(Command::Rcpt {
        to: ForwardPath::Addr(addr),
    })
}

/// Splits `FROM:<path> params` into the text between the angle brackets and the parameters.
/// One space after the colon is tolerated (Postfix does the same; many clients send it).
fn split_path<'a>(
    args: &'a str,
    keyword: &str,
    usage: &'static str,
) -> Result<(&'a str, &'a str), Reply> {
    let head = args.get(..keyword.len()).ok_or_else(|| syntax(usage))?;
    if !head.eq_ignore_ascii_case(keyword) {
        return Err(syntax(usage));
    }
    let rest = &args[keyword.len()..];
    let rest = rest.strip_prefix(' ').unwrap_or(rest);
    let inner = rest.strip_prefix('<').ok_or_else(|| syntax(usage))?;
    let close = closing_bracket(inner).ok_or_else(|| syntax(usage))?;
    let after = &inner[close + 1..];
    // The parameters, if any, are separated from the path by a space.
    if !after.is_empty() && !after.starts_with(' ') {
        return Err(syntax(usage));
    }
    Ok((&inner[..close], after))
}

/// Index of the `>` closing the path, skipping quoted strings (a quoted local part may hold
/// `>`) and their backslash escapes.
fn closing_bracket(s: &str) -> Option<usize> {
    let mut in_quote = false;
    let mut escaped = false;
    for (i, b) in s.bytes().enumerate() {
        match (in_quote, escaped, b) {
            (true, true, _) => escaped = false,
            (true, false, b'\\') => escaped = true,
            (_, false, b'"') => in_quote = !in_quote,
            (false, _, b'>') => return Some(i),
            _ => {}
        }
    }
    None
}

/// `[source-route ":"] local-part "@" domain` → `Address`, or None when it does not parse.
fn parse_mailbox(path: &str) -> Option<Address> {
    // RFC 5321 §4.1.1.3: a source route (`@a,@b:`) is accepted and ignored.
    let mailbox = if path.starts_with('@') {
        &path[path.find(':')? + 1..]
    } else {
        path
    };
    let (local, domain) = split_local(mailbox)?;
    let local = LocalPart::parse(&local).ok()?;
    let domain = Domain::parse(domain).ok()?;
    Some(Address::new(local, domain))
}

/// Splits `local@domain`; a quoted local part (RFC 5321 §4.1.2 Quoted-string) is unquoted.
fn split_local(mailbox: &str) -> Option<(String, &str)> {
    match mailbox.strip_prefix('"') {
        Some(quoted) => {
            let (local, rest) = unquote(quoted)?;
            Some((local, rest.strip_prefix('@')?))
        }
        None => {
            let (local, domain) = mailbox.split_once('@')?;
            Some((local.to_string(), domain))
        }
    }
}

/// Reads a quoted string after its opening quote: returns its unescaped content and what
/// follows the closing quote. `\x` stands for `x` (RFC 5321 §4.1.2 quoted-pairSMTP).
fn unquote(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, &s[i + 1..])),
            '\\' => out.push(chars.next()?.1),
            _ => out.push(c),
        }
    }
    None
}

/// RFC 1870 SIZE, RFC 6152 BODY, RFC 6531 SMTPUTF8, RFC 4954 §5 AUTH (keywords any case).
fn parse_mail_params(params: &str) -> Result<MailParams, Reply> {
    let mut out = MailParams::default();
    for param in params.split(' ').filter(|p| !p.is_empty()) {
        let (key, value) = match param.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (param, None),
        };
        apply_mail_param(&mut out, &key.to_ascii_uppercase(), value)?;
    }
    Ok(out)
}

fn apply_mail_param(out: &mut MailParams, key: &str, value: Option<&str>) -> Result<(), Reply> {
    match (key, value) {
        ("SIZE", Some(v)) if out.size.is_none() => out.size = Some(parse_size(v)?),
        ("SIZE", _) => return Err(syntax("bad SIZE value")),
        ("BODY", Some(v)) if out.body.is_none() => out.body = Some(parse_body(v)?),
        ("BODY", _) => return Err(syntax("bad BODY value")),
        ("SMTPUTF8", None) if !out.smtputf8 => out.smtputf8 = true,
        ("SMTPUTF8", _) => return Err(syntax("bad SMTPUTF8 parameter")),
        // RFC 4954 §5: a server offering AUTH must accept the parameter; it may ignore it,
        // which we do (the submitter's identity comes from our own AUTH).
        ("AUTH", Some(v)) if !v.is_empty() => {}
        ("AUTH", _) => return Err(syntax("bad AUTH parameter")),
        _ => return Err(unsupported_param()),
    }
    Ok(())
}

/// RFC 1870 §3: `size-value ::= 1*20DIGIT`.
fn parse_size(v: &str) -> Result<u64, Reply> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(syntax("bad SIZE value"));
    }
    v.parse().map_err(|_| syntax("bad SIZE value"))
}

fn parse_body(v: &str) -> Result<Body, Reply> {
    if v.eq_ignore_ascii_case("7BIT") {
        Ok(Body::SevenBit)
    } else if v.eq_ignore_ascii_case("8BITMIME") {
        Ok(Body::EightBitMime)
    } else {
        Err(syntax("bad BODY value"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The address the addr module builds from these parts, as the parser must return it.
    fn addr(local: &str, domain: &str) -> Option<Address> {
        Some(Address::new(
            LocalPart::parse(local).ok()?,
            Domain::parse(domain).ok()?,
        ))
    }

    fn mail(local: &str, domain: &str, params: MailParams) -> Result<Command, Reply> {
        match addr(local, domain) {
            Some(a) => Ok(Command::Mail {
                from: ReversePath::Addr(a),
                params,
            }),
            None => Err(bad_sender()),
        }
    }

    fn rcpt(local: &str, domain: &str) -> Result<Command, Reply> {
        match addr(local, domain) {
            Some(a) => Ok(Command::Rcpt {
                to: ForwardPath::Addr(a),
            }),
            None => Err(bad_recipient()),
        }
    }

    /// The error's code pair, None for a parsed command.
    fn code_of(r: &Result<Command, Reply>) -> Option<(u16, &'static str)> {
        r.as_ref().err().map(|e| (e.code, e.enhanced))
    }

    fn params(size: Option<u64>, body: Option<Body>, smtputf8: bool) -> MailParams {
        MailParams {
            size,
            body,
            smtputf8,
        }
    }

    #[test]
    fn simple_commands() {
        let auth = |m: &str, i: Option<&str>| Command::Auth {
            mechanism: m.to_string(),
            initial: i.map(str::to_string),
        };
        let cases: &[(&[u8], Command)] = &[
            (
                b"HELO mx.example.org",
                Command::Helo("mx.example.org".into()),
            ),
            (
                b"helo Mx.Example.ORG",
                Command::Helo("Mx.Example.ORG".into()),
            ),
            (b"EHLO [192.0.2.1]", Command::Ehlo("[192.0.2.1]".into())),
            (
                b"EHLO [IPv6:2001:db8::1]",
                Command::Ehlo("[IPv6:2001:db8::1]".into()),
            ),
            (b"eHlO client extra words", Command::Ehlo("client".into())),
            (b"EHLO client  ", Command::Ehlo("client".into())),
            (b"DATA", Command::Data),
            (b"data", Command::Data),
            (b"DATA ", Command::Data),
            (b"RSET", Command::Rset),
            (b"NOOP", Command::Noop),
            (b"noop anything at all", Command::Noop),
            (b"QUIT", Command::Quit),
            (b"Quit", Command::Quit),
            (b"VRFY postmaster", Command::Vrfy),
            (b"EXPN list", Command::Expn),
            (b"HELP", Command::Help),
            (b"HELP MAIL", Command::Help),
            (b"STARTTLS", Command::StartTls),
            (b"starttls", Command::StartTls),
            (b"AUTH PLAIN", auth("PLAIN", None)),
            (
                b"auth plain AGZvbwBiYXI=",
                auth("PLAIN", Some("AGZvbwBiYXI=")),
            ),
            (b"AUTH login", auth("LOGIN", None)),
            (b"AUTH PLAIN =", auth("PLAIN", Some("="))),
            (b"GET / HTTP/1.1", Command::Http),
            (b"get /", Command::Http),
            (b"POST /x HTTP/1.0", Command::Http),
            (b"CONNECT host:443 HTTP/1.1", Command::Http),
            (b"GET /\xff\xfe", Command::Http),
        ];
        for (line, want) in cases {
            let got = parse(line);
            assert_eq!(
                got.as_ref(),
                Ok(want),
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn command_errors() {
        let cases: &[(&[u8], u16, &str)] = &[
            (b"", 500, "5.5.2"),
            (b"   ", 500, "5.5.2"),
            (b"BDAT 10 LAST", 500, "5.5.1"),
            (b"bdat 0", 500, "5.5.1"),
            (b"XYZZY", 500, "5.5.1"),
            (b" DATA", 500, "5.5.1"),
            (b"DATAX", 500, "5.5.1"),
            (b"MAILFROM:<a@b>", 500, "5.5.1"),
            (b"\xff\xfe", 500, "5.5.1"),
            (b"HELO", 501, "5.5.4"),
            (b"EHLO", 501, "5.5.4"),
            (b"EHLO ", 501, "5.5.4"),
            (b"EHLO a\x00b", 501, "5.5.4"),
            (b"DATA x", 501, "5.5.4"),
            (b"RSET now", 501, "5.5.4"),
            (b"QUIT please", 501, "5.5.4"),
            (b"STARTTLS x", 501, "5.5.4"),
            (b"VRFY", 501, "5.5.4"),
            (b"EXPN", 501, "5.5.4"),
            (b"AUTH", 501, "5.5.4"),
            (b"AUTH ", 501, "5.5.4"),
            (b"AUTH PLAIN a b", 501, "5.5.4"),
            (b"AUTH PL/AIN", 501, "5.5.4"),
            (b"NOOP \xff", 501, "5.5.4"),
            (b"EHLO \xc3\x28", 501, "5.5.4"),
        ];
        for &(line, code, enhanced) in cases {
            let got = parse(line);
            assert_eq!(
                code_of(&got),
                Some((code, enhanced)),
                "{:?} -> {got:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn mail_from() {
        let none = MailParams::default;
        let null = |p: MailParams| {
            Ok(Command::Mail {
                from: ReversePath::Null,
                params: p,
            })
        };
        let cases: Vec<(&str, Result<Command, Reply>)> = vec![
            (
                "MAIL FROM:<a@example.org>",
                mail("a", "example.org", none()),
            ),
            (
                "mail from:<a@example.org>",
                mail("a", "example.org", none()),
            ),
            (
                "MaIl FrOm:<A@Example.ORG>",
                mail("A", "Example.ORG", none()),
            ),
            (
                "MAIL FROM: <a@example.org>",
                mail("a", "example.org", none()),
            ),
            (
                "MAIL FROM:<a@example.org> ",
                mail("a", "example.org", none()),
            ),
            ("MAIL FROM:<>", null(none())),
            ("MAIL FROM: <>", null(none())),
            (
                "MAIL FROM:<> SIZE=100",
                null(params(Some(100), None, false)),
            ),
            (
                "MAIL FROM:<a@x.org> size=0 body=8bitmime smtputf8",
                mail(
                    "a",
                    "x.org",
                    params(Some(0), Some(Body::EightBitMime), true),
                ),
            ),
            (
                "MAIL FROM:<a@x.org> BODY=7BIT",
                mail("a", "x.org", params(None, Some(Body::SevenBit), false)),
            ),
            (
                "MAIL FROM:<a@x.org>  SIZE=18446744073709551615",
                mail("a", "x.org", params(Some(u64::MAX), None, false)),
            ),
            ("MAIL FROM:<a@x.org> AUTH=<>", mail("a", "x.org", none())),
            (
                "MAIL FROM:<a@x.org> AUTH=a+40x.org",
                mail("a", "x.org", none()),
            ),
            ("MAIL FROM:<\"a b\"@x.org>", mail("a b", "x.org", none())),
            (
                "MAIL FROM:<\"a\\\"b\"@x.org>",
                mail("a\"b", "x.org", none()),
            ),
            (
                "MAIL FROM:<\"a\\\\b\"@x.org>",
                mail("a\\b", "x.org", none()),
            ),
            ("MAIL FROM:<\"a>b\"@x.org>", mail("a>b", "x.org", none())),
            (
                "MAIL FROM:<@relay.example:a@x.org>",
                mail("a", "x.org", none()),
            ),
            (
                "MAIL FROM:<@r1.example,@r2.example:a@x.org>",
                mail("a", "x.org", none()),
            ),
            (
                "MAIL FROM:<δοκιμή@παράδειγμα.δοκιμή> SMTPUTF8",
                mail("δοκιμή", "παράδειγμα.δοκιμή", params(None, None, true)),
            ),
            // Not our business here: the session decides whether SMTPUTF8 was required.
            (
                "MAIL FROM:<δοκιμή@παράδειγμα.δοκιμή>",
                mail("δοκιμή", "παράδειγμα.δοκιμή", none()),
            ),
        ];
        for (line, want) in cases {
            assert_eq!(parse(line.as_bytes()), want, "{line}");
        }
    }

    #[test]
    fn mail_from_errors() {
        let cases: &[(&[u8], u16, &str)] = &[
            (b"MAIL", 501, "5.5.4"),
            (b"MAIL FROM", 501, "5.5.4"),
            (b"MAIL TO:<a@x.org>", 501, "5.5.4"),
            (b"MAIL FROM:a@x.org", 501, "5.5.4"),
            (b"MAIL FROM: a@x.org", 501, "5.5.4"),
            (b"MAIL FROM:  <a@x.org>", 501, "5.5.4"),
            (b"MAIL FROM:<a@x.org", 501, "5.5.4"),
            (b"MAIL FROM:<\"a>@x.org", 501, "5.5.4"),
            (b"MAIL FROM:<a@x.org>SIZE=1", 501, "5.5.4"),
            (b"MAIL FROM:<a@x.org> SIZE=", 501, "5.5.4"),
            (b"MAIL FROM:<a@x.org> SIZE", 501, "5.5.4"),
            (b"MAIL FROM:<a@x.org> SIZE=-1", 501, "5.5.4"),
            (b"MAIL FROM:<a@x.org> SIZE=1k", 501, "5.5.4"),
            (
                b"MAIL FROM:<a@x.org> SIZE=18446744073709551616",
                501,
                "5.5.4",
            ),
            (b"MAIL FROM:<a@x.org> SIZE=1 SIZE=2", 501, "5.5.4"),
            (b"MAIL FROM:<a@x.org> BODY=BINARYMIME", 501, "5.5.4"),
            (b"MAIL FROM:<a@x.org> SMTPUTF8=yes", 501, "5.5.4"),
            (b"MAIL FROM:<a@x.org> AUTH=", 501, "5.5.4"),
            (b"MAIL FROM:<a@x.org> RET=FULL", 555, "5.5.4"),
            (b"MAIL FROM:<a@x.org> ENVID=x", 555, "5.5.4"),
            (b"MAIL FROM:<a@x.org> XFOO", 555, "5.5.4"),
            (b"MAIL FROM:<a@x.org> \xff", 501, "5.5.4"),
            (b"MAIL FROM:<\xff@x.org>", 501, "5.5.4"),
            (b"MAIL FROM:<a>", 501, "5.1.7"),
            (b"MAIL FROM:<postmaster>", 501, "5.1.7"),
            (b"MAIL FROM:<@x.org>", 501, "5.1.7"),
            (b"MAIL FROM:<@relay.example>", 501, "5.1.7"),
            (b"MAIL FROM:<\"a\"x@x.org>", 501, "5.1.7"),
            (b"MAIL FROM:<\"unterminated@x.org>", 501, "5.5.4"),
            (b"MAIL FROM:<a@[127.0.0.1]>", 501, "5.1.7"),
        ];
        for &(line, code, enhanced) in cases {
            let got = parse(line);
            assert_eq!(
                code_of(&got),
                Some((code, enhanced)),
                "{:?} -> {got:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn rcpt_to() {
        let postmaster = || {
            Ok(Command::Rcpt {
                to: ForwardPath::Postmaster,
            })
        };
        let cases: Vec<(&str, Result<Command, Reply>)> = vec![
            ("RCPT TO:<b@example.org>", rcpt("b", "example.org")),
            ("rcpt to:<b@example.org>", rcpt("b", "example.org")),
            ("RCPT TO: <b@example.org>", rcpt("b", "example.org")),
            ("RCPT TO:<b@example.org>  ", rcpt("b", "example.org")),
            ("RCPT TO:<postmaster>", postmaster()),
            ("RCPT TO:<PostMaster>", postmaster()),
            (
                "RCPT TO:<Postmaster@example.org>",
                rcpt("Postmaster", "example.org"),
            ),
            ("RCPT TO:<\"a b\"@x.org>", rcpt("a b", "x.org")),
            ("RCPT TO:<@hop.example:b@x.org>", rcpt("b", "x.org")),
            (
                "RCPT TO:<@h1.example,@h2.example:b@x.org>",
                rcpt("b", "x.org"),
            ),
            // Relay tricks: the parser never splits on `%` or `!`; the addr module decides.
            ("RCPT TO:<user%other@x.org>", rcpt("user%other", "x.org")),
            ("RCPT TO:<a!b@x.org>", rcpt("a!b", "x.org")),
            ("RCPT TO:<user@x.org.>", rcpt("user", "x.org.")),
            (
                "RCPT TO:<δοκιμή@παράδειγμα.δοκιμή>",
                rcpt("δοκιμή", "παράδειγμα.δοκιμή"),
            ),
        ];
        for (line, want) in cases {
            assert_eq!(parse(line.as_bytes()), want, "{line}");
        }
    }

    #[test]
    fn rcpt_to_errors() {
        let cases: &[(&[u8], u16, &str)] = &[
            (b"RCPT", 501, "5.5.4"),
            (b"RCPT TO", 501, "5.5.4"),
            (b"RCPT FROM:<b@x.org>", 501, "5.5.4"),
            (b"RCPT TO:b@x.org", 501, "5.5.4"),
            (b"RCPT TO:<b@x.org", 501, "5.5.4"),
            (b"RCPT TO:<b@x.org>x", 501, "5.5.4"),
            (b"RCPT TO:<b@x.org> NOTIFY=NEVER", 555, "5.5.4"),
            (b"RCPT TO:<b@x.org> ORCPT=rfc822;b@x.org", 555, "5.5.4"),
            (b"RCPT TO:<>", 501, "5.1.3"),
            (b"RCPT TO:<b>", 501, "5.1.3"),
            (b"RCPT TO:<user@[127.0.0.1]>", 501, "5.1.3"),
            (b"RCPT TO:<user@[IPv6:::1]>", 501, "5.1.3"),
            (b"RCPT TO:<@hop.example>", 501, "5.1.3"),
            (b"RCPT TO:<b@>", 501, "5.1.3"),
            (b"RCPT TO:<b@x.org\xff>", 501, "5.5.4"),
        ];
        for &(line, code, enhanced) in cases {
            let got = parse(line);
            assert_eq!(
                code_of(&got),
                Some((code, enhanced)),
                "{:?} -> {got:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    /// The decomposition itself, for addresses any sane addr module accepts (the tables above
    /// compare with whatever it decides, so they alone would pass if it refused everything).
    #[test]
    fn mailbox_parts() {
        let cases: &[(&str, &str, &str)] = &[
            ("MAIL FROM:<a@example.org>", "a", "example.org"),
            ("mail from: <A@Example.ORG>", "A", "example.org"),
            ("MAIL FROM:<\"john\"@x.org>", "john", "x.org"),
            ("MAIL FROM:<\"jo\\hn\"@x.org>", "john", "x.org"),
            ("MAIL FROM:<\"a.b\"@x.org>", "a.b", "x.org"),
            ("MAIL FROM:<@r1.example,@r2.example:a@x.org>", "a", "x.org"),
            ("RCPT TO:<@hop.example:b@x.org>", "b", "x.org"),
            (
                "RCPT TO:<δοκιμή@παράδειγμα.δοκιμή>",
                "δοκιμή",
                "παράδειγμα.δοκιμή",
            ),
        ];
        for &(line, local, domain) in cases {
            let addr = match parse(line.as_bytes()) {
                Ok(Command::Mail {
                    from: ReversePath::Addr(a),
                    ..
                }) => a,
                Ok(Command::Rcpt {
                    to: ForwardPath::Addr(a),
                }) => a,
                other => panic!("{line}: {other:?}"),
            };
            assert_eq!(addr.local().as_str(), local, "{line}");
            assert_eq!(addr.domain().as_str(), domain, "{line}");
        }
    }

    #[test]
    fn unquote_handles_escapes() {
        let cases: &[(&str, Option<(&str, &str)>)] = &[
            ("a b\"@x", Some(("a b", "@x"))),
            ("a\\\"b\"@x", Some(("a\"b", "@x"))),
            ("a\\\\\"@x", Some(("a\\", "@x"))),
            ("\"", Some(("", ""))),
            ("abc", None),
            ("abc\\", None),
            ("abc\\\"", None),
        ];
        for &(input, want) in cases {
            let got = unquote(input);
            let got = got.as_ref().map(|(s, r)| (s.as_str(), *r));
            assert_eq!(got, want, "{input:?}");
        }
    }

    proptest! {
        #[test]
        fn never_panics(line in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse(&line);
        }

        #[test]
        fn never_panics_on_mail_like_lines(
            verb in prop::sample::select(vec!["MAIL FROM:", "RCPT TO:", "mail from: ", "AUTH "]),
            rest in "[<>\"\\\\@:,. a-zA-Z=δ\\[\\]]{0,40}",
        ) {
            let line = format!("{verb}{rest}");
            let _ = parse(line.as_bytes());
        }
    }
}
