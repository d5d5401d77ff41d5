//! SMTP command-line parser (RFC 5321 §4.1, RFC 6531 SMTPUTF8, RFC 1870 SIZE, RFC 4954 AUTH).
//! Pure: one line (without its CRLF) in, a `Command` or a `Reply`-ready error out.

use crate::addr::Address;
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
    Mail { from: ReversePath, params: MailParams },
    Rcpt { to: ForwardPath },
    Data,
    Rset,
    Noop,
    Quit,
    Vrfy,
    Expn,
    Help,
    StartTls,
    /// `AUTH <mechanism> [initial-response]`, mechanism upper-cased.
    Auth { mechanism: String, initial: Option<String> },
    /// `GET`, `POST`, `CONNECT` (cross-protocol attacks).
    Http,
}

/// Parses one command line (without CRLF).
pub fn parse(line: &[u8]) -> Result<Command, Reply> {
    todo!("{}", line.len())
}
