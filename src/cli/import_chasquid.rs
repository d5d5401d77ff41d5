//! `tambo util import-chasquid CHASQUID_DIR` (SPEC §4, §10 of issue 6): convert a chasquid
//! config folder into tambo's layout, keeping every password working.

use crate::cli::CliError;
use argh::FromArgs;
use std::path::Path;

/// Convert a chasquid config folder (chasquid.conf, certs/, domains/) into this one.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "import-chasquid")]
pub struct ImportChasquid {
    /// the chasquid config folder (usually /etc/chasquid)
    #[argh(positional)]
    pub chasquid_dir: std::path::PathBuf,
}

/// `config_dir` is the tambo config folder (`-C`); it may not have a conf/tambo.json yet.
pub fn run(_config_dir: &Path, _c: ImportChasquid) -> Result<(), CliError> {
    Err(CliError::failure("import-chasquid: not implemented yet"))
}
