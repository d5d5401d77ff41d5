//! `tambo util ...`: user management and configuration inspection (SPEC §4).
//! Commands that change a file print its path; bad input exits 2 with nothing written.

use crate::addr::{Address, Domain};
use crate::aliases::Recipient;
use crate::cli::CliError;
use crate::config::{Domains, Settings, domains::domain_dir};
use crate::userdb::{self, Credential, UserDb};
use argh::FromArgs;
use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum UtilCommand {
    UserAdd(UserAdd),
    UserRemove(UserRemove),
    Authenticate(Authenticate),
    CheckUserdb(CheckUserdb),
    AliasesResolve(AliasesResolve),
    PrintConfig(PrintConfig),
    DomaininfoRemove(DomaininfoRemove),
    Queue(QueueList),
    DkimKeygen(super::dkim::DkimKeygen),
    DkimDns(super::dkim::DkimDns),
    DkimSign(super::dkim::DkimSign),
    DkimVerify(super::dkim::DkimVerify),
    DnsRecords(super::dns_records::DnsRecords),
    DnsCheck(super::dns_records::DnsCheck),
    ImportChasquid(super::import_chasquid::ImportChasquid),
    ImportMaildir(super::import_maildir::ImportMaildir),
    Init(super::init::Init),
    Check(super::check::Check),
}

/// Add a user, or change its password.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "user-add", help_triggers("-h", "--help", "help"))]
pub struct UserAdd {
    /// user@domain
    #[argh(positional)]
    address: String,
    /// the password (else read from the terminal twice, or one line of stdin)
    #[argh(option)]
    password: Option<String>,
    /// a mailbox that receives mail but cannot log in
    #[argh(switch)]
    receive_only: bool,
}

/// Remove a user.
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "user-remove",
    help_triggers("-h", "--help", "help")
)]
pub struct UserRemove {
    /// user@domain
    #[argh(positional)]
    address: String,
}

/// Check a password: exit 0 when right, 1 when wrong.
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "authenticate",
    help_triggers("-h", "--help", "help")
)]
pub struct Authenticate {
    /// user@domain
    #[argh(positional)]
    address: String,
    /// the password (else a terminal prompt, or one line of stdin)
    #[argh(option)]
    password: Option<String>,
}

/// Check that a domain's users file loads.
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "check-userdb",
    help_triggers("-h", "--help", "help")
)]
pub struct CheckUserdb {
    /// the domain
    #[argh(positional)]
    domain: String,
}

/// Show where mail for an address goes through users and aliases (mailbox, forward, pipe).
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "aliases-resolve",
    help_triggers("-h", "--help", "help")
)]
pub struct AliasesResolve {
    /// the address
    #[argh(positional)]
    address: String,
}

/// Forget the TLS level learned for a recipient domain (after it lost its TLS for good).
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "domaininfo-remove",
    help_triggers("-h", "--help", "help")
)]
pub struct DomaininfoRemove {
    /// the recipient domain
    #[argh(positional)]
    domain: String,
}

/// List queued messages: id, age, sender, each recipient with its state and last error.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "queue", help_triggers("-h", "--help", "help"))]
pub struct QueueList {}

/// Print the effective settings, defaults filled in.
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "print-config",
    help_triggers("-h", "--help", "help")
)]
pub struct PrintConfig {}

pub fn run(config_dir: &Path, command: UtilCommand) -> Result<(), CliError> {
    // Init and import make the config folder's conf/tambo.json; check reports every problem
    // of the settings rather than stopping at the first: no settings to load first.
    let command = match command {
        UtilCommand::ImportChasquid(c) => return super::import_chasquid::run(config_dir, c),
        UtilCommand::Init(c) => return super::init::run(config_dir, c),
        UtilCommand::Check(c) => return super::check::run(config_dir, c),
        other => other,
    };
    super::existing_config_dir(config_dir)?;
    let settings = Settings::load(config_dir).map_err(|e| CliError::usage(e.to_string()))?;
    match command {
        UtilCommand::UserAdd(c) => user_add(&settings, c),
        UtilCommand::UserRemove(c) => user_remove(&settings, c),
        UtilCommand::Authenticate(c) => authenticate(&settings, c),
        UtilCommand::CheckUserdb(c) => check_userdb(&settings, c),
        UtilCommand::AliasesResolve(c) => aliases_resolve(&settings, c),
        UtilCommand::DomaininfoRemove(c) => domaininfo_remove(&settings, c),
        UtilCommand::Queue(_) => queue_list(&settings),
        UtilCommand::DkimKeygen(c) => super::dkim::keygen(&settings, c),
        UtilCommand::DkimDns(c) => super::dkim::dns(&settings, c),
        UtilCommand::DkimSign(c) => super::dkim::sign(&settings, c),
        UtilCommand::DkimVerify(c) => super::dkim::verify(&settings, c),
        UtilCommand::DnsRecords(c) => super::dns_records::records(&settings, c),
        UtilCommand::DnsCheck(c) => super::dns_records::check(&settings, c),
        UtilCommand::ImportMaildir(c) => super::import_maildir::run(&settings, c),
        UtilCommand::ImportChasquid(_) | UtilCommand::Init(_) | UtilCommand::Check(_) => {
            unreachable!("handled before loading settings")
        }
        UtilCommand::PrintConfig(_) => {
            let json = serde_json::to_string_pretty(&settings.to_json())
                .map_err(|e| CliError::failure(e.to_string()))?;
            println!("{json}");
            Ok(())
        }
    }
}

/// A user address: valid, its domain has a folder, the local part normalised as stored.
pub(super) struct UserRef {
    pub(super) address: Address,
    pub(super) users_path: PathBuf,
}

pub(super) fn user_ref(settings: &Settings, input: &str) -> Result<UserRef, CliError> {
    let parsed = Address::parse(input).map_err(|e| CliError::usage(format!("{input:?}: {e}")))?;
    let dir = domain_folder(settings, parsed.domain())?;
    let norm = settings.normalization();
    let local = parsed
        .local()
        .normalize(&norm.drop_characters, &norm.suffix_separators);
    Ok(UserRef {
        address: Address::new(local, parsed.domain().clone()),
        users_path: dir.join("users"),
    })
}

fn domain_folder(settings: &Settings, domain: &Domain) -> Result<PathBuf, CliError> {
    let dir = domain_dir(&settings.config_dir, domain);
    if !dir.is_dir() {
        return Err(CliError::usage(format!(
            "{domain}: not a local domain (no folder {})",
            dir.display()
        )));
    }
    Ok(dir)
}

fn load_users(path: &Path) -> Result<UserDb, CliError> {
    UserDb::load(path).map_err(|e| CliError::usage(e.to_string()))
}

fn user_add(settings: &Settings, c: UserAdd) -> Result<(), CliError> {
    let user = user_ref(settings, &c.address)?;
    let mut db = load_users(&user.users_path)?;
    let credential = if c.receive_only {
        if c.password.is_some() {
            return Err(CliError::usage("--receive-only takes no password"));
        }
        Credential::ReceiveOnly
    } else {
        let password = match c.password {
            Some(p) => p,
            None => new_password_from_input()?,
        };
        userdb::check_strength(&password, &user.address.to_string())
            .map_err(|why| CliError::usage(format!("password refused: {why}")))?;
        Credential::Hash(userdb::hash_password(&password))
    };
    db.set(user.address.local().as_str(), credential);
    db.save()
        .map_err(|e| CliError::failure(format!("{}: {e}", user.users_path.display())))?;
    println!("{}", user.users_path.display());
    println!("{PICKED_UP}");
    Ok(())
}

/// After a change to a users file: what a running server does about it (`serve` watches the
/// users and aliases files, and looks again at AUTH).
const PICKED_UP: &str = "a running tambo serve picks the change up by itself (at once for a login, \
     within 2 seconds for mail), no SIGHUP or restart needed";

fn user_remove(settings: &Settings, c: UserRemove) -> Result<(), CliError> {
    let user = user_ref(settings, &c.address)?;
    let mut db = load_users(&user.users_path)?;
    if !db.remove(user.address.local().as_str()) {
        return Err(CliError::usage(format!("{}: no such user", user.address)));
    }
    db.save()
        .map_err(|e| CliError::failure(format!("{}: {e}", user.users_path.display())))?;
    println!("{}", user.users_path.display());
    println!("{PICKED_UP}");
    Ok(())
}

fn authenticate(settings: &Settings, c: Authenticate) -> Result<(), CliError> {
    let user = user_ref(settings, &c.address)?;
    let db = load_users(&user.users_path)?;
    let password = match c.password {
        Some(p) => p,
        None => password_from_input("Password: ")?,
    };
    if db.check_password(user.address.local().as_str(), &password) {
        println!("OK");
        Ok(())
    } else {
        Err(CliError::failure("authentication failed"))
    }
}

fn check_userdb(settings: &Settings, c: CheckUserdb) -> Result<(), CliError> {
    let domain = Domain::parse(&c.domain).map_err(|e| CliError::usage(e.to_string()))?;
    let path = domain_folder(settings, &domain)?.join("users");
    let db = load_users(&path)?;
    println!("{}: {} user(s), OK", path.display(), db.names().len());
    Ok(())
}

fn aliases_resolve(settings: &Settings, c: AliasesResolve) -> Result<(), CliError> {
    let addr =
        Address::parse(&c.address).map_err(|e| CliError::usage(format!("{:?}: {e}", c.address)))?;
    let domains = Domains::load(&settings.config_dir, settings.normalization())
        .map_err(|e| CliError::usage(e.to_string()))?;
    let resolution = domains.resolve(&addr);
    for problem in &resolution.problems {
        eprintln!("warning: {problem}");
    }
    if resolution.recipients.is_empty() {
        return Err(CliError::failure(format!(
            "{addr}: no such user (refused at RCPT)"
        )));
    }
    for r in &resolution.recipients {
        println!("{}", describe(r));
    }
    Ok(())
}

fn describe(r: &Recipient) -> String {
    match r {
        Recipient::Mailbox { address } => format!("mailbox {address}"),
        Recipient::Forward { address, via } if via.is_empty() => format!("forward {address}"),
        Recipient::Forward { address, via } => format!("forward {address} via {}", via.join("/")),
        Recipient::Pipe { argv, .. } => format!("pipe {}", argv.join(" ")),
    }
}

/// Queued messages, as `queue::listing` writes them (the same data as `/queue`). Read-only:
/// safe while the server runs.
fn queue_list(settings: &Settings) -> Result<(), CliError> {
    let dir = settings.data_dir.join("queue");
    if !dir.is_dir() {
        print!("{}", crate::queue::listing::text(&[]));
        return Ok(());
    }
    let queue = crate::queue::store::Queue::open(&settings.data_dir)
        .map_err(|e| CliError::failure(format!("{}: {e}", dir.display())))?;
    let listed = crate::queue::listing::list(&queue, crate::message::now_secs())
        .map_err(|e| CliError::failure(format!("{}: {e}", dir.display())))?;
    print!("{}", crate::queue::listing::text(&listed));
    Ok(())
}

fn domaininfo_remove(settings: &Settings, c: DomaininfoRemove) -> Result<(), CliError> {
    let domain = Domain::parse(&c.domain).map_err(|e| CliError::usage(e.to_string()))?;
    let info = crate::courier::domaininfo::DomainInfo::open(&settings.data_dir).map_err(|e| {
        CliError::failure(format!("{}/domaininfo: {e}", settings.data_dir.display()))
    })?;
    let removed = info
        .remove(&domain.to_ascii())
        .map_err(|e| CliError::failure(format!("{domain}: {e}")))?;
    if removed {
        println!("{domain}: TLS level forgotten");
    } else {
        println!("{domain}: nothing was known");
    }
    Ok(())
}

/// From the terminal: asked twice, must match. Else one line of stdin.
fn new_password_from_input() -> Result<String, CliError> {
    if !std::io::stdin().is_terminal() {
        return read_stdin_line();
    }
    let first = prompt("Password: ")?;
    let second = prompt("Again: ")?;
    if first != second {
        return Err(CliError::usage("passwords do not match"));
    }
    Ok(first)
}

fn password_from_input(label: &str) -> Result<String, CliError> {
    if std::io::stdin().is_terminal() {
        prompt(label)
    } else {
        read_stdin_line()
    }
}

fn prompt(label: &str) -> Result<String, CliError> {
    rpassword::prompt_password(label).map_err(|e| CliError::usage(format!("reading password: {e}")))
}

fn read_stdin_line() -> Result<String, CliError> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| CliError::usage(format!("reading password from stdin: {e}")))?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}
