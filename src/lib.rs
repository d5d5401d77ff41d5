//! tambo: a single-binary mail server for a domain on a small VPS.
//!
//! Modules, one noun each, listed from the top down: each uses only modules listed below it
//! (no module uses one above it, no folder one that uses it back).
//!
//! - [`cli`]: argh command line, `serve` and `util ...`; the only place that picks exit codes;
//!   the doctor of `serve` (DNS records, certificates, PTRs, blocklists, looked at hourly).
//! - [`smtpd`]: the SMTP driver (session over a stream, DATA into the queue, the checks of
//!   port 25, the durable commit) and its policy (relay, senders, recipients).
//! - [`imapd`]: the IMAP4rev1 server over the mailbox store.
//! - [`pop3d`]: the POP3 server over the INBOX of the mailbox store.
//! - [`acme`]: certificates from an ACME directory (RFC 8555): order, challenges, renewal.
//! - [`web`]: `http_listen` / `https_listen`: ACME http-01, the MTA-STS policy, mail client
//!   autoconfiguration (Thunderbird) and autodiscover (Outlook).
//! - [`monitoring`]: the HTTP endpoint: `/metrics`, `/healthz`, `/queue`.
//! - [`auth`]: logins for every protocol: password check, failure delay, per-address limit.
//! - [`queue`]: the durable on-disk queue, the delivery loop, direct Maildir delivery.
//! - [`net`]: the server layer every protocol shares: listeners, caps, PROXY, accept loop,
//!   plain/TLS stream.
//! - [`courier`]: deliveries (Maildir, MDA, LMTP, pipes, remote SMTP), outbound rewriting
//!   (SRS, DKIM, ARC), DSN bounces.
//! - [`mailbox`]: the Maildir++ store that IMAP and local delivery share: folders, UIDs
//!   (Dovecot's `dovecot-uidlist`), flags, the summary cache, modseqs (CONDSTORE/QRESYNC),
//!   quota, change notices; and the summaries (ENVELOPE, BODYSTRUCTURE, SORT/THREAD keys),
//!   sections and SEARCH over message bytes.
//! - [`config`]: `conf/tambo.json`, `domains/`, `conf/access`; the configuration in force and
//!   its reloads.
//! - [`mailauth`]: message authentication: SPF/DKIM/DMARC checks, DKIM signing, ARC, SRS.
//! - [`hooks`]: `hooks/post-data`, run for every message received on port 25.
//! - [`maillog`]: one line per mail event, in the spirit of Postfix's mail.log.
//! - [`message`]: a message below the queue and the couriers: envelope, stored data, split
//!   into a bounded header section and a streamed body.
//! - [`proto`]: the sans-I/O SMTP core: replies, commands, DATA reader, session, client side.
//! - [`aliases`]: the chasquid-syntax aliases file and recursive resolution.
//! - [`userdb`]: the per-domain users file (PHC scrypt / argon2id hashes).
//! - [`tls`]: certificates from `conf/certs/<name>/` and ACME, SNI, the self-signed fallback.
//! - [`challenges`]: ACME challenge answers in flight (http-01 tokens, tls-alpn-01 certificates).
//! - [`dns`]: the one resolver (hickory inside mail-auth), answers and parsed TXT records
//!   kept for their TTL.
//! - [`process`]: child processes (hook, MDA, pipes) in their own group, under a time limit.
//! - [`metrics`]: the process-wide counters, rendered for `/metrics`.
//! - [`addr`]: `Domain`, `LocalPart`, `Address` newtypes (IDNA, case, path-safe); host names.
//! - [`fsutil`]: the one durable write helper; shared directory fsyncs.
//! - [`ttl_cache`]: a bounded map whose entries expire.
//! - [`jsontext`]: positions of keys and errors in JSON text, for error messages.
//! - `testsupport` (tests only): a cross-check whose peer is missing fails or says it skipped.

pub mod acme;
pub mod addr;
pub mod aliases;
pub mod auth;
pub mod challenges;
pub mod cli;
pub mod config;
pub mod courier;
pub mod dns;
pub mod fsutil;
pub mod hooks;
pub mod imapd;
pub mod jsontext;
pub mod mailauth;
pub mod mailbox;
pub mod maillog;
pub mod message;
pub mod metrics;
pub mod monitoring;
pub mod net;
pub mod pop3d;
pub mod process;
pub mod proto;
pub mod queue;
pub mod smtpd;
#[cfg(test)]
pub(crate) mod testsupport;
pub mod tls;
pub mod ttl_cache;
pub mod userdb;
pub mod web;
