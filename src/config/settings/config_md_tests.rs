//! `docs/config.md` against the code: its key table lists exactly the keys `tambo.json`
//! accepts, with the defaults `util print-config` prints; the specification's keys it says are
//! not accepted are refused; and its example files load. A failure names what to fix.

use super::*;
use crate::addr::Domain;
use crate::aliases::AliasFile;
use crate::config::access::AccessRules;
use crate::userdb::UserDb;

const DOC: &str = include_str!("../../../docs/config.md");
const KEY_TABLE_HEADER: &str = "| key | type | default | meaning |";
const NOT_ACCEPTED_HEADER: &str = "| key | in this build |";
/// Keys whose default depends on the machine: the table says so in words.
const MACHINE_DEFAULTS: &[&str] = &["hostname"];

fn out_of_date(problem: &str) -> ! {
    panic!("docs/config.md is out of date: {problem}")
}

/// The cells of a Markdown table row; a `|` inside a code span does not split.
fn cells(row: &str) -> Vec<String> {
    let inner = row.trim().trim_start_matches('|').trim_end_matches('|');
    let mut cells = vec![String::new()];
    let mut in_code = false;
    for c in inner.chars() {
        match c {
            '`' => in_code = !in_code,
            '|' if !in_code => {
                cells.push(String::new());
                continue;
            }
            _ => {}
        }
        if let Some(cell) = cells.last_mut() {
            cell.push(c);
        }
    }
    cells.iter().map(|c| c.trim().to_string()).collect()
}

/// The rows (cells) of the table under `header`, the separator line skipped.
fn table(header: &str) -> Vec<Vec<String>> {
    let mut lines = DOC.lines().skip_while(|l| l.trim() != header);
    if lines.next().is_none() {
        out_of_date(&format!("no table with the header {header:?}"));
    }
    lines
        .skip(1)
        .take_while(|l| l.trim_start().starts_with('|'))
        .map(cells)
        .collect()
}

/// The text of the first code span of a cell, if any.
fn code_span(cell: &str) -> Option<&str> {
    let (_, rest) = cell.split_once('`')?;
    rest.split_once('`').map(|(code, _)| code)
}

/// A key cell: exactly one code span, the key.
fn key_of(cell: &str) -> &str {
    match code_span(cell) {
        Some(key) if cell == format!("`{key}`") => key,
        _ => out_of_date(&format!("key cell {cell:?} is not one `key`")),
    }
}

#[test]
fn docs_config_md_is_out_of_date_when_keys_or_defaults_differ() {
    // As `util print-config` prints them; an empty config folder keeps `data_dir` relative.
    let defaults = Settings::defaults(PathBuf::new()).to_json();
    let rows = table(KEY_TABLE_HEADER);
    let mut documented: Vec<&str> = Vec::new();
    for row in &rows {
        if row.len() != 4 {
            out_of_date(&format!("key table row with {} cells: {row:?}", row.len()));
        }
        let key = key_of(&row[0]);
        if documented.contains(&key) {
            out_of_date(&format!("key `{key}` appears twice in the key table"));
        }
        documented.push(key);
        let Some(code_default) = defaults.get(key) else {
            out_of_date(&format!(
                "the key table names `{key}`, which tambo.json does not accept"
            ));
        };
        if MACHINE_DEFAULTS.contains(&key) {
            continue;
        }
        let Some(doc_text) = code_span(&row[2]) else {
            out_of_date(&format!("the default of `{key}` is not written as `json`"));
        };
        let doc_default: Value = serde_json::from_str(doc_text).unwrap_or_else(|e| {
            out_of_date(&format!(
                "the default of `{key}`, {doc_text}, is not JSON: {e}"
            ))
        });
        if &doc_default != code_default {
            out_of_date(&format!(
                "the default of `{key}` is {doc_default} there, {code_default} in the code"
            ));
        }
    }
    for key in KEYS {
        if !documented.contains(key) {
            out_of_date(&format!(
                "tambo.json accepts `{key}`, which the key table does not list"
            ));
        }
    }
}

/// Every key of SPEC §3 is accepted since `acme`, `http_listen` and `https_listen` came in
/// (issue 20), so the page has no table of keys not accepted; should one come back, each of
/// its keys must still be refused.
#[test]
fn docs_config_md_is_out_of_date_when_a_key_it_calls_unaccepted_is_accepted() {
    if !DOC.lines().any(|l| l.trim() == NOT_ACCEPTED_HEADER) {
        return;
    }
    let rows = table(NOT_ACCEPTED_HEADER);
    assert!(!rows.is_empty(), "the table of keys not accepted is empty");
    for row in &rows {
        let key = key_of(&row[0]);
        let text = format!("{{\"{key}\": null}}");
        match Settings::parse(&text, PathBuf::from("/config")) {
            Err(e) if e.0.contains("unknown key") => {}
            other => out_of_date(&format!(
                "it says `{key}` is not accepted, but loading it gives {other:?}"
            )),
        }
    }
}

/// Fenced blocks whose info string names the file they show (```` ```json tambo.json ````):
/// (file kind, text).
fn examples() -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let mut lines = DOC.lines();
    while let Some(line) = lines.next() {
        let Some(info) = line.trim_start().strip_prefix("```") else {
            continue;
        };
        let body: Vec<&str> = lines
            .by_ref()
            .take_while(|l| !l.trim_start().starts_with("```"))
            .collect();
        if let Some(kind) = info.split_whitespace().nth(1) {
            out.push((kind, body.join("\n") + "\n"));
        }
    }
    out
}

#[test]
fn docs_config_md_is_out_of_date_when_an_example_does_not_load() {
    let domain = Domain::parse("example.org").unwrap();
    let path = Path::new("docs/config.md");
    let examples = examples();
    for kind in ["tambo.json", "users", "aliases", "access"] {
        assert!(
            examples.iter().any(|(k, _)| *k == kind),
            "docs/config.md is out of date: no checked example of {kind}"
        );
    }
    for (kind, text) in examples {
        let loaded = match kind {
            "tambo.json" => Settings::parse(&text, PathBuf::from("/config"))
                .map(drop)
                .map_err(|e| e.to_string()),
            "users" => UserDb::parse(&text, path)
                .map(drop)
                .map_err(|e| e.to_string()),
            "aliases" => AliasFile::parse(path, &text, &domain)
                .map(drop)
                .map_err(|e| e.to_string()),
            "access" => AccessRules::parse(path, &text)
                .map(drop)
                .map_err(|e| e.to_string()),
            other => out_of_date(&format!("an example names {other:?}, which no test loads")),
        };
        if let Err(e) = loaded {
            out_of_date(&format!("its {kind} example does not load: {e}\n{text}"));
        }
    }
}
