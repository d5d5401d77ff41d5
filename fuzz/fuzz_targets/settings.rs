//! `conf/tambo.json` (`config::settings::Settings::parse`, SPEC §3). Invalid UTF-8 is
//! replaced, so every input reaches the parser. What `util print-config` shows (`to_json`)
//! must parse back to the same settings, and every error is one line naming the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use tambo::config::settings::Settings;

const DIR: &str = "/config";

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let settings = match Settings::parse(&text, PathBuf::from(DIR)) {
        Ok(s) => s,
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.starts_with("/config/conf/tambo.json:"), "{msg}");
            assert!(!msg.contains('\n'), "{msg:?}");
            return;
        }
    };
    let mut shown = settings.to_json();
    // print-config hides the SRS secret behind a placeholder, which is not a valid secret.
    if let Some(map) = shown.as_object_mut() {
        map.remove("srs_secret");
    }
    let again = shown.to_string();
    let reparsed = match Settings::parse(&again, PathBuf::from(DIR)) {
        Ok(s) => s,
        Err(e) => panic!("print-config output does not parse: {e}\n{again}"),
    };
    let mut shown2 = reparsed.to_json();
    if let Some(map) = shown2.as_object_mut() {
        map.remove("srs_secret");
    }
    assert_eq!(shown, shown2);
    // The size in bytes is computed without overflow for any accepted value.
    assert!(settings.max_message_size() >= settings.max_message_size_mb);
});
