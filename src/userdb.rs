//! Per-domain users file `domains/<domain>/users` (SPEC §5): JSON object from normalised
//! local part to a PHC hash (`$scrypt$...`, `$argon2id$...`) or `"!"` (receive-only).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use argon2::Argon2;
use scrypt::Scrypt;
use scrypt::password_hash::phc::PasswordHash;
use scrypt::password_hash::{PasswordHasher, PasswordVerifier};

use crate::addr::LocalPart;
use crate::jsontext::{first_duplicate, json_error_text, top_level_key_lines};

#[derive(Debug, thiserror::Error)]
pub enum UserDbError {
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// A PHC string: `$scrypt$...` or `$argon2id$...`.
    Hash(String),
    /// `"!"`: has a mailbox, cannot log in.
    ReceiveOnly,
}

/// The file value of a receive-only user.
const RECEIVE_ONLY: &str = "!";
const SCRYPT_PREFIX: &str = "$scrypt$";
const ARGON2ID_PREFIX: &str = "$argon2id$";

/// scrypt cost for new hashes: SPEC §5 shows `ln=15,r=8,p=1` (32 MiB, ~0.1 s optimised).
const NEW_SCRYPT_LOG_N: u8 = 15;
const NEW_SCRYPT_R: u32 = 8;
const NEW_SCRYPT_P: u32 = 1;

/// Upper bounds on the cost parameters we agree to verify: a typo such as `ln=40` in the
/// users file must make the hash "malformed", not make the server allocate terabytes.
const MAX_SCRYPT_LOG_N: u32 = 20;
const MAX_SCRYPT_R: u32 = 32;
const MAX_SCRYPT_P: u32 = 16;
/// 1 GiB: scrypt needs 128 * r * N bytes.
const MAX_SCRYPT_MEMORY: u64 = 1 << 30;
/// argon2 `m` is in KiB: 1 GiB.
const MAX_ARGON2_M_KIB: u32 = 1 << 20;
const MAX_ARGON2_T: u32 = 64;
const MAX_ARGON2_P: u32 = 64;

#[derive(Debug, Clone, Default)]
pub struct UserDb {
    path: PathBuf,
    /// Sorted, so `names()` and `save()` are stable.
    users: BTreeMap<String, Credential>,
}

impl UserDb {
    /// Loads the file; a missing file is an empty database.
    pub fn load(path: &Path) -> Result<UserDb, UserDbError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => {
                let path = path.to_path_buf();
                return Err(UserDbError::Io { path, source });
            }
        };
        UserDb::parse(&text, path)
    }
    /// Parses the text of a users file; `path` is where it was read (for errors and `save`).
    /// Blank text is an empty database.
    pub fn parse(text: &str, path: &Path) -> Result<UserDb, UserDbError> {
        let users = if text.trim().is_empty() {
            BTreeMap::new()
        } else {
            parse(text).map_err(|(line, msg)| UserDbError::Parse {
                path: path.to_path_buf(),
                line,
                msg,
            })?
        };
        Ok(UserDb {
            path: path.to_path_buf(),
            users,
        })
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// `local` is a normalised local part (lower-case, drop characters and suffix removed).
    pub fn contains(&self, local: &str) -> bool {
        self.users.contains_key(local)
    }
    /// User names in file order (sorted).
    pub fn names(&self) -> Vec<String> {
        self.users.keys().cloned().collect()
    }
    /// The stored credential of a user, if any.
    pub fn get(&self, local: &str) -> Option<&Credential> {
        self.users.get(local)
    }
    /// The stored hash of a user who may log in (not receive-only).
    pub fn stored_hash(&self, local: &str) -> Option<&str> {
        match self.users.get(local) {
            Some(Credential::Hash(hash)) => Some(hash),
            Some(Credential::ReceiveOnly) | None => None,
        }
    }

    /// Verifies a password; false for unknown users, receive-only users and malformed hashes.
    /// Slow by design (scrypt): call it off the executor.
    pub fn check_password(&self, local: &str, password: &str) -> bool {
        match self.users.get(local) {
            Some(Credential::Hash(hash)) => verify_hash(hash, password),
            Some(Credential::ReceiveOnly) | None => false,
        }
    }
    pub fn set(&mut self, local: &str, credential: Credential) {
        self.users.insert(local.to_string(), credential);
    }
    /// Returns false when there was no such user.
    pub fn remove(&mut self, local: &str) -> bool {
        self.users.remove(local).is_some()
    }
    /// Writes the file atomically, one user a line, sorted, so `git diff` shows one line per change.
    /// Mode 0600: the hashes are not for everyone's eyes.
    pub fn save(&self) -> std::io::Result<()> {
        crate::fsutil::write_atomic(&self.path, self.to_text().as_bytes(), 0o600)
    }

    /// The file text: `{`, one `  "user": "value"` line per user, `}`.
    fn to_text(&self) -> String {
        let lines: Vec<String> = self
            .users
            .iter()
            .map(|(name, cred)| format!("  {}: {}", json_string(name), json_string(cred.as_str())))
            .collect();
        if lines.is_empty() {
            "{\n}\n".to_string()
        } else {
            format!("{{\n{}\n}}\n", lines.join(",\n"))
        }
    }
}

impl Credential {
    /// The value as stored in the file.
    pub fn as_str(&self) -> &str {
        match self {
            Credential::Hash(hash) => hash,
            Credential::ReceiveOnly => RECEIVE_ONLY,
        }
    }
}

fn json_string(s: &str) -> String {
    // Serialising a &str to JSON cannot fail.
    serde_json::to_string(s).unwrap_or_default()
}

/// Parses the file text; errors are `(line, message)`.
fn parse(text: &str) -> Result<BTreeMap<String, Credential>, (usize, String)> {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| (e.line(), format!("invalid JSON: {}", json_error_text(&e))))?;
    let serde_json::Value::Object(map) = value else {
        return Err((
            1,
            "expected a JSON object from user to password hash".into(),
        ));
    };
    let lines = top_level_key_lines(text);
    let line_of = |key: &str| {
        lines
            .iter()
            .find(|(k, _)| k == key)
            .map_or(1, |(_, line)| *line)
    };
    if let Some((key, line)) = first_duplicate(&lines) {
        return Err((line, format!("user {key:?} appears twice")));
    }
    let mut users = BTreeMap::new();
    for (key, value) in map {
        let line = line_of(&key);
        check_user_name(&key).map_err(|msg| (line, msg))?;
        let credential = credential_from(&key, &value).map_err(|msg| (line, msg))?;
        users.insert(key, credential);
    }
    Ok(users)
}

/// Users are stored normalised (SPEC §5): a valid, lower-case local part.
fn check_user_name(key: &str) -> Result<(), String> {
    let local = LocalPart::parse(key).map_err(|e| format!("user {key:?}: {e}"))?;
    if local.lowercase().as_str() != key {
        return Err(format!("user {key:?}: must be lower-case"));
    }
    Ok(())
}

fn credential_from(key: &str, value: &serde_json::Value) -> Result<Credential, String> {
    let serde_json::Value::String(s) = value else {
        return Err(format!(
            "user {key:?}: expected a string (a password hash or \"!\")"
        ));
    };
    if s == RECEIVE_ONLY {
        Ok(Credential::ReceiveOnly)
    } else if s.starts_with(SCRYPT_PREFIX) || s.starts_with(ARGON2ID_PREFIX) {
        Ok(Credential::Hash(s.clone()))
    } else {
        Err(format!(
            "user {key:?}: expected a \"$scrypt$...\" or \"$argon2id$...\" hash, or \"!\""
        ))
    }
}

/// Checks `password` against a PHC string; any malformed or unsupported hash is a mismatch.
pub fn verify_hash(hash: &str, password: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    let password = password.as_bytes();
    match parsed.algorithm.as_str() {
        "scrypt" if scrypt_cost_ok(&parsed) => {
            Scrypt::new().verify_password(password, &parsed).is_ok()
        }
        "argon2id" if argon2_cost_ok(&parsed) => {
            Argon2::default().verify_password(password, &parsed).is_ok()
        }
        _ => false,
    }
}

fn scrypt_cost_ok(hash: &PasswordHash) -> bool {
    // Missing parameters take the crate's defaults (ln=17, r=8, p=1), which are within bounds.
    let ln = hash.params.get_decimal("ln").unwrap_or(17);
    let r = hash.params.get_decimal("r").unwrap_or(8);
    let p = hash.params.get_decimal("p").unwrap_or(1);
    if ln > MAX_SCRYPT_LOG_N || r > MAX_SCRYPT_R || p > MAX_SCRYPT_P {
        return false;
    }
    // Cannot overflow: at most 128 * 32 << 20.
    (128 * u64::from(r)) << ln <= MAX_SCRYPT_MEMORY
}

fn argon2_cost_ok(hash: &PasswordHash) -> bool {
    let m = hash.params.get_decimal("m").unwrap_or(0);
    let t = hash.params.get_decimal("t").unwrap_or(0);
    let p = hash.params.get_decimal("p").unwrap_or(0);
    m <= MAX_ARGON2_M_KIB && t <= MAX_ARGON2_T && p <= MAX_ARGON2_P
}

/// A new scrypt PHC hash of `password` with a random salt.
pub fn hash_password(password: &str) -> String {
    hash_scrypt(password, NEW_SCRYPT_LOG_N)
}

/// scrypt PHC hash with cost `ln` (tests use a cheap one).
fn hash_scrypt(password: &str, log_n: u8) -> String {
    // The parameters are constants within scrypt's documented limits, and hashing with a fresh
    // salt only fails if the OS random source fails, which leaves nothing sensible to do.
    let params = scrypt::Params::new(log_n, NEW_SCRYPT_R, NEW_SCRYPT_P)
        .expect("constant scrypt parameters are valid");
    Scrypt::new_with_params(params)
        .hash_password(password.as_bytes())
        .expect("scrypt hashing with a random salt")
        .to_string()
}

/// Why a password is too weak for a new user, or Ok.
/// `user` is the address (`alice@example.com`) or the bare local part.
pub fn check_strength(password: &str, user: &str) -> Result<(), &'static str> {
    const MIN_CHARS: usize = 8;
    if password.is_empty() {
        return Err("the password is empty");
    }
    if password.chars().count() < MIN_CHARS {
        return Err("the password is shorter than 8 characters");
    }
    let lower = password.to_lowercase();
    let local = user.rsplit_once('@').map_or(user, |(local, _)| local);
    if lower == user.to_lowercase() || lower == local.to_lowercase() {
        return Err("the password is the user name");
    }
    let mut chars = password.chars();
    if let Some(first) = chars.next()
        && chars.all(|c| c == first)
    {
        return Err("the password is one character repeated");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// Cheap cost for tests that only need a valid hash (ln=4 is ~16 KiB, instant).
    fn cheap_hash(password: &str) -> String {
        hash_scrypt(password, 4)
    }

    fn load_text(text: &str) -> Result<UserDb, UserDbError> {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("users");
        std::fs::write(&path, text).unwrap();
        UserDb::load(&path)
    }

    #[test]
    fn missing_file_is_empty() {
        let tmp = tempfile::tempdir().unwrap();
        let db = UserDb::load(&tmp.path().join("users")).unwrap();
        assert!(db.names().is_empty());
        assert_eq!(db.path(), tmp.path().join("users"));
    }

    #[test]
    fn unreadable_is_io_error() {
        let tmp = tempfile::tempdir().unwrap();
        // A folder where the file should be: read fails with something other than NotFound.
        let err = UserDb::load(tmp.path()).unwrap_err();
        assert!(matches!(err, UserDbError::Io { .. }), "{err}");
    }

    #[test]
    fn save_exact_text_and_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("users");
        let mut db = UserDb::load(&path).unwrap();
        db.save().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\n}\n");

        db.set("bob", Credential::ReceiveOnly);
        db.set(
            "alice",
            Credential::Hash("$scrypt$ln=4,r=8,p=1$c2FsdA$aGFzaA".into()),
        );
        db.save().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "{\n  \"alice\": \"$scrypt$ln=4,r=8,p=1$c2FsdA$aGFzaA\",\n  \"bob\": \"!\"\n}\n"
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        let again = UserDb::load(&path).unwrap();
        assert_eq!(again.names(), ["alice", "bob"]);
        assert_eq!(again.get("bob"), Some(&Credential::ReceiveOnly));
        assert_eq!(again.users, db.users);
    }

    #[test]
    fn set_remove_contains() {
        let mut db = UserDb::default();
        assert!(!db.contains("alice"));
        db.set("alice", Credential::ReceiveOnly);
        assert!(db.contains("alice"));
        assert!(db.remove("alice"));
        assert!(!db.remove("alice"));
        assert!(!db.contains("alice"));
    }

    #[test]
    fn empty_text_is_empty_db() {
        for text in ["", "\n", "{}", "{\n}\n"] {
            assert!(load_text(text).unwrap().names().is_empty(), "{text:?}");
        }
    }

    #[test]
    fn parse_errors_have_lines() {
        let cases: &[(&str, usize, &str)] = &[
            ("{\n  \"a\": \"!\",\n  \"b\" \"!\"\n}\n", 3, "invalid JSON"),
            ("{\n  \"a\": \"!\"\n", 3, "invalid JSON"),
            ("[\"a\"]\n", 1, "expected a JSON object"),
            (
                "{\n  \"a\": \"!\",\n  \"b\": 5\n}\n",
                3,
                "user \"b\": expected a string",
            ),
            (
                "{\n  \"a\": \"!\",\n\n  \"b\": \"plain\"\n}\n",
                4,
                "user \"b\": expected a \"$scrypt$",
            ),
            ("{\n  \"a\": \"$md5$x\"\n}\n", 2, "user \"a\""),
            (
                "{\n  \"a\": \"!\",\n  \"Bob\": \"!\"\n}\n",
                3,
                "must be lower-case",
            ),
            (
                "{\n  \"a\": \"!\",\n  \"a/b\": \"!\"\n}\n",
                3,
                "user \"a/b\"",
            ),
            ("{\n  \"a\": \"!\",\n  \"\": \"!\"\n}\n", 3, "user \"\""),
            (
                "{\n  \"a\": \"!\",\n  \"a\": \"!\"\n}\n",
                3,
                "appears twice",
            ),
        ];
        for (text, want_line, want_msg) in cases {
            match load_text(text) {
                Err(UserDbError::Parse { line, msg, .. }) => {
                    assert_eq!(line, *want_line, "{text:?}: {msg}");
                    assert!(msg.contains(want_msg), "{text:?}: {msg}");
                }
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn parse_error_display_names_file_and_line() {
        let err = load_text("{\n  \"a\": 1\n}").unwrap_err().to_string();
        assert!(
            err.ends_with("/users:2: user \"a\": expected a string (a password hash or \"!\")"),
            "{err}"
        );
        let err = load_text("{\n  \"a\": \"!\",,\n}").unwrap_err().to_string();
        assert!(!err.contains("column"), "{err}");
    }

    #[test]
    fn hash_password_uses_default_cost() {
        // One real ln=15 hash (~3 s unoptimised); verification of the same code path is
        // covered with cheap hashes in `check_password_table`.
        let hash = hash_password("correct horse");
        assert!(hash.starts_with("$scrypt$ln=15,r=8,p=1$"), "{hash}");
        let parsed = PasswordHash::new(&hash).unwrap();
        assert_eq!(parsed.salt.map(|s| s.len()), Some(16));
        assert_eq!(parsed.hash.map(|h| h.len()), Some(32));
    }

    #[test]
    fn salts_are_random() {
        assert_ne!(cheap_hash("correct horse"), cheap_hash("correct horse"));
    }

    #[test]
    fn check_password_table() {
        let mut db = UserDb::default();
        db.set("alice", Credential::Hash(cheap_hash("secret-1")));
        db.set("bob", Credential::ReceiveOnly);
        db.set("carol", Credential::Hash("$scrypt$garbage".into()));
        db.set(
            "dave",
            Credential::Hash("$scrypt$ln=40,r=8,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo".into()),
        );
        let cases = [
            ("alice", "secret-1", true),
            ("alice", "secret-2", false),
            ("alice", "", false),
            ("bob", "!", false),
            ("bob", "", false),
            ("carol", "garbage", false),
            ("dave", "x", false),
            ("nobody", "secret-1", false),
        ];
        for (user, pw, want) in cases {
            assert_eq!(db.check_password(user, pw), want, "{user} {pw}");
        }
    }

    #[test]
    fn argon2id_hash_verifies() {
        let params = argon2::Params::new(64, 1, 1, None).unwrap();
        let argon = Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let hash = argon.hash_password(b"hunter22").unwrap().to_string();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        let text = format!("{{\n  \"alice\": {}\n}}\n", json_string(&hash));
        let db = load_text(&text).unwrap();
        assert!(db.check_password("alice", "hunter22"));
        assert!(!db.check_password("alice", "hunter23"));
    }

    #[test]
    fn chasquid_style_scrypt_verifies() {
        // chasquid stores logN=14, r=8, p=1, a 16-byte salt and a 32-byte key; converted to PHC
        // these are `ln=14,r=8,p=1` with unpadded B64 salt and hash. Same shape, cheaper ln.
        let salt = [7u8; 16];
        let params = scrypt::Params::new(10, 8, 1).unwrap();
        let mut key = [0u8; 32];
        scrypt::scrypt(b"chasquid-pw", &salt, &params, &mut key).unwrap();
        let phc = PasswordHash {
            algorithm: scrypt::phc::ALG_ID,
            version: None,
            params: (&params).try_into().unwrap(),
            salt: Some(scrypt::phc::Salt::new(&salt).unwrap()),
            hash: Some(scrypt::phc::Output::new(&key).unwrap()),
        };
        let text = phc.to_string();
        assert!(text.starts_with("$scrypt$ln=10,r=8,p=1$"), "{text}");
        assert!(verify_hash(&text, "chasquid-pw"));
        assert!(!verify_hash(&text, "chasquid-pW"));
    }

    #[test]
    fn parse_is_load_without_the_file() {
        let path = Path::new("/cfg/domains/example.test/users");
        let db = UserDb::parse("{\n  \"bob\": \"!\"\n}\n", path).unwrap();
        assert_eq!(db.path(), path);
        assert_eq!(db.get("bob"), Some(&Credential::ReceiveOnly));
        assert!(UserDb::parse(" \n", path).unwrap().names().is_empty());
        let err = UserDb::parse("{\n  \"Bob\": \"!\"\n}\n", path).unwrap_err();
        assert!(matches!(err, UserDbError::Parse { line: 2, .. }), "{err}");
        assert!(
            err.to_string()
                .starts_with("/cfg/domains/example.test/users:2: ")
        );
    }

    #[test]
    fn strength_table() {
        let cases: &[(&str, &str, bool)] = &[
            ("", "alice@example.com", false),
            ("short", "alice@example.com", false),
            ("1234567", "alice@example.com", false),
            ("ñññññññ", "alice@example.com", false),
            ("aaaaaaaa", "alice@example.com", false),
            ("ALICE@EXAMPLE.COM", "alice@example.com", false),
            ("alicealice", "alicealice@example.com", false),
            ("AliceAlice", "alicealice", false),
            ("alicealice", "alicealice@example.com", false),
            ("correct horse", "alice@example.com", true),
            ("12345678", "alice@example.com", true),
            ("ñandú-azul", "alice@example.com", true),
            ("alicealice@example.com", "alicealice", true),
        ];
        for (pw, user, ok) in cases {
            assert_eq!(check_strength(pw, user).is_ok(), *ok, "{pw:?} for {user:?}");
        }
    }
}
