//! The command line (SPEC §4), parsed with argh into plain structs, then run.
//! [`CliError`] carries the exit status; `main` is the only place that exits.

pub mod check;
pub mod dkim;
pub mod dns_records;
pub mod doctor;
pub mod import_chasquid;
pub mod import_maildir;
pub mod init;
pub mod serve;
pub mod util;

use argh::FromArgs;
use std::path::PathBuf;

/// tambo: a mail server for your domain.
// argh knows only `--help` and `help` unless told; every command struct repeats
// `help_triggers` so that `-h` works at each level, as users expect.
#[derive(FromArgs, Debug)]
#[argh(help_triggers("-h", "--help", "help"))]
pub struct Args {
    /// the config folder (default: the current folder)
    #[argh(option, short = 'C', default = "PathBuf::from(\".\")")]
    pub config_dir: PathBuf,
    /// print the version and exit
    #[argh(switch, short = 'V')]
    pub version: bool,
    // Optional only so that `tambo --version` needs no command; `run` refuses its absence.
    #[argh(subcommand)]
    pub command: Option<Command>,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum Command {
    Serve(ServeArgs),
    Util(UtilArgs),
}

/// Run the mail server.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "serve", help_triggers("-h", "--help", "help"))]
pub struct ServeArgs {}

/// Manage and inspect the server: users, aliases, DKIM keys, DNS records (and a live check
/// of them), the queue, the settings, import from chasquid or a Dovecot/Courier Maildir.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "util", help_triggers("-h", "--help", "help"))]
pub struct UtilArgs {
    #[argh(subcommand)]
    pub command: util::UtilCommand,
}

/// A failure with its exit status: 1 = a negative answer (wrong password), 2 = bad input or
/// configuration (SPEC §4), 1 also for runtime failures such as a port already in use.
#[derive(Debug)]
pub struct CliError {
    pub status: u8,
    pub message: String,
}

impl CliError {
    pub fn usage(message: impl Into<String>) -> CliError {
        CliError {
            status: 2,
            message: message.into(),
        }
    }
    pub fn failure(message: impl Into<String>) -> CliError {
        CliError {
            status: 1,
            message: message.into(),
        }
    }
}

/// What `tambo --version` prints.
pub fn version() -> String {
    format!("tambo {}", env!("CARGO_PKG_VERSION"))
}

pub fn run(args: Args) -> Result<(), CliError> {
    if args.version {
        println!("{}", version());
        return Ok(());
    }
    match args.command {
        Some(Command::Serve(_)) => serve::run(&args.config_dir),
        Some(Command::Util(u)) => util::run(&args.config_dir, u.command),
        None => Err(CliError::usage(
            "no command given: `tambo serve` or `tambo util ...` (see tambo --help)",
        )),
    }
}

/// The config folder must exist: a mistyped `-C` would otherwise create a `data/` folder
/// somewhere and serve no domain at all. Commands that make a config folder (`util
/// init`, `util import-chasquid`) do not call this.
pub fn existing_config_dir(dir: &std::path::Path) -> Result<(), CliError> {
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(CliError::usage(format!(
            "{}: not a folder (the config folder, -C)",
            dir.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(CliError::usage(format!(
            "{}: no such config folder (-C)",
            dir.display()
        ))),
        Err(e) => Err(CliError::usage(format!("{}: {e}", dir.display()))),
    }
}
