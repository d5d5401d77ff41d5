//! Aliases file (`aliases::AliasFile::parse`), chasquid syntax. Invalid UTF-8 is replaced,
//! as every input then reaches the parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use tambo::addr::Domain;
use tambo::aliases::AliasFile;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // A constant that is a valid domain.
    let Ok(domain) = Domain::parse("example.test") else {
        panic!("example.test must parse");
    };
    if let Ok(file) = AliasFile::parse(Path::new("aliases"), &text, &domain) {
        // Every parsed key can be looked up again, and keys are unique.
        let mut keys = std::collections::HashSet::new();
        for alias in file.iter() {
            assert!(
                file.get(&alias.key).is_some(),
                "key {:?} not found",
                alias.key
            );
            assert!(keys.insert(alias.key.clone()), "key {:?} twice", alias.key);
        }
        assert_eq!(keys.len(), file.len());
    }
});
