//! Users file (`userdb::UserDb::parse`, SPEC §5). Invalid UTF-8 is replaced, so every input
//! reaches the parser. Passwords are never checked here: a fuzzed hash may ask for scrypt's
//! maximum accepted cost (1 GiB), which is the point of those caps, not a parser bug.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use tambo::addr::LocalPart;
use tambo::userdb::{Credential, UserDb, UserDbError};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let path = Path::new("domains/example.test/users");
    let db = match UserDb::parse(&text, path) {
        Ok(db) => db,
        Err(e) => {
            // The error the operator sees names the file and fits on one line.
            let msg = e.to_string();
            assert!(msg.starts_with("domains/example.test/users:"), "{msg}");
            assert!(!msg.contains('\n'), "{msg:?}");
            if let UserDbError::Parse { line, .. } = e {
                let lines = text.matches('\n').count() + 1;
                assert!(line >= 1 && line <= lines, "line {line} of {lines}");
            }
            return;
        }
    };
    assert_eq!(db.path(), path);
    let names = db.names();
    assert!(
        names.windows(2).all(|w| w[0] < w[1]),
        "names not sorted: {names:?}"
    );
    for name in &names {
        // Stored normalised: a valid, lower-case local part.
        let Ok(local) = LocalPart::parse(name) else {
            panic!("user {name:?} is not a local part");
        };
        assert_eq!(local.lowercase().as_str(), name);
        assert!(db.contains(name));
        if let Some(Credential::Hash(h)) = db.get(name) {
            assert!(
                h.starts_with("$scrypt$") || h.starts_with("$argon2id$"),
                "{h:?}"
            );
        }
    }
    // What `save` would write (one "user": "value" line each) parses back to the same users.
    let lines: Vec<String> = names
        .iter()
        .map(|n| {
            let value = db.get(n).map_or("", Credential::as_str);
            format!("  {}: {}", json(n), json(value))
        })
        .collect();
    let again = format!("{{\n{}\n}}\n", lines.join(",\n"));
    let Ok(db2) = UserDb::parse(&again, path) else {
        panic!("saved form does not parse: {again}");
    };
    assert_eq!(db2.names(), names);
    for name in &names {
        assert_eq!(db2.get(name), db.get(name));
    }
});

fn json(s: &str) -> String {
    // Serialising a &str cannot fail.
    serde_json::to_string(s).unwrap_or_default()
}
