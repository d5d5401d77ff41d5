//! `tambo util dns-records / dns-check` (SPEC §4, issue 6): every record a domain needs, as
//! zone-file lines, and the same looked up live with a verdict per record.

use crate::cli::CliError;
use crate::config::Settings;
use argh::FromArgs;

/// Print every DNS record the domain needs (MX, SPF, DKIM, DMARC, MTA-STS, TLS-RPT, PTR).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "dns-records")]
pub struct DnsRecords {
    /// the domain
    #[argh(positional)]
    pub domain: String,
}

/// Look up every record the domain needs and compare; exit 0 only when all are ok.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "dns-check")]
pub struct DnsCheck {
    /// the domain
    #[argh(positional)]
    pub domain: String,
}

pub fn records(_settings: &Settings, _c: DnsRecords) -> Result<(), CliError> {
    Err(CliError::failure("dns-records: not implemented yet"))
}

pub fn check(_settings: &Settings, _c: DnsCheck) -> Result<(), CliError> {
    Err(CliError::failure("dns-check: not implemented yet"))
}
