//! `tambo util dkim-keygen / dkim-dns / dkim-sign / dkim-verify` (SPEC §4, issue 6).

use crate::cli::CliError;
use crate::config::Settings;
use argh::FromArgs;

/// Generate a DKIM key for a domain (PKCS#8 PEM, mode 0600; never overwrites).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "dkim-keygen")]
pub struct DkimKeygen {
    /// the domain
    #[argh(positional)]
    pub domain: String,
    /// the selector (default: derived from today's date)
    #[argh(positional)]
    pub selector: Option<String>,
    /// rsa2048 (default), rsa3072 or ed25519
    #[argh(option, default = "String::from(\"rsa2048\")")]
    pub algorithm: String,
}

/// Print the DNS TXT record to publish for a domain's DKIM key(s).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "dkim-dns")]
pub struct DkimDns {
    /// the domain
    #[argh(positional)]
    pub domain: String,
    /// the selector (default: every key of the domain)
    #[argh(positional)]
    pub selector: Option<String>,
}

/// DKIM-sign the message on stdin with a domain's key; print the signed message.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "dkim-sign")]
pub struct DkimSign {
    /// the domain
    #[argh(positional)]
    pub domain: String,
    /// the selector (default: every key of the domain)
    #[argh(positional)]
    pub selector: Option<String>,
}

/// Verify every DKIM signature of the message on stdin; exit 0 when all pass.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "dkim-verify")]
pub struct DkimVerify {}

pub fn keygen(_settings: &Settings, _c: DkimKeygen) -> Result<(), CliError> {
    Err(CliError::failure("dkim-keygen: not implemented yet"))
}

pub fn dns(_settings: &Settings, _c: DkimDns) -> Result<(), CliError> {
    Err(CliError::failure("dkim-dns: not implemented yet"))
}

pub fn sign(_settings: &Settings, _c: DkimSign) -> Result<(), CliError> {
    Err(CliError::failure("dkim-sign: not implemented yet"))
}

pub fn verify(_settings: &Settings, _c: DkimVerify) -> Result<(), CliError> {
    Err(CliError::failure("dkim-verify: not implemented yet"))
}
