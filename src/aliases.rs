//! The aliases file `domains/<domain>/aliases` in chasquid's syntax (SPEC §6), and recursive
//! resolution of a recipient through users, aliases and catch-alls.
//!
//! Parsing follows chasquid's `internal/aliases` (`parseReader`, `parseRHS`,
//! `parseForward`): `key: target, target`, `key: | command args`, `*` catch-all,
//! `*: *@other`, `key: addr via host1/host2`, `#` comments, the last of duplicate keys wins.
//! Differences are noted where they are made.

use crate::addr::{Address, Domain, LocalPart};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum AliasError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {msg}")]
    Parse {
        path: PathBuf,
        line: usize,
        msg: String,
    },
}

/// The catch-all key.
pub const CATCH_ALL: &str = "*";

/// chasquid's `recursionLimit`: how many alias expansions deep a resolution may go.
pub const MAX_DEPTH: usize = 10;

/// One right-hand side entry of an alias.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Resolved again (users, aliases, catch-all) when its domain is local.
    Address(Address),
    /// `addr via host1/host2`: delivered through those hosts, never resolved again.
    Forward { address: Address, via: Vec<String> },
    /// `| command args`: argv split on whitespace, no shell.
    Pipe(Vec<String>),
}

/// One alias line: its key (lower-cased, as written otherwise) and its targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alias {
    pub key: String,
    pub targets: Vec<Target>,
}

/// One parsed aliases file.
#[derive(Debug, Clone, Default)]
pub struct AliasFile {
    /// In file order; a repeated key moves to the position of its last line, so that a
    /// backwards search finds the line chasquid would use.
    entries: Vec<Alias>,
}

impl AliasFile {
    /// Loads and parses; a missing file is an empty alias set.
    pub fn load(path: &Path, domain: &Domain) -> Result<AliasFile, AliasError> {
        match std::fs::read_to_string(path) {
            Ok(text) => AliasFile::parse(path, &text, domain),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(AliasFile::default()),
            Err(source) => Err(AliasError::Io {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    pub fn parse(path: &Path, text: &str, domain: &Domain) -> Result<AliasFile, AliasError> {
        let (file, mut problems) = AliasFile::parse_all(path, text, domain);
        match problems.is_empty() {
            true => Ok(file),
            false => Err(problems.swap_remove(0)),
        }
    }

    /// [`AliasFile::parse`] that goes on past a bad line: the good lines, and every bad one
    /// with its line number (`util check`).
    pub fn parse_all(path: &Path, text: &str, domain: &Domain) -> (AliasFile, Vec<AliasError>) {
        let mut file = AliasFile::default();
        let mut problems = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match parse_line(line, domain) {
                Ok(alias) => file.insert(alias),
                Err(msg) => problems.push(AliasError::Parse {
                    path: path.to_path_buf(),
                    line: i + 1,
                    msg,
                }),
            }
        }
        (file, problems)
    }

    /// chasquid: "If the same left-side address appears more than once, the last one will
    /// take precedence."
    fn insert(&mut self, alias: Alias) {
        self.entries.retain(|a| a.key != alias.key);
        self.entries.push(alias);
    }

    /// The alias with exactly this (lower-cased) key.
    pub fn get(&self, key: &str) -> Option<&Alias> {
        self.entries.iter().rev().find(|a| a.key == key)
    }

    /// The alias for a lower-cased local part, drop characters ignored on both sides up to
    /// the first suffix separator (chasquid's `RemoveDropCharacters`), so `juana.perez`
    /// matches `juanaperez` and `juana.perez+fruta` matches `juanaperez+fruta`.
    pub fn find(&self, norm: &Normalization, local: &str) -> Option<&Alias> {
        let want = norm.drop_before_suffix(local);
        let exact = self.get(local);
        exact.or_else(|| {
            self.entries
                .iter()
                .rev()
                .find(|a| norm.drop_before_suffix(&a.key) == want)
        })
    }

    pub fn iter(&self) -> impl Iterator<Item = &Alias> {
        self.entries.iter()
    }
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn parse_line(line: &str, domain: &Domain) -> Result<Alias, String> {
    let (lhs, rhs) = line.split_once(':').ok_or("missing ':'")?;
    let (lhs, rhs) = (lhs.trim(), rhs.trim());
    Ok(Alias {
        key: parse_key(lhs)?,
        targets: parse_rhs(rhs, domain)?,
    })
}

fn parse_key(lhs: &str) -> Result<String, String> {
    if lhs.is_empty() {
        return Err("missing alias name before ':'".into());
    }
    if lhs.contains('@') {
        return Err(format!("alias name {lhs:?} cannot contain '@'"));
    }
    // Stricter than chasquid, which accepts any left side: the key must be a local part
    // someone could send to, which also rejects the spaces its docs forbid.
    let local = LocalPart::parse(lhs).map_err(|e| format!("invalid alias name: {e}"))?;
    Ok(local.lowercase().as_str().to_string())
}

fn parse_rhs(rhs: &str, domain: &Domain) -> Result<Vec<Target>, String> {
    if let Some(command) = rhs.strip_prefix('|') {
        let argv: Vec<String> = command.split_whitespace().map(String::from).collect();
        if argv.is_empty() {
            return Err("pipe alias without a command".into());
        }
        return Ok(vec![Target::Pipe(argv)]);
    }
    // chasquid skips empty entries so that `a: b,` works; an alias with no entry at all
    // is an error in both.
    let targets = rhs
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| parse_target(t, domain))
        .collect::<Result<Vec<_>, _>>()?;
    if targets.is_empty() {
        return Err("empty target".into());
    }
    Ok(targets)
}

fn parse_target(raw: &str, domain: &Domain) -> Result<Target, String> {
    match raw.split_once(" via ") {
        None => Ok(Target::Address(parse_target_address(raw, domain)?)),
        Some((addr, via)) => {
            let address = parse_target_address(addr.trim(), domain)?;
            Ok(Target::Forward {
                address,
                via: parse_via(via)?,
            })
        }
    }
}

/// Unlike chasquid, the local part keeps its case: RFC 5321 §2.4 leaves its meaning to the
/// receiving host, and local lookups lower-case it anyway.
fn parse_target_address(raw: &str, domain: &Domain) -> Result<Address, String> {
    if raw.is_empty() {
        return Err("forward without an address before 'via'".into());
    }
    let parsed = if raw.contains('@') {
        Address::parse(raw)
    } else {
        // SPEC §6: an address without a domain is in the alias's own domain.
        LocalPart::parse(raw).map(|l| Address::new(l, domain.clone()))
    };
    parsed.map_err(|e| format!("invalid address {raw:?}: {e}"))
}

/// `host1/host2`: chasquid does not validate the servers either; we only refuse empty
/// entries and whitespace inside one.
fn parse_via(via: &str) -> Result<Vec<String>, String> {
    via.split('/')
        .map(str::trim)
        .map(|host| match host {
            "" => Err("empty server in 'via' list".to_string()),
            h if h.contains(char::is_whitespace) => Err(format!("invalid 'via' server {h:?}")),
            h => Ok(h.to_string()),
        })
        .collect()
}

/// What resolution needs to know about the local domains.
pub trait Directory {
    fn is_local_domain(&self, domain: &Domain) -> bool;
    /// `local` is normalised (lower-case, drop characters and suffix removed).
    fn user_exists(&self, domain: &Domain, local: &str) -> bool;
    fn aliases(&self, domain: &Domain) -> Option<&AliasFile>;
    /// The first user of the domain (postmaster fallback).
    fn first_user(&self, domain: &Domain) -> Option<String>;
}

/// Normalisation settings (SPEC §3).
#[derive(Debug, Clone)]
pub struct Normalization {
    pub drop_characters: String,
    pub suffix_separators: String,
}

impl Normalization {
    /// Drop characters removed up to the first suffix separator; the suffix kept as is.
    fn drop_before_suffix(&self, local: &str) -> String {
        let cut = local
            .find(|c| self.suffix_separators.contains(c))
            .unwrap_or(local.len());
        let (base, suffix) = local.split_at(cut);
        let mut out: String = base
            .chars()
            .filter(|c| !self.drop_characters.contains(*c))
            .collect();
        out.push_str(suffix);
        out
    }
}

/// A final recipient.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Recipient {
    /// A local user's mailbox: `user@domain` with the user name as in the users file.
    Mailbox { address: String },
    /// An outside address (or one with `via` hosts).
    Forward { address: String, via: Vec<String> },
    /// `| command args`: argv, no shell; `alias` is the alias that named it.
    Pipe { argv: Vec<String>, alias: String },
}

impl Recipient {
    /// What logs and listings call this target: the address, or `|command args`.
    pub fn target(&self) -> String {
        match self {
            Recipient::Mailbox { address } | Recipient::Forward { address, .. } => address.clone(),
            Recipient::Pipe { argv, .. } => format!("|{}", argv.join(" ")),
        }
    }
}

/// The result of resolving one address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolution {
    /// Deduplicated, in order of first appearance.
    pub recipients: Vec<Recipient>,
    /// Branches cut off (loops, too deep, targets that do not exist), for the log.
    pub problems: Vec<String>,
}

/// Resolves `addr` (SPEC §6 lookup order). Empty `recipients` means: refuse at RCPT.
/// A non-local `addr` resolves to itself as a `Forward`.
///
/// As in chasquid, an alias applies before a user of the same name, so `me: me@gmail.com`
/// forwards a user's own mail. Differences from chasquid's `Resolver.resolve`: a target that
/// comes back to an alias being expanded is the mailbox of the user it names, if there is
/// one (`me: me, me@gmail.com` keeps a copy; chasquid recurses into the recursion limit),
/// else a problem; a loop or too deep a chain cuts only its own branch (chasquid fails the
/// whole resolution); and a local target that does not exist is dropped and reported instead
/// of being handed to the queue to bounce.
pub fn resolve(dir: &dyn Directory, norm: &Normalization, addr: &Address) -> Resolution {
    let mut resolver = Resolver {
        dir,
        norm,
        out: Resolution::default(),
        path: Vec::new(),
    };
    resolver.address(addr);
    resolver.out
}

/// What one local address is, after the SPEC §6 lookups.
enum Found<'a> {
    User(String),
    Alias { name: String, alias: &'a Alias },
    Nothing,
}

struct Resolver<'a> {
    dir: &'a dyn Directory,
    norm: &'a Normalization,
    out: Resolution,
    /// Names (`key@domain`) of the aliases being expanded, outermost first: loop detection
    /// and the "named by" of problems.
    path: Vec<String>,
}

impl<'a> Resolver<'a> {
    fn address(&mut self, addr: &Address) {
        let domain = addr.domain();
        if !self.dir.is_local_domain(domain) {
            self.push(Recipient::Forward {
                address: addr.to_string(),
                via: Vec::new(),
            });
            return;
        }
        let key = format!("{}@{domain}", addr.local().lowercase());
        if self.path.len() > MAX_DEPTH {
            self.problem(format!(
                "aliases nested deeper than {MAX_DEPTH}: {key} cut off"
            ));
            return;
        }
        match self.lookup(addr) {
            Found::User(user) => self.push_mailbox(&user, domain),
            Found::Alias { name, .. } if self.path.contains(&name) => {
                self.came_back(addr, &key, &name)
            }
            Found::Alias { name, alias } => {
                self.path.push(name.clone());
                for target in &alias.targets {
                    self.target(target, addr, &name);
                }
                self.path.pop();
            }
            Found::Nothing => self.not_found(&key),
        }
    }

    /// `addr` leads back to `alias`, which is being expanded. SPEC §6: a target naming the
    /// alias itself is the mailbox of the user of that name (`me: me, me@gmail.com`), and so
    /// is a longer chain coming back to it (`me: team`, `team: me, bob`); without such a
    /// user, the first is a missing target and the second a loop.
    fn came_back(&mut self, addr: &Address, key: &str, alias: &str) {
        if let Some(user) = self.user(addr) {
            self.push_mailbox(&user, addr.domain());
        } else if self.path.last().is_some_and(|parent| parent == alias) {
            self.problem(format!(
                "{key} (named by {alias}): names its own alias, and there is no such user"
            ));
        } else {
            // The caller found `alias` on the path: the cycle starts there.
            let start = self.path.iter().position(|p| p == alias).unwrap_or(0);
            let cycle = self.path[start..].join(" -> ");
            self.problem(format!("alias loop: {cycle} -> {alias}"));
        }
    }

    /// SPEC §6: exact local part, then normalised; for each, alias before user (so an alias
    /// of a user's name takes that user's mail, as in chasquid); then the catch-all, which
    /// never takes mail for an existing user or alias; `postmaster` last falls back to the
    /// first user (RFC 5321 §4.5.1: it must exist).
    fn lookup(&self, addr: &Address) -> Found<'a> {
        let domain = addr.domain();
        let dir = self.dir;
        let aliases = dir.aliases(domain);
        let candidates = self.candidates(addr);
        for local in &candidates {
            if let Some(alias) = aliases.and_then(|a| a.find(self.norm, local)) {
                return Found::alias(alias, domain);
            }
            if dir.user_exists(domain, local) {
                return Found::User(local.to_string());
            }
        }
        if let Some(alias) = aliases.and_then(|a| a.get(CATCH_ALL)) {
            return Found::alias(alias, domain);
        }
        let is_postmaster = candidates.iter().any(|c| c == "postmaster");
        match dir.first_user(domain) {
            Some(user) if is_postmaster => Found::User(user),
            _ => Found::Nothing,
        }
    }

    /// The user `addr` names, aliases and catch-all left aside.
    fn user(&self, addr: &Address) -> Option<String> {
        self.candidates(addr)
            .into_iter()
            .find(|local| self.dir.user_exists(addr.domain(), local))
    }

    /// The local parts to look up, in SPEC §6 order: as given (lower-cased), then with drop
    /// characters and suffix removed.
    fn candidates(&self, addr: &Address) -> Vec<String> {
        let exact = addr.local().lowercase();
        let normalized = addr
            .local()
            .normalize(&self.norm.drop_characters, &self.norm.suffix_separators);
        let mut candidates = vec![exact.as_str().to_string()];
        if normalized != exact {
            candidates.push(normalized.as_str().to_string());
        }
        candidates
    }

    /// `from` is the address whose alias named `target` (its local part replaces a `*`).
    fn target(&mut self, target: &Target, from: &Address, alias_name: &str) {
        match target {
            Target::Pipe(argv) => self.push(Recipient::Pipe {
                argv: argv.clone(),
                alias: alias_name.to_string(),
            }),
            // Not resolved again: the point of `via` is to send through those hosts.
            Target::Forward { address, via } => self.push(Recipient::Forward {
                address: star_replaced(address, from).to_string(),
                via: via.clone(),
            }),
            Target::Address(address) => self.address(&star_replaced(address, from)),
        }
    }

    fn not_found(&mut self, key: &str) {
        let msg = match self.path.last() {
            None => format!("{key}: no such user, alias or catch-all"),
            Some(parent) => format!("{key} (named by {parent}): no such user, alias or catch-all"),
        };
        self.problem(msg);
    }

    fn push_mailbox(&mut self, user: &str, domain: &Domain) {
        self.push(Recipient::Mailbox {
            address: format!("{user}@{domain}"),
        });
    }

    fn push(&mut self, r: Recipient) {
        if !self.out.recipients.contains(&r) {
            self.out.recipients.push(r);
        }
    }

    fn problem(&mut self, msg: String) {
        if !self.out.problems.contains(&msg) {
            self.out.problems.push(msg);
        }
    }
}

impl<'a> Found<'a> {
    fn alias(alias: &'a Alias, domain: &Domain) -> Found<'a> {
        Found::Alias {
            name: format!("{}@{domain}", alias.key),
            alias,
        }
    }
}

/// chasquid: a target whose user is `*` takes the user of the address being resolved,
/// as is (case kept, no drop characters or suffix removed): `*: *@other.example`.
fn star_replaced(target: &Address, from: &Address) -> Address {
    if target.local().as_str() == CATCH_ALL {
        Address::new(from.local().clone(), target.domain().clone())
    } else {
        target.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn domain(s: &str) -> Domain {
        Domain::parse(s).unwrap()
    }
    fn addr(s: &str) -> Address {
        Address::parse(s).unwrap()
    }
    fn parse(text: &str) -> Result<AliasFile, AliasError> {
        AliasFile::parse(Path::new("aliases"), text, &domain("example.test"))
    }

    #[test]
    fn parse_valid_lines() {
        let a = |s: &str| Target::Address(addr(s));
        let cases: Vec<(&str, &str, Vec<Target>)> = vec![
            (
                "info: alice, bob@example.org",
                "info",
                vec![a("alice@example.test"), a("bob@example.org")],
            ),
            ("Info : Alice ,", "info", vec![a("Alice@example.test")]),
            (
                "t: | /bin/x  -a   b",
                "t",
                vec![Target::Pipe(vec!["/bin/x".into(), "-a".into(), "b".into()])],
            ),
            ("t:|cat", "t", vec![Target::Pipe(vec!["cat".into()])]),
            ("*: *@other.example", "*", vec![a("*@other.example")]),
            ("*: me@gmail.com", "*", vec![a("me@gmail.com")]),
            (
                "x: y@XN--BCHER-KVA.example",
                "x",
                vec![a("y@bücher.example")],
            ),
            (
                "u: a@b.example via h1/h2:2525 , c",
                "u",
                vec![
                    Target::Forward {
                        address: addr("a@b.example"),
                        via: vec!["h1".into(), "h2:2525".into()],
                    },
                    a("c@example.test"),
                ],
            ),
            (
                "u: a via h",
                "u",
                vec![Target::Forward {
                    address: addr("a@example.test"),
                    via: vec!["h".into()],
                }],
            ),
            (
                "  juana.perez+fruta:\tfruta  ",
                "juana.perez+fruta",
                vec![a("fruta@example.test")],
            ),
        ];
        for (line, key, targets) in cases {
            let file = parse(line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
            assert_eq!(file.len(), 1, "{line:?}");
            let alias = file
                .get(key)
                .unwrap_or_else(|| panic!("{line:?}: no key {key:?}"));
            assert_eq!(alias.targets, targets, "{line:?}");
        }
    }

    #[test]
    fn parse_skips_comments_and_blank_lines() {
        let file = parse("# c\n\n   \n  # indented\r\ninfo: alice\r\n").unwrap();
        assert_eq!(file.len(), 1);
        assert!(parse("").unwrap().is_empty());
    }

    #[test]
    fn parse_last_duplicate_wins() {
        let file = parse("pepe: juan\nother: x\npepe: jose\nPEPE: maria\n").unwrap();
        assert_eq!(file.len(), 2);
        let targets = &file.get("pepe").unwrap().targets;
        assert_eq!(targets, &vec![Target::Address(addr("maria@example.test"))]);
    }

    #[test]
    fn parse_errors() {
        let cases = [
            ("info alice", "missing ':'"),
            (": alice", "missing alias name"),
            ("info:", "empty target"),
            ("info:   ", "empty target"),
            ("info: , ,", "empty target"),
            ("a@b: c", "cannot contain '@'"),
            ("in fo: alice", "invalid alias name"),
            ("../x: alice", "invalid alias name"),
            ("info: x@", "invalid address \"x@\""),
            ("info: a b", "invalid address \"a b\""),
            ("info: a, | cat", "invalid address \"| cat\""),
            ("info: ../../etc", "invalid address"),
            ("info: |", "pipe alias without a command"),
            ("info: |   ", "pipe alias without a command"),
            ("info: x via a//b", "empty server"),
            ("info: x via a/", "empty server"),
            ("info: x via a b", "invalid 'via' server"),
        ];
        for (line, want) in cases {
            // The bad line is the third one, so the line number is checked too.
            let text = format!("# header\nok: alice\n{line}\nlater: bob\n");
            match parse(&text) {
                Err(AliasError::Parse { path, line: n, msg }) => {
                    assert_eq!(n, 3, "{line:?}");
                    assert_eq!(path, Path::new("aliases"));
                    assert!(msg.contains(want), "{line:?}: {msg:?} lacks {want:?}");
                }
                other => panic!("{line:?}: expected a parse error, got {other:?}"),
            }
        }
    }

    #[test]
    fn parse_error_display_names_file_and_line() {
        let err = parse("\n\nbad line\n").unwrap_err();
        assert_eq!(err.to_string(), "aliases:3: missing ':'");
    }

    #[test]
    fn load_missing_file_is_empty() {
        let tmp = tempfile::tempdir().unwrap();
        let d = domain("example.test");
        let file = AliasFile::load(&tmp.path().join("aliases"), &d).unwrap();
        assert!(file.is_empty());
        std::fs::write(tmp.path().join("aliases"), "info: alice\n").unwrap();
        let file = AliasFile::load(&tmp.path().join("aliases"), &d).unwrap();
        assert_eq!(file.len(), 1);
        assert!(matches!(
            AliasFile::load(tmp.path(), &d),
            Err(AliasError::Io { .. })
        ));
    }

    /// Local domains: example.test (alice, bob), other.test (carol), empty.test (no users).
    struct TestDir {
        users: HashMap<Domain, Vec<&'static str>>,
        aliases: HashMap<Domain, AliasFile>,
    }

    impl TestDir {
        fn new(example_aliases: &str, other_aliases: &str) -> TestDir {
            let mut users = HashMap::new();
            users.insert(domain("example.test"), vec!["alice", "bob"]);
            users.insert(domain("other.test"), vec!["carol"]);
            users.insert(domain("empty.test"), vec![]);
            let mut aliases = HashMap::new();
            for (d, text) in [
                ("example.test", example_aliases),
                ("other.test", other_aliases),
            ] {
                let d = domain(d);
                let file = AliasFile::parse(Path::new("aliases"), text, &d).unwrap();
                aliases.insert(d, file);
            }
            TestDir { users, aliases }
        }
    }

    impl Directory for TestDir {
        fn is_local_domain(&self, domain: &Domain) -> bool {
            self.users.contains_key(domain)
        }
        fn user_exists(&self, domain: &Domain, local: &str) -> bool {
            self.users.get(domain).is_some_and(|u| u.contains(&local))
        }
        fn aliases(&self, domain: &Domain) -> Option<&AliasFile> {
            self.aliases.get(domain)
        }
        fn first_user(&self, domain: &Domain) -> Option<String> {
            self.users.get(domain)?.first().map(|u| u.to_string())
        }
    }

    fn norm() -> Normalization {
        Normalization {
            drop_characters: ".".into(),
            suffix_separators: "+".into(),
        }
    }

    fn show(r: &Recipient) -> String {
        match r {
            Recipient::Mailbox { address } => format!("mbox {address}"),
            Recipient::Forward { address, via } if via.is_empty() => format!("fwd {address}"),
            Recipient::Forward { address, via } => format!("fwd {address} via {}", via.join("/")),
            Recipient::Pipe { argv, alias } => format!("pipe {} ({alias})", argv.join(" ")),
        }
    }

    fn run(aliases: &str, rcpt: &str) -> (Vec<String>, Vec<String>) {
        let dir = TestDir::new(aliases, "team: carol, alice@example.test");
        let res = resolve(&dir, &norm(), &addr(rcpt));
        (res.recipients.iter().map(show).collect(), res.problems)
    }

    #[test]
    fn resolution_table() {
        // aliases of example.test, recipient, expected recipients, number of problems
        let cases: &[(&str, &str, &[&str], usize)] = &[
            ("", "alice@example.test", &["mbox alice@example.test"], 0),
            ("", "ALICE@Example.TEST", &["mbox alice@example.test"], 0),
            (
                "",
                "alice+tag@example.test",
                &["mbox alice@example.test"],
                0,
            ),
            (
                "",
                "A.Lice+t.a.g@example.test",
                &["mbox alice@example.test"],
                0,
            ),
            ("", "alice@remote.example", &["fwd alice@remote.example"], 0),
            ("", "Bob@Remote.Example", &["fwd Bob@remote.example"], 0),
            ("", "ghost@example.test", &[], 1),
            (
                "info: alice",
                "info@example.test",
                &["mbox alice@example.test"],
                0,
            ),
            (
                "info: alice",
                "In.Fo+x@example.test",
                &["mbox alice@example.test"],
                0,
            ),
            (
                "info: team\nteam: alice, bob",
                "info@example.test",
                &["mbox alice@example.test", "mbox bob@example.test"],
                0,
            ),
            (
                "info: x@remote.example",
                "info@example.test",
                &["fwd x@remote.example"],
                0,
            ),
            (
                "info: team@other.test",
                "info@example.test",
                &["mbox carol@other.test", "mbox alice@example.test"],
                0,
            ),
            (
                "info: x@remote.example via mx1.example/mx2.example:2525",
                "info@example.test",
                &["fwd x@remote.example via mx1.example/mx2.example:2525"],
                0,
            ),
            // `via` targets are not resolved again, even local ones (chasquid).
            (
                "info: ghost via h",
                "info@example.test",
                &["fwd ghost@example.test via h"],
                0,
            ),
            (
                "tickets: | /usr/bin/t --queue support",
                "tickets@example.test",
                &["pipe /usr/bin/t --queue support (tickets@example.test)"],
                0,
            ),
            (
                "*: alice",
                "nobody@example.test",
                &["mbox alice@example.test"],
                0,
            ),
            (
                "*: | cat",
                "nobody@example.test",
                &["pipe cat (*@example.test)"],
                0,
            ),
            (
                "*: *@remote.example",
                "Some.One+x@example.test",
                &["fwd Some.One+x@remote.example"],
                0,
            ),
            (
                "*: *@remote.example via h",
                "x@example.test",
                &["fwd x@remote.example via h"],
                0,
            ),
            (
                "*: *@remote.example",
                "bob@example.test",
                &["mbox bob@example.test"],
                0,
            ),
            (
                "*: bob\ninfo: alice",
                "info@example.test",
                &["mbox alice@example.test"],
                0,
            ),
            // SPEC §6: an alias applies before the user of the same name, in every form of
            // the user's address (case, drop characters, suffix).
            (
                "alice: bob",
                "alice@example.test",
                &["mbox bob@example.test"],
                0,
            ),
            (
                "alice: x@remote.example",
                "ALICE@Example.TEST",
                &["fwd x@remote.example"],
                0,
            ),
            (
                "alice: x@remote.example",
                "A.Lice+tag@example.test",
                &["fwd x@remote.example"],
                0,
            ),
            (
                "a.lice: x@remote.example",
                "alice@example.test",
                &["fwd x@remote.example"],
                0,
            ),
            (
                "alice: carol@other.test",
                "alice@example.test",
                &["mbox carol@other.test"],
                0,
            ),
            // A target naming the alias itself is the user's mailbox, not a loop.
            (
                "alice: alice, x@remote.example",
                "alice@example.test",
                &["mbox alice@example.test", "fwd x@remote.example"],
                0,
            ),
            (
                "alice: alice, x@remote.example",
                "a.lice+tag@example.test",
                &["mbox alice@example.test", "fwd x@remote.example"],
                0,
            ),
            (
                "alice: x@remote.example, A.Lice+copy",
                "alice@example.test",
                &["fwd x@remote.example", "mbox alice@example.test"],
                0,
            ),
            (
                "alice: alice",
                "alice@example.test",
                &["mbox alice@example.test"],
                0,
            ),
            // ... and without such a user, a missing target like any other.
            (
                "ghost: ghost, x@remote.example",
                "ghost@example.test",
                &["fwd x@remote.example"],
                1,
            ),
            ("ghost: ghost", "ghost@example.test", &[], 1),
            ("ghost: Gh.Ost+x", "ghost@example.test", &[], 1),
            // A chain that comes back to the user delivers to its mailbox; entered from the
            // other end, the same chain is a loop (team is no user).
            (
                "alice: team\nteam: alice, bob",
                "alice@example.test",
                &["mbox alice@example.test", "mbox bob@example.test"],
                0,
            ),
            (
                "alice: team\nteam: alice, bob",
                "team@example.test",
                &["mbox bob@example.test"],
                1,
            ),
            // An alias with a suffix reaching the user's alias.
            (
                "alice: x@remote.example\nalice+work: alice, bob",
                "alice+work@example.test",
                &["fwd x@remote.example", "mbox bob@example.test"],
                0,
            ),
            // The catch-all never takes mail for an existing user or alias.
            (
                "*: bob",
                "alice@example.test",
                &["mbox alice@example.test"],
                0,
            ),
            (
                "*: x@remote.example",
                "A.Lice+x@example.test",
                &["mbox alice@example.test"],
                0,
            ),
            (
                "*: bob\nalice: x@remote.example",
                "alice@example.test",
                &["fwd x@remote.example"],
                0,
            ),
            (
                "*: bob\nalice: alice, x@remote.example",
                "alice@example.test",
                &["mbox alice@example.test", "fwd x@remote.example"],
                0,
            ),
            (
                "*: bob\nghost: ghost, x@remote.example",
                "ghost@example.test",
                &["fwd x@remote.example"],
                1,
            ),
            // An exact alias with a suffix wins over the suffix-less user.
            (
                "alice+spam: | discard",
                "alice+spam@example.test",
                &["pipe discard (alice+spam@example.test)"],
                0,
            ),
            (
                "alice+spam: | discard",
                "alice+other@example.test",
                &["mbox alice@example.test"],
                0,
            ),
            (
                "juana.perez: alice\njuana.perez+fruta: bob",
                "ju.ana.perez@example.test",
                &["mbox alice@example.test"],
                0,
            ),
            (
                "juana.perez: alice\njuana.perez+fruta: bob",
                "juanaperez+abc@example.test",
                &["mbox alice@example.test"],
                0,
            ),
            (
                "juana.perez: alice\njuana.perez+fruta: bob",
                "juanaperez+fruta@example.test",
                &["mbox bob@example.test"],
                0,
            ),
            (
                "",
                "postmaster@example.test",
                &["mbox alice@example.test"],
                0,
            ),
            (
                "",
                "PostMaster@example.test",
                &["mbox alice@example.test"],
                0,
            ),
            ("", "postmaster@other.test", &["mbox carol@other.test"], 0),
            (
                "postmaster: bob",
                "postmaster@example.test",
                &["mbox bob@example.test"],
                0,
            ),
            (
                "*: bob",
                "postmaster@example.test",
                &["mbox bob@example.test"],
                0,
            ),
            ("", "postmaster@empty.test", &[], 1),
            ("a: b\nb: a", "a@example.test", &[], 1),
            ("a: a", "a@example.test", &[], 1),
            ("a: A+x", "a@example.test", &[], 1),
            (
                "a: b, alice\nb: a",
                "a@example.test",
                &["mbox alice@example.test"],
                1,
            ),
            // A catch-all pointing at a missing local user comes back to itself.
            ("*: ghost", "nobody@example.test", &[], 1),
            ("info: ghost, phantom", "info@example.test", &[], 2),
            (
                "info: ghost, bob",
                "info@example.test",
                &["mbox bob@example.test"],
                1,
            ),
            (
                "info: alice, team, ALICE, alice+x\nteam: alice, bob",
                "info@example.test",
                &["mbox alice@example.test", "mbox bob@example.test"],
                0,
            ),
            (
                "info: x@remote.example, X@REMOTE.example, x@remote.example",
                "info@example.test",
                &["fwd x@remote.example", "fwd X@remote.example"],
                0,
            ),
        ];
        for (aliases, rcpt, want, problems) in cases {
            let (got, probs) = run(aliases, rcpt);
            assert_eq!(
                &got, want,
                "aliases {aliases:?}, rcpt {rcpt}; problems {probs:?}"
            );
            assert_eq!(
                probs.len(),
                *problems,
                "aliases {aliases:?}, rcpt {rcpt}: {probs:?}"
            );
        }
    }

    fn chain(len: usize) -> String {
        let mut text: String = (0..len).map(|i| format!("a{i}: a{}\n", i + 1)).collect();
        text.push_str(&format!("a{len}: alice\n"));
        text
    }

    #[test]
    fn depth_limit() {
        // a0 is depth 0; alice, behind `len` aliases, is at depth len + 1.
        let (got, probs) = run(&chain(MAX_DEPTH - 1), "a0@example.test");
        assert_eq!(got, ["mbox alice@example.test"], "{probs:?}");
        let (got, probs) = run(&chain(MAX_DEPTH + 1), "a0@example.test");
        assert!(got.is_empty());
        assert_eq!(probs.len(), 1);
        assert!(probs[0].contains("deeper"), "{probs:?}");
    }

    #[test]
    fn loop_problem_names_the_path() {
        let (_, probs) = run("a: b\nb: a", "a@example.test");
        assert_eq!(
            probs,
            ["alias loop: a@example.test -> b@example.test -> a@example.test"]
        );
        let (_, probs) = run("info: ghost", "info@example.test");
        assert!(
            probs[0].starts_with("ghost@example.test (named by info@example.test)"),
            "{probs:?}"
        );
        // "Named by" is the alias line, not the form the address was written in.
        let (_, probs) = run("info: ghost", "In.Fo+x@example.test");
        assert!(
            probs[0].starts_with("ghost@example.test (named by info@example.test)"),
            "{probs:?}"
        );
        let (_, probs) = run("ghost: Gh.Ost+x", "ghost@example.test");
        assert_eq!(
            probs,
            [
                "gh.ost+x@example.test (named by ghost@example.test): names its own alias, \
              and there is no such user"
            ]
        );
        let (_, probs) = run("alice: team\nteam: alice, bob", "team@example.test");
        assert_eq!(
            probs,
            ["alias loop: team@example.test -> alice@example.test -> team@example.test"]
        );
    }

    #[test]
    fn recipient_json_shape() {
        let r = Recipient::Pipe {
            argv: vec!["cat".into()],
            alias: "x@example.test".into(),
        };
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(
            json,
            r#"{"kind":"pipe","argv":["cat"],"alias":"x@example.test"}"#
        );
    }

    #[test]
    fn find_ignores_drop_characters_before_suffix() {
        let file = parse("juana.perez: a\njuana.perez+fruta: b\n").unwrap();
        let n = norm();
        let cases = [
            ("juana.perez", Some("juana.perez")),
            ("juanaperez", Some("juana.perez")),
            ("ju.ana.pe.rez", Some("juana.perez")),
            ("juanaperez+fruta", Some("juana.perez+fruta")),
            ("juanaperez+fr.uta", None),
            ("juanaperez+abc", None),
        ];
        for (local, want) in cases {
            assert_eq!(
                file.find(&n, local).map(|a| a.key.as_str()),
                want,
                "{local}"
            );
        }
    }
}
