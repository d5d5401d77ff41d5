//! POP3 commands from one line (RFC 1939 §3, RFC 2449, RFC 2595, RFC 5034), sans-I/O.
//!
//! A keyword of three or four letters (any case), then arguments separated by single
//! spaces. Message numbers are decimal, from 1. PASS takes the rest of the line as it is
//! (RFC 1939 §7: a password may hold spaces).

/// A parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Capa,
    Stls,
    User(String),
    Pass(String),
    /// AUTH with a mechanism and maybe an initial response (RFC 5034 §4); AUTH alone lists
    /// the mechanisms (as many servers and clients do, before CAPA existed).
    Auth {
        mechanism: Option<String>,
        initial: Option<String>,
    },
    Stat,
    List(Option<u32>),
    Retr(u32),
    Dele(u32),
    Top(u32, u64),
    Uidl(Option<u32>),
    Rset,
    Noop,
    Quit,
}

/// Why a line is no command; the words go into the `-ERR` line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("Unknown command")]
    Unknown,
    #[error("Invalid arguments")]
    Arguments,
    #[error("Invalid message number")]
    Number,
}

/// RFC 1939 §3 allows arguments of 40 characters, but a full address as USER may be longer
/// (Dovecot takes them too): RFC 2449 §4's line of 255 octets bounds them instead.
const MAX_ARGUMENT: usize = 255;

/// Parses one line, without its CRLF (or LF).
pub fn parse(line: &[u8]) -> Result<Command, ParseError> {
    let line = std::str::from_utf8(line).map_err(|_| ParseError::Unknown)?;
    let (keyword, rest) = match line.split_once(' ') {
        Some((k, r)) => (k, Some(r)),
        None => (line, None),
    };
    if keyword.len() > 4 {
        return Err(ParseError::Unknown);
    }
    match keyword.to_ascii_uppercase().as_str() {
        "PASS" => Ok(Command::Pass(
            rest.ok_or(ParseError::Arguments)?.to_string(),
        )),
        "AUTH" => auth(rest),
        k => simple(k, args(rest)?),
    }
}

/// The commands whose arguments are short words.
fn simple(keyword: &str, args: Vec<&str>) -> Result<Command, ParseError> {
    let none = |c: Command| {
        if args.is_empty() {
            Ok(c)
        } else {
            Err(ParseError::Arguments)
        }
    };
    match (keyword, args.as_slice()) {
        ("CAPA", _) => none(Command::Capa),
        ("STLS", _) => none(Command::Stls),
        ("STAT", _) => none(Command::Stat),
        ("RSET", _) => none(Command::Rset),
        ("NOOP", _) => none(Command::Noop),
        ("QUIT", _) => none(Command::Quit),
        ("USER", [name]) => Ok(Command::User(name.to_string())),
        ("LIST", []) => Ok(Command::List(None)),
        ("LIST", [n]) => Ok(Command::List(Some(number(n)?))),
        ("UIDL", []) => Ok(Command::Uidl(None)),
        ("UIDL", [n]) => Ok(Command::Uidl(Some(number(n)?))),
        ("RETR", [n]) => Ok(Command::Retr(number(n)?)),
        ("DELE", [n]) => Ok(Command::Dele(number(n)?)),
        ("TOP", [n, lines]) => Ok(Command::Top(number(n)?, count(lines)?)),
        ("USER" | "LIST" | "UIDL" | "RETR" | "DELE" | "TOP", _) => Err(ParseError::Arguments),
        _ => Err(ParseError::Unknown),
    }
}

/// `AUTH [mechanism [initial-response]]` (RFC 5034 §4).
fn auth(rest: Option<&str>) -> Result<Command, ParseError> {
    let Some(rest) = rest else {
        return Ok(Command::Auth {
            mechanism: None,
            initial: None,
        });
    };
    let mut parts = rest.split(' ');
    let mechanism = parts.next().filter(|m| valid_argument(m));
    let initial = parts.next().map(str::to_string);
    match (mechanism, parts.next()) {
        (Some(m), None) if initial.as_deref() != Some("") => Ok(Command::Auth {
            mechanism: Some(m.to_ascii_uppercase()),
            initial,
        }),
        _ => Err(ParseError::Arguments),
    }
}

/// Arguments separated by single spaces, each of printable characters.
fn args(rest: Option<&str>) -> Result<Vec<&str>, ParseError> {
    let Some(rest) = rest else {
        return Ok(Vec::new());
    };
    let args: Vec<&str> = rest.split(' ').collect();
    if args.iter().all(|a| valid_argument(a)) {
        Ok(args)
    } else {
        Err(ParseError::Arguments)
    }
}

fn valid_argument(arg: &str) -> bool {
    !arg.is_empty() && arg.len() <= MAX_ARGUMENT && arg.bytes().all(|b| b.is_ascii_graphic())
}

/// A message number: decimal digits only, from 1.
fn number(arg: &str) -> Result<u32, ParseError> {
    if !arg.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::Number);
    }
    match arg.parse::<u32>() {
        Ok(n) if n > 0 => Ok(n),
        // Too large for any maildrop: no such message, rather than a syntax error.
        Err(_) if arg.trim_start_matches('0').len() > 9 => Ok(u32::MAX),
        _ => Err(ParseError::Number),
    }
}

/// TOP's line count: any non-negative number; past u64 it is "all of them" anyway.
fn count(arg: &str) -> Result<u64, ParseError> {
    if !arg.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::Arguments);
    }
    Ok(arg.parse::<u64>().unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use Command::*;

    #[test]
    fn commands() {
        let auth = |m: Option<&str>, i: Option<&str>| Auth {
            mechanism: m.map(str::to_string),
            initial: i.map(str::to_string),
        };
        let cases: &[(&str, Result<Command, ParseError>)] = &[
            ("CAPA", Ok(Capa)),
            ("capa", Ok(Capa)),
            ("STLS", Ok(Stls)),
            (
                "USER alice@example.test",
                Ok(User("alice@example.test".into())),
            ),
            (
                "PASS secret with spaces ",
                Ok(Pass("secret with spaces ".into())),
            ),
            ("PASS ", Ok(Pass(String::new()))),
            ("AUTH", Ok(auth(None, None))),
            ("AUTH plain", Ok(auth(Some("PLAIN"), None))),
            (
                "AUTH PLAIN AGFsaWNlAHB3",
                Ok(auth(Some("PLAIN"), Some("AGFsaWNlAHB3"))),
            ),
            ("AUTH PLAIN =", Ok(auth(Some("PLAIN"), Some("=")))),
            ("STAT", Ok(Stat)),
            ("LIST", Ok(List(None))),
            ("LIST 2", Ok(List(Some(2)))),
            ("UIDL", Ok(Uidl(None))),
            ("uidl 10", Ok(Uidl(Some(10)))),
            ("RETR 1", Ok(Retr(1))),
            ("DELE 3", Ok(Dele(3))),
            ("TOP 1 0", Ok(Top(1, 0))),
            ("TOP 1 99999999", Ok(Top(1, 99_999_999))),
            ("TOP 1 999999999999999999999999", Ok(Top(1, u64::MAX))),
            ("RETR 99999999999", Ok(Retr(u32::MAX))),
            ("RSET", Ok(Rset)),
            ("NOOP", Ok(Noop)),
            ("QUIT", Ok(Quit)),
        ];
        for (line, want) in cases {
            assert_eq!(parse(line.as_bytes()), *want, "{line:?}");
        }
    }

    #[test]
    fn bad_lines() {
        let cases: &[(&[u8], ParseError)] = &[
            (b"", ParseError::Unknown),
            (b"HELO", ParseError::Unknown),
            (b"APOP alice 0123", ParseError::Unknown),
            (b"CAPABILITY", ParseError::Unknown),
            (b"\xff\xfe", ParseError::Unknown),
            (b"STAT 1", ParseError::Arguments),
            (b"QUIT now", ParseError::Arguments),
            (b"USER", ParseError::Arguments),
            (b"USER a b", ParseError::Arguments),
            (b"PASS", ParseError::Arguments),
            (b"LIST  1", ParseError::Arguments),
            (b"LIST 1 2", ParseError::Arguments),
            (b"RETR", ParseError::Arguments),
            (b"RETR 0", ParseError::Number),
            (b"RETR -1", ParseError::Number),
            (b"RETR 1x", ParseError::Number),
            (b"RETR +1", ParseError::Number),
            (b"DELE 0", ParseError::Number),
            (b"TOP 1", ParseError::Arguments),
            (b"TOP 1 -1", ParseError::Arguments),
            (b"TOP 0 1", ParseError::Number),
            (b"AUTH PLAIN a b", ParseError::Arguments),
            (b"AUTH PLAIN ", ParseError::Arguments),
            (b"AUTH ", ParseError::Arguments),
        ];
        for (line, want) in cases {
            assert_eq!(
                parse(line),
                Err(want.clone()),
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
        let long = format!("USER {}", "a".repeat(256));
        assert_eq!(parse(long.as_bytes()), Err(ParseError::Arguments));
    }
}
