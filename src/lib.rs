//! tambo: a single-binary mail server for a domain on a small VPS.
//!
//! Modules, one noun each; dependencies point down this list (cli → smtpd → queue → courier).
//!
//! - [`cli`]: argh command line, `serve` and `util ...`; the only place that picks exit codes.
//! - [`config`]: `conf/tambo.json` settings and the `domains/` folder, validated.
//! - [`addr`]: `Domain`, `LocalPart`, `Address` newtypes (IDNA, case, path-safe).
//! - [`jsontext`]: positions of keys and errors in JSON text, for error messages.
//! - [`fsutil`]: the one durable write helper (temp, fsync, rename, fsync dir).
//! - [`userdb`]: per-domain users file (PHC scrypt / argon2id hashes).
//! - [`aliases`]: chasquid-syntax aliases file and recursive resolution.
//! - [`proto`]: sans-I/O SMTP core: replies, line framer, command parser, DATA reader, session.
//! - [`smtpd`]: listeners, TLS, the I/O driver of the session, recipient and relay policy.
//! - [`queue`]: durable on-disk queue, per-recipient state, delivery loop.
//! - [`courier`]: deliveries: Maildir, MDA, LMTP, pipes, remote SMTP; DSN bounces.
//! - [`dns`]: the one resolver (hickory inside mail-auth), MX / A / AAAA / TXT.
//! - [`mailauth`]: SRS and DKIM signing.
//! - [`tls`]: certificates from `conf/certs/<name>/`, SNI, the self-signed fallback.
//! - [`maillog`]: one line per mail event, in the spirit of Postfix's mail.log.
//! - [`process`]: child processes (hook, MDA, pipes) in their own group, fed, capped, timed.
//! - `testsupport` (tests only): a cross-check whose peer is missing fails or says it skipped.

pub mod addr;
pub mod aliases;
pub mod auth;
pub mod cli;
pub mod config;
pub mod courier;
pub mod dns;
pub mod fsutil;
pub mod hooks;
pub mod jsontext;
pub mod mailauth;
pub mod maillog;
pub mod message;
pub mod metrics;
pub mod monitoring;
pub mod net;
pub mod process;
pub mod proto;
pub mod queue;
pub mod smtpd;
#[cfg(test)]
pub(crate) mod testsupport;
pub mod tls;
pub mod ttl_cache;
pub mod userdb;
