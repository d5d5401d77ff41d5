//! chasquid's `domains/<domain>/users` (`internal/userdb/userdb.proto`, protobuf text) to
//! tambo's users file (SPEC §5): scrypt parameters become a PHC string our userdb verifies,
//! `denied` users become receive-only `"!"`, plain-text passwords get hashed.

use super::report::Report;
use super::textproto::{self, Field, ParseError};
use crate::addr::LocalPart;
use crate::aliases::Normalization;
use crate::userdb::{self, Credential};
use scrypt::password_hash::phc::{Output, PasswordHash, Salt};
use std::collections::BTreeMap;

/// chasquid's `Scrypt` message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScryptHash {
    pub log_n: u64,
    pub r: i64,
    pub p: i64,
    pub key_len: i64,
    pub salt: Vec<u8>,
    pub encrypted: Vec<u8>,
}

/// chasquid's `Password` message: a oneof, maybe unset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Password {
    Scrypt(ScryptHash),
    Plain(Vec<u8>),
    Denied,
    /// No scheme: chasquid lets nobody log in.
    Unset,
}

/// One `users { key: ... value: ... }` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub line: usize,
    pub password: Password,
}

/// tambo's userdb verification bounds (`userdb::MAX_SCRYPT_*`), so that a converted hash is
/// one it will check rather than call malformed.
const MAX_LOG_N: u64 = 20;
const MAX_R: i64 = 32;
const MAX_P: i64 = 16;
const MAX_MEMORY: u64 = 1 << 30;

/// Parses the whole file (chasquid fails on unknown fields, so do we).
pub fn parse(text: &[u8]) -> Result<Vec<Entry>, ParseError> {
    textproto::parse(text)?
        .iter()
        .map(|f| match f.name.as_str() {
            "users" => entry(f),
            other => Err(unknown(f, other, "users")),
        })
        .collect()
}

fn unknown(f: &Field, name: &str, expected: &str) -> ParseError {
    ParseError {
        line: f.line,
        msg: format!("unknown field {name:?} (expected {expected})"),
    }
}

fn once<T>(slot: &mut Option<T>, f: &Field, value: T) -> Result<(), ParseError> {
    if slot.is_some() {
        return Err(ParseError {
            line: f.line,
            msg: format!("{:?} appears twice", f.name),
        });
    }
    *slot = Some(value);
    Ok(())
}

fn entry(f: &Field) -> Result<Entry, ParseError> {
    let (mut name, mut password) = (None, None);
    for field in f.message()? {
        match field.name.as_str() {
            "key" => once(&mut name, field, field.string()?)?,
            "value" => once(&mut password, field, password_of(field)?)?,
            other => return Err(unknown(field, other, "key or value")),
        }
    }
    Ok(Entry {
        // A map entry without a key has the empty key, which no user name can be.
        name: name.unwrap_or_default(),
        line: f.line,
        password: password.unwrap_or(Password::Unset),
    })
}

fn password_of(f: &Field) -> Result<Password, ParseError> {
    let mut scheme = None;
    for field in f.message()? {
        let p = match field.name.as_str() {
            "scrypt" => Password::Scrypt(scrypt_of(field)?),
            "plain" => Password::Plain(plain_of(field)?),
            "denied" => {
                if let Some(inner) = field.message()?.first() {
                    return Err(unknown(inner, &inner.name, "nothing"));
                }
                Password::Denied
            }
            other => return Err(unknown(field, other, "scrypt, plain or denied")),
        };
        if scheme.is_some() {
            return Err(ParseError {
                line: field.line,
                msg: "more than one password scheme for one user".into(),
            });
        }
        scheme = Some(p);
    }
    Ok(scheme.unwrap_or(Password::Unset))
}

fn scrypt_of(f: &Field) -> Result<ScryptHash, ParseError> {
    let mut h = ScryptHash::default();
    for field in f.message()? {
        match field.name.as_str() {
            "logN" => {
                h.log_n = u64::try_from(field.int()?).map_err(|_| ParseError {
                    line: field.line,
                    msg: "\"logN\": expected a non-negative integer".into(),
                })?;
            }
            "r" => h.r = field.int()?,
            "p" => h.p = field.int()?,
            "keyLen" => h.key_len = field.int()?,
            "salt" => h.salt = field.bytes()?.to_vec(),
            "encrypted" => h.encrypted = field.bytes()?.to_vec(),
            other => return Err(unknown(field, other, "logN, r, p, keyLen, salt, encrypted")),
        }
    }
    Ok(h)
}

fn plain_of(f: &Field) -> Result<Vec<u8>, ParseError> {
    let mut password = Vec::new();
    for field in f.message()? {
        match field.name.as_str() {
            "password" => password = field.bytes()?.to_vec(),
            other => return Err(unknown(field, other, "password")),
        }
    }
    Ok(password)
}

/// The PHC string for chasquid's scrypt parameters: `$scrypt$ln=N,r=R,p=P$<salt>$<hash>`,
/// salt and hash in unpadded standard Base64 of the raw bytes, as the scrypt crate verifies.
pub fn to_phc(h: &ScryptHash) -> Result<String, String> {
    if !(1..=MAX_LOG_N).contains(&h.log_n)
        || !(1..=MAX_R).contains(&h.r)
        || !(1..=MAX_P).contains(&h.p)
    {
        return Err(format!(
            "scrypt cost logN={} r={} p={} is outside what tambo verifies (logN 1-{MAX_LOG_N}, r 1-{MAX_R}, p 1-{MAX_P})",
            h.log_n, h.r, h.p
        ));
    }
    // Bounded above: at most 128 * 32 << 20.
    if (128 * h.r as u64) << h.log_n > MAX_MEMORY {
        return Err(format!(
            "scrypt logN={} r={} needs more than 1 GiB",
            h.log_n, h.r
        ));
    }
    if usize::try_from(h.key_len).ok() != Some(h.encrypted.len()) {
        return Err(format!(
            "keyLen {} but the stored hash has {} bytes",
            h.key_len,
            h.encrypted.len()
        ));
    }
    // Within the bounds checked above, so the casts cannot truncate.
    let params = scrypt::Params::new(h.log_n as u8, h.r as u32, h.p as u32)
        .map_err(|e| format!("scrypt parameters: {e}"))?;
    let salt = Salt::new(&h.salt).map_err(|e| {
        format!(
            "a salt of {} bytes (tambo takes 8 to 48): {e}",
            h.salt.len()
        )
    })?;
    let hash = Output::new(&h.encrypted).map_err(|e| {
        format!(
            "a hash of {} bytes (tambo takes 10 to 64): {e}",
            h.encrypted.len()
        )
    })?;
    let phc = PasswordHash {
        algorithm: scrypt::phc::ALG_ID,
        version: None,
        params: (&params)
            .try_into()
            .map_err(|e| format!("scrypt parameters: {e}"))?,
        salt: Some(salt),
        hash: Some(hash),
    };
    Ok(phc.to_string())
}

/// Converts one domain's entries; `file` names it in the report (`domains/x/users`).
/// Every user keeps a mailbox: one whose password cannot be carried over becomes
/// receive-only, so mail to it does not start bouncing.
pub fn convert(
    entries: &[Entry],
    norm: &Normalization,
    file: &str,
    report: &mut Report,
) -> BTreeMap<String, Credential> {
    let mut users: BTreeMap<String, Credential> = BTreeMap::new();
    let mut from: BTreeMap<String, String> = BTreeMap::new();
    for e in entries {
        let what = format!("{file}: {}", e.name);
        let key = match LocalPart::parse(&e.name) {
            Ok(local) => local
                .normalize(&norm.drop_characters, &norm.suffix_separators)
                .as_str()
                .to_string(),
            Err(err) => {
                report.not_converted(what, format!("line {}: {err}", e.line));
                continue;
            }
        };
        if let Some(first) = from.get(&key).filter(|first| **first != e.name) {
            let why =
                format!("same tambo user {key:?} as {first:?} once normalised; kept {first:?}");
            report.not_converted(what, why);
            continue;
        }
        let renamed = if key == e.name {
            String::new()
        } else {
            format!(", stored as {key:?} (tambo stores users normalised)")
        };
        let credential = credential(&e.password, &what, &renamed, report);
        from.insert(key.clone(), e.name.clone());
        // chasquid's map: a later entry for the same user replaces the earlier one.
        users.insert(key, credential);
    }
    users
}

fn credential(p: &Password, what: &str, renamed: &str, report: &mut Report) -> Credential {
    let receive_only = |report: &mut Report, why: String| {
        report.not_converted(
            format!("{what}: password"),
            format!(
                "{why}; kept as receive-only \"!\"{renamed}: set a new password with util user-add"
            ),
        );
        Credential::ReceiveOnly
    };
    match p {
        Password::Scrypt(h) => match to_phc(h) {
            Ok(phc) => {
                let detail = format!(
                    "scrypt logN={} r={} p={} -> PHC $scrypt${renamed}",
                    h.log_n, h.r, h.p
                );
                report.converted(what, detail);
                Credential::Hash(phc)
            }
            Err(why) => receive_only(report, why),
        },
        Password::Plain(bytes) => match std::str::from_utf8(bytes) {
            Ok(pw) => {
                report.converted(
                    what,
                    format!("plain-text password, now hashed with scrypt{renamed}"),
                );
                Credential::Hash(userdb::hash_password(pw))
            }
            Err(_) => receive_only(report, "a plain-text password that is not UTF-8".into()),
        },
        Password::Denied => {
            let detail =
                format!("denied -> receive-only \"!\" (receives mail, cannot log in){renamed}");
            report.converted(what, detail);
            Credential::ReceiveOnly
        }
        Password::Unset => {
            let detail = format!(
                "no password scheme (chasquid let nobody log in) -> receive-only \"!\"{renamed}"
            );
            report.converted(what, detail);
            Credential::ReceiveOnly
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::import_chasquid::report::Outcome;
    use crate::userdb::UserDb;

    /// chasquid's own shape (logN=14, r=8, p=1, keyLen=32, 16-byte salt), cheaper logN.
    fn chasquid_hash(password: &[u8], log_n: u8, salt: &[u8]) -> ScryptHash {
        let params = scrypt::Params::new(log_n, 8, 1).unwrap();
        let mut key = vec![0u8; 32];
        scrypt::scrypt(password, salt, &params, &mut key).unwrap();
        ScryptHash {
            log_n: log_n.into(),
            r: 8,
            p: 1,
            key_len: 32,
            salt: salt.to_vec(),
            encrypted: key,
        }
    }

    /// Escapes bytes as Go's prototext does (raw printable ASCII, `\x..` otherwise).
    fn go_bytes(b: &[u8]) -> String {
        b.iter()
            .map(|&c| match c {
                b'"' => "\\\"".to_string(),
                b'\\' => "\\\\".to_string(),
                0x20..=0x7e => char::from(c).to_string(),
                _ => format!("\\x{c:02x}"),
            })
            .collect()
    }

    fn userdb_text(name: &str, h: &ScryptHash) -> String {
        format!(
            "users: {{\n  key: \"{name}\"\n  value: {{\n    scrypt: {{\n      logN: {}\n      r: {}\n      p: {}\n      keyLen: {}\n      salt: \"{}\"\n      encrypted: \"{}\"\n    }}\n  }}\n}}\n",
            h.log_n,
            h.r,
            h.p,
            h.key_len,
            go_bytes(&h.salt),
            go_bytes(&h.encrypted)
        )
    }

    fn norm() -> Normalization {
        Normalization {
            drop_characters: ".".into(),
            suffix_separators: "+".into(),
        }
    }

    /// The converted users, saved and loaded through tambo's userdb.
    fn through_userdb(users: &BTreeMap<String, Credential>) -> UserDb {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("users");
        let mut db = UserDb::load(&path).unwrap();
        for (k, c) in users {
            db.set(k, c.clone());
        }
        db.save().unwrap();
        UserDb::load(&path).unwrap()
    }

    #[test]
    fn chasquid_scrypt_text_verifies_in_userdb() {
        // Salts with a quote, a backslash, NUL and high bytes: every escape Go may write.
        let salt = b"\"\\\x00\xd7\x9e\xff salt!\x7f\x01";
        let h = chasquid_hash(b"s3cret pass", 6, salt);
        let text = userdb_text("alice", &h);
        let entries = parse(text.as_bytes()).unwrap();
        assert_eq!(entries[0].password, Password::Scrypt(h.clone()));
        let mut report = Report::default();
        let users = convert(&entries, &norm(), "domains/x/users", &mut report);
        let db = through_userdb(&users);
        assert!(db.check_password("alice", "s3cret pass"));
        assert!(!db.check_password("alice", "s3cret pasS"));
        let phc = db.get("alice").unwrap().as_str().to_string();
        assert!(phc.starts_with("$scrypt$ln=6,r=8,p=1$"), "{phc}");
        assert_eq!(report.count(Outcome::Converted), 1);
    }

    #[test]
    fn schemes_and_names_table() {
        let good = chasquid_hash(b"pw", 4, &[1; 16]);
        let mut wrong_len = good.clone();
        wrong_len.key_len = 64;
        let mut costly = good.clone();
        costly.log_n = 24;
        let mut short_salt = good.clone();
        short_salt.salt = vec![1; 4];
        let text = format!(
            "{}{}{}{}{}",
            userdb_text("a", &good),
            userdb_text("b", &wrong_len),
            userdb_text("c", &costly),
            userdb_text("d", &short_salt),
            concat!(
                "users { key: \"John.Doe\" value { denied {} } }\n",
                "users { key: \"johndoe\" value { denied {} } }\n",
                "users { key: \"plain\" value { plain { password: \"hunter22\" } } }\n",
                "users { key: \"badplain\" value { plain { password: \"\\xff\" } } }\n",
                "users { key: \"unset\" value { } }\n",
                "users { key: \"no/slash\" value { denied {} } }\n",
            )
        );
        let entries = parse(text.as_bytes()).unwrap();
        let mut report = Report::default();
        let users = convert(&entries, &norm(), "f", &mut report);
        let db = through_userdb(&users);
        assert!(db.check_password("a", "pw"));
        assert!(db.check_password("plain", "hunter22"));
        for name in ["b", "c", "d", "johndoe", "badplain", "unset"] {
            assert_eq!(db.get(name), Some(&Credential::ReceiveOnly), "{name}");
        }
        assert_eq!(db.names().len(), 8, "{:?}", db.names());
        let text = report.to_string();
        for want in [
            "not converted: f: b: password: keyLen 64 but the stored hash has 32 bytes",
            "not converted: f: c: password: scrypt cost logN=24",
            "not converted: f: d: password: a salt of 4 bytes",
            "converted: f: John.Doe: denied -> receive-only \"!\" (receives mail, cannot log in), stored as \"johndoe\"",
            "not converted: f: johndoe: same tambo user \"johndoe\" as \"John.Doe\"",
            "converted: f: plain: plain-text password, now hashed with scrypt",
            "not converted: f: badplain: password: a plain-text password that is not UTF-8",
            "converted: f: unset: no password scheme",
            "not converted: f: no/slash: line ",
        ] {
            assert!(text.contains(want), "{want}\nnot in:\n{text}");
        }
    }

    #[test]
    fn parse_errors_table() {
        let cases: &[(&str, usize, &str)] = &[
            ("user: {}", 1, "unknown field \"user\""),
            (
                "users { key: \"a\" key: \"b\" }",
                1,
                "\"key\" appears twice",
            ),
            (
                "users {\n value { scrypt {} plain {} } }",
                2,
                "more than one password scheme",
            ),
            ("users {\n value { md5 {} } }", 2, "unknown field \"md5\""),
            (
                "users { value { scrypt {\n logN: -1 } } }",
                2,
                "non-negative",
            ),
            (
                "users { value { scrypt { salt: 5 } } }",
                1,
                "expected a string",
            ),
            (
                "users { value { denied { x: 1 } } }",
                1,
                "unknown field \"x\"",
            ),
            ("users: \"alice\"", 1, "expected a message"),
        ];
        for (text, line, msg) in cases {
            let err = parse(text.as_bytes()).unwrap_err();
            assert_eq!(err.line, *line, "{text}: {err}");
            assert!(err.msg.contains(msg), "{text}: {err}");
        }
    }

    #[test]
    fn empty_file_has_no_users() {
        assert_eq!(parse(b"").unwrap(), []);
        assert_eq!(parse(b"# nothing\n").unwrap(), []);
    }
}
