//! Cross-check with Dovecot: the fixtures of `testdata/` go into a Maildir, Dovecot's IMAP
//! server runs on it (preauthenticated, on stdin and stdout, with a configuration of its
//! own in a temporary folder) and answers FETCH and SEARCH commands; its answers are
//! compared with [`summarize`], [`section`] and [`matches`] value by value (a string is
//! equal whether quoted or a literal). The differences we keep on purpose are listed in
//! [`KNOWN`], with the reason.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::tests::{
    Reader, Value, all_fixtures, all_match, fetch_spec, search_keys, value_of, with_literals,
};
use super::*;
use crate::testsupport::DOVECOT_IMAP;

/// Sections fetched from every fixture (what follows `BODY.PEEK[`).
const SECTIONS: &[&str] = &[
    "]",
    "]<0.20>",
    "HEADER]",
    "TEXT]",
    "TEXT]<3.7>",
    "1]",
    "1]<2.5>",
    "2]",
    "3]",
    "1.MIME]",
    "2.MIME]",
    "1.HEADER]",
    "2.HEADER]",
    "2.TEXT]",
    "1.1]",
    "1.2]",
    "2.1]",
    "2.2.MIME]",
    "3.1]",
    "HEADER.FIELDS (Subject FROM x-missing)]",
    "HEADER.FIELDS.NOT (subject Received DATE)]",
    "2.HEADER.FIELDS (subject)]",
    "HEADER.FIELDS (date message-id)]<4.30>",
];

/// SEARCH criteria run on the whole mailbox (`«text»` is sent as a literal).
const SEARCHES: &[&str] = &[
    "FROM joe",
    "FROM example.org",
    "FROM \"\"",
    "FROM «andré»",
    "FROM «müller»",
    "TO «Jørn»",
    "TO friends",
    "TO undisclosed",
    "CC \"\"",
    "BCC bcc",
    "SUBJECT «café»",
    "SUBJECT «réunion demain»",
    "SUBJECT \"folded subject\"",
    "SUBJECT erste",
    "SUBJECT «zweite rechnung für»",
    "SUBJECT \"second subject\"",
    "SUBJECT spaces",
    "TO second",
    "HEADER Subject «rechnung»",
    "HEADER Message-ID \"<\"",
    "HEADER X-Empty \"\"",
    "BODY hello",
    "BODY «café»",
    "BODY JVBERi0",
    "BODY Content-Type",
    "TEXT Content-Type",
    "TEXT «réunion»",
    "BODY «réunion au café»",
    "SENTON 7-Dec-2026",
    "SENTBEFORE 8-Dec-2026",
    "SENTSINCE 9-Dec-2026",
];

/// Differences kept on purpose: (fixture, item, why).
const KNOWN: &[(&str, &str, &str)] = &[
    (
        "20-invalid-content-type",
        "BODYSTRUCTURE",
        "Dovecot shows an unparsable Content-Type as (\"\" \"\" NIL ...); we use RFC 2045 §5.2's \
         default, text/plain; charset=us-ascii",
    ),
    ("20-invalid-content-type", "BODY", "same"),
    (
        "34-content-type-no-subtype",
        "BODYSTRUCTURE",
        "Dovecot shows `Content-Type: text` as (\"text\" \"\" ...); we use text/plain (RFC 2045 §5.2)",
    ),
    ("34-content-type-no-subtype", "BODY", "same"),
    (
        "28-nested-message-edge",
        "BODY[2.HEADER.FIELDS (subject)]",
        "the message inside part 2 has a header ended by a boundary line; Dovecot's header \
         filter reads on past that line to the next empty line, we stop at the boundary",
    ),
];

#[test]
fn same_as_dovecot() {
    if !DOVECOT_IMAP.available() {
        return;
    }
    let fixtures = all_fixtures();
    let dir = tempfile::tempdir().expect("temp dir");
    let output = run_dovecot(dir.path(), &fixtures);
    let answers = parse_answers(&output);
    let mut differences = Vec::new();
    let mut known_seen = Vec::new();
    let mut differ = |name: &str, item: &str, ours: String, theirs: String| match KNOWN
        .iter()
        .position(|(n, i, _)| *n == name && *i == item)
    {
        Some(k) => known_seen.push(k),
        None => differences.push(format!(
            "{name} {item}:\n  ours:    {ours}\n  Dovecot: {theirs}"
        )),
    };
    for (i, (name, message)) in fixtures.iter().enumerate() {
        let seq = i as u32 + 1;
        let s = summarize(message);
        let size = Value::Number(crlf_size(message));
        let items = [
            ("RFC822.SIZE", size),
            ("ENVELOPE", value_of(&s.envelope).expect("our ENVELOPE")),
            ("BODY", value_of(&s.body).expect("our BODY")),
            (
                "BODYSTRUCTURE",
                value_of(&s.bodystructure).expect("our BODYSTRUCTURE"),
            ),
        ];
        for (item, ours) in items {
            let theirs = answers.item(seq, item);
            if theirs != Some(&ours) {
                differ(name, item, show(&ours), format!("{theirs:?}"));
            }
        }
        for spec in SECTIONS {
            let (sec, partial) = fetch_spec(spec);
            let ours = section(message, sec.as_ref(), partial);
            let theirs = match answers.item(seq, &echoed_name(spec)) {
                Some(Value::Str(s)) => s.clone(),
                Some(Value::Nil) => Vec::new(),
                other => panic!("{name} BODY[{spec}: {other:?}"),
            };
            if ours != theirs {
                let show = |b: &[u8]| format!("{:?}", String::from_utf8_lossy(b));
                differ(name, &format!("BODY[{spec}"), show(&ours), show(&theirs));
            }
        }
    }
    for (k, criteria) in SEARCHES.iter().enumerate() {
        let keys = search_keys(criteria);
        let ours: Vec<u32> = (1..)
            .zip(&fixtures)
            .filter(|(_, (_, m))| all_match(m, &keys))
            .map(|(seq, _)| seq)
            .collect();
        let theirs = answers
            .searches
            .get(&format!("q{k}"))
            .cloned()
            .unwrap_or_default();
        if ours != theirs {
            differ(
                "*",
                &format!("SEARCH {criteria}"),
                format!("{ours:?}"),
                format!("{theirs:?}"),
            );
        }
    }
    for (k, (name, item, _)) in KNOWN.iter().enumerate() {
        // A known difference that went away is to be taken off the list.
        assert!(
            known_seen.contains(&k),
            "{name} {item} is the same as Dovecot's now"
        );
    }
    assert!(
        differences.is_empty(),
        "{} differences:\n{}",
        differences.len(),
        differences.join("\n")
    );
}

/// Dovecot's whole answer to our commands.
fn run_dovecot(dir: &Path, fixtures: &[(String, Vec<u8>)]) -> Vec<u8> {
    let maildir = dir.join("Maildir");
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(maildir.join(sub)).expect("maildir");
    }
    // Dovecot numbers new mail in file name order.
    for (i, (_, message)) in fixtures.iter().enumerate() {
        let file = maildir.join("cur").join(format!("{:04}.fixture:2,", i + 1));
        std::fs::write(file, message).expect("fixture");
    }
    // Dovecot runs mail processes as neither root nor a system user: as root, nobody.
    // SAFETY: getuid/getgid cannot fail and take no arguments.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let (uid, gid) = if uid == 0 {
        chown_all(dir, 65534, 65534);
        (65534, 65534)
    } else {
        (uid, gid)
    };
    let conf = dir.join("dovecot.conf");
    let home = dir.display();
    let text = format!(
        "base_dir = {home}/run\nstate_dir = {home}/state\nlog_path = /dev/stderr\n\
         mail_location = maildir:{home}/Maildir:INDEX=MEMORY\nssl = no\nprotocols = imap\n\
         listen =\nmail_uid = {uid}\nmail_gid = {gid}\nfirst_valid_uid = 1\n\
         first_valid_gid = 1\n"
    );
    std::fs::write(&conf, text).expect("dovecot.conf");
    // Dovecot runs pipelined commands side by side: one FETCH for everything (its items
    // name their section), and ESEARCH, whose answers name their command.
    let mut commands = String::from("a SELECT INBOX\r\n");
    commands.push_str("f FETCH 1:* (RFC822.SIZE ENVELOPE BODY BODYSTRUCTURE");
    for spec in SECTIONS {
        commands.push_str(&format!(" BODY.PEEK[{spec}"));
    }
    commands.push_str(")\r\n");
    for (k, criteria) in SEARCHES.iter().enumerate() {
        let criteria = with_literals(criteria);
        commands.push_str(&format!(
            "q{k} SEARCH RETURN (ALL) CHARSET UTF-8 {criteria}\r\n"
        ));
    }
    commands.push_str("z LOGOUT\r\n");

    let mut child = Command::new(DOVECOT_IMAP.program)
        .arg("-c")
        .arg(&conf)
        .env_clear()
        .env("USER", "tambo-test")
        .env("HOME", dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start Dovecot's imap");
    // Both directions at once, or Dovecot blocks on a full pipe.
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || stdin.write_all(commands.as_bytes()));
    let drain = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut all = Vec::new();
            let _ = pipe.read_to_end(&mut all);
            all
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("stderr")));
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("Dovecot's imap did not finish in 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = writer.join();
    let (stdout, stderr) = (
        stdout.join().expect("stdout"),
        stderr.join().expect("stderr"),
    );
    assert!(
        stdout.windows(5).any(|w| w == b"z OK "),
        "Dovecot did not log out cleanly: {}\n{}",
        String::from_utf8_lossy(&stderr),
        String::from_utf8_lossy(&stdout)
    );
    stdout
}

fn chown_all(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown");
    if path.is_dir() {
        for entry in std::fs::read_dir(path).expect("read_dir") {
            chown_all(&entry.expect("entry").path(), uid, gid);
        }
    }
}

/// The name Dovecot gives the answer to `BODY.PEEK[spec`: `BODY[SPEC]<start>`.
fn echoed_name(spec: &str) -> String {
    let (section, partial) = spec.split_once(']').expect("spec ends its section with ]");
    let start = partial
        .strip_prefix('<')
        .and_then(|p| p.split_once('.'))
        .map(|(start, _)| format!("<{start}>"))
        .unwrap_or_default();
    format!("BODY[{}]{start}", section.to_uppercase())
}

/// Dovecot's answers: FETCH items by sequence number, SEARCH results by tag.
#[derive(Default)]
struct Answers {
    fetched: BTreeMap<u32, Vec<(String, Value)>>,
    searches: BTreeMap<String, Vec<u32>>,
}

impl Answers {
    fn item(&self, seq: u32, name: &str) -> Option<&Value> {
        let items = self.fetched.get(&seq)?;
        items.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }
}

/// Reads the untagged FETCH and ESEARCH responses; checks every command ended in OK.
fn parse_answers(output: &[u8]) -> Answers {
    let mut answers = Answers::default();
    let mut r = Reader::new(output);
    while r.peek().is_some() {
        if !r.eat(b"* ") {
            let tag = r.value().expect("tag");
            let line_start = r.pos;
            skip_line(&mut r);
            let status = String::from_utf8_lossy(&output[line_start..r.pos]);
            assert!(status.starts_with(" OK"), "{tag:?}{status}");
            continue;
        }
        match r.value().expect("untagged response") {
            Value::Number(seq) if r.eat(b" FETCH ") => {
                let Value::List(list) = r.value().expect("FETCH items") else {
                    panic!("FETCH without a list");
                };
                let items = answers.fetched.entry(seq as u32).or_default();
                for pair in list.chunks(2) {
                    match pair {
                        [Value::Atom(name), value] => items.push((name.clone(), value.clone())),
                        other => panic!("FETCH item {other:?}"),
                    }
                }
            }
            Value::Atom(a) if a == "ESEARCH" => {
                assert!(r.eat(b" (TAG "), "ESEARCH without a tag");
                let Ok(Value::Str(tag)) = r.value() else {
                    panic!("ESEARCH tag");
                };
                assert!(r.eat(b")"));
                let mut found = Vec::new();
                if r.eat(b" ALL ") {
                    let set = match r.value() {
                        Ok(Value::Atom(set)) => set,
                        Ok(Value::Number(n)) => n.to_string(),
                        other => panic!("ESEARCH ALL {other:?}"),
                    };
                    found = sequence_set(&set);
                }
                answers
                    .searches
                    .insert(String::from_utf8_lossy(&tag).into_owned(), found);
            }
            _ => {}
        }
        skip_line(&mut r);
    }
    answers
}

/// `1:3,5` → [1, 2, 3, 5].
fn sequence_set(set: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for range in set.split(',') {
        let (a, b) = range.split_once(':').unwrap_or((range, range));
        let (a, b): (u32, u32) = (a.parse().expect("number"), b.parse().expect("number"));
        out.extend(a.min(b)..=a.max(b));
    }
    out
}

/// Skips to after the next CRLF.
fn skip_line(r: &mut Reader<'_>) {
    while r.peek().is_some() && !r.eat(b"\r\n") {
        r.pos += 1;
    }
}

/// A value as IMAP text, for messages.
fn show(v: &Value) -> String {
    match v {
        Value::Nil => "NIL".into(),
        Value::Number(n) => n.to_string(),
        Value::Str(s) => format!("{:?}", String::from_utf8_lossy(s)),
        Value::Atom(a) => a.clone(),
        Value::List(items) => {
            let inner: Vec<String> = items.iter().map(show).collect();
            format!("({})", inner.join(" "))
        }
    }
}
