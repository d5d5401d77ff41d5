//! `dovecot-uidlist`: which UID each file has, sans I/O (Dovecot's maildir-uidlist.c).
//!
//! Version 3, Dovecot's since 1.1: a header `3 V<uidvalidity> N<nextuid> G<guid>` (more
//! `<key><value>` fields may follow), then one line per message, `<uid> [<key><value> ...]
//! :<base name>`, UIDs ascending. Record keys are upper-case letters (`S` size, `W` CRLF
//! size, `P` POP3 UIDL, `O` POP3 order, `G` GUID) and are kept as they are on rewrite.
//! Version 1 (`1 <uidvalidity> <nextuid>`, then `<uid> <file name>`) is Courier's
//! `courierimapuiddb`; it is read, and written back as version 3.
//!
//! New records are appended to the file in place (under the lock), so a reader may see a
//! last line still being written: a line without its newline is not taken.

/// A parsed uidlist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uidlist {
    pub version: u8,
    pub uidvalidity: u32,
    /// Never lower than the highest UID + 1.
    pub nextuid: u32,
    /// The folder's GUID (32 hex digits), `None` in version 1 files.
    pub guid: Option<String>,
    /// Header fields other than V, N and G, as they were (`"Xfoo Ybar"`).
    pub header_extra: String,
    /// Ascending UIDs.
    pub records: Vec<Record>,
}

/// One message: its UID, its other fields as they were (`"S123 W130"`, or empty), and the
/// base name of its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub uid: u32,
    pub fields: Box<str>,
    pub base: Box<str>,
}

/// What [`parse`] found.
#[derive(Debug)]
pub struct Parsed {
    pub list: Uidlist,
    /// Lines that were left out, with why: the file should be rewritten without them.
    pub problems: Vec<String>,
    /// The file ends without a newline (a record being appended, or a crash during one).
    pub torn_tail: bool,
}

impl Uidlist {
    /// An empty list for a new folder.
    pub fn new(uidvalidity: u32, guid: String) -> Uidlist {
        Uidlist {
            version: 3,
            uidvalidity,
            nextuid: 1,
            guid: Some(guid),
            header_extra: String::new(),
            records: Vec::new(),
        }
    }
}

/// Parses a uidlist. Fails only when the header is unusable (the file is then as good as
/// lost); bad record lines are left out and reported in [`Parsed::problems`].
pub fn parse(data: &[u8]) -> Result<Parsed, String> {
    let complete = data.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let torn_tail = complete < data.len();
    let mut lines = data[..complete].split(|&b| b == b'\n');
    let header = lines.next().filter(|l| !l.is_empty()).ok_or("no header")?;
    let header = std::str::from_utf8(header).map_err(|_| "header is not UTF-8")?;
    let mut list = parse_header(header)?;
    let mut problems = Vec::new();
    for (n, line) in lines.enumerate() {
        if line.is_empty() {
            continue; // the end of the data (split yields one empty piece after the last \n)
        }
        let parsed = std::str::from_utf8(line)
            .map_err(|_| "not UTF-8".to_string())
            .and_then(|l| parse_record(l, list.version));
        match parsed {
            Ok(record) => push_record(&mut list, record, n + 2, &mut problems),
            Err(why) => problems.push(format!("line {}: {why}", n + 2)),
        }
    }
    let next = list.records.last().map_or(0, |r| r.uid.saturating_add(1));
    list.nextuid = list.nextuid.max(next);
    Ok(Parsed {
        list,
        problems,
        torn_tail,
    })
}

fn parse_header(line: &str) -> Result<Uidlist, String> {
    let (version, rest) = line.split_once(' ').ok_or("bad header")?;
    let mut list = match version {
        "1" => {
            let mut numbers = rest.split(' ').map(str::parse::<u32>);
            let (Some(Ok(uidvalidity)), Some(Ok(nextuid))) = (numbers.next(), numbers.next())
            else {
                return Err("bad version 1 header".into());
            };
            Uidlist {
                version: 1,
                uidvalidity,
                nextuid,
                guid: None,
                header_extra: String::new(),
                records: Vec::new(),
            }
        }
        "3" => parse_v3_header(rest)?,
        other => return Err(format!("unsupported version {other:?}")),
    };
    if list.uidvalidity == 0 || list.nextuid == 0 {
        return Err("UIDVALIDITY or next UID is 0".into());
    }
    list.records.reserve(1024);
    Ok(list)
}

fn parse_v3_header(fields: &str) -> Result<Uidlist, String> {
    let (mut uidvalidity, mut nextuid, mut guid) = (0, 0, None);
    let mut extra: Vec<&str> = Vec::new();
    for field in fields.split(' ').filter(|f| !f.is_empty()) {
        // A key that is not ASCII has no value to split off: it is kept whole below.
        let value = field.get(1..).unwrap_or("");
        match field.as_bytes()[0] {
            b'V' => uidvalidity = value.parse().map_err(|_| format!("bad V{value}"))?,
            b'N' => nextuid = value.parse().map_err(|_| format!("bad N{value}"))?,
            b'G' if value.len() == 32 && value.bytes().all(|b| b.is_ascii_hexdigit()) => {
                guid = Some(value.to_string())
            }
            b'G' => return Err(format!("bad mailbox GUID {value:?}")),
            _ => extra.push(field),
        }
    }
    Ok(Uidlist {
        version: 3,
        uidvalidity,
        nextuid,
        guid,
        header_extra: extra.join(" "),
        records: Vec::new(),
    })
}

fn parse_record(line: &str, version: u8) -> Result<Record, String> {
    let (uid, rest) = line.split_once(' ').ok_or("no file name")?;
    let uid: u32 = uid.parse().map_err(|_| format!("bad UID {uid:?}"))?;
    if uid == 0 || uid == u32::MAX {
        return Err(format!("bad UID {uid}"));
    }
    let (fields, name) = if version == 1 {
        ("", rest)
    } else {
        let (fields, name) = rest.split_once(':').ok_or("no ':' before the file name")?;
        (fields.trim_end_matches(' '), name)
    };
    let name = super::filename::base(name);
    if name.is_empty() || name.contains('/') {
        return Err(format!("bad file name {name:?}"));
    }
    if fields
        .split(' ')
        .any(|f| !f.is_empty() && !f.as_bytes()[0].is_ascii_uppercase())
    {
        return Err(format!("bad fields {fields:?}"));
    }
    Ok(Record {
        uid,
        fields: fields.into(),
        base: name.into(),
    })
}

/// Adds a record in UID order; a UID not above the last one is a problem. A base name listed
/// twice (a file moved back after an expunge) is kept twice here: readers take the later
/// UID, as Dovecot does, and [`dedupe`] drops the earlier one before a rewrite.
fn push_record(list: &mut Uidlist, record: Record, line: usize, problems: &mut Vec<String>) {
    if list.records.last().is_some_and(|r| r.uid >= record.uid) {
        problems.push(format!("line {line}: UID {} out of order", record.uid));
        return;
    }
    list.records.push(record);
}

/// Drops earlier records of base names listed again; whether any were.
pub fn dedupe(list: &mut Uidlist) -> bool {
    let before = list.records.len();
    let mut keep: Vec<bool> = {
        let mut seen = std::collections::HashSet::with_capacity(before);
        let records = list.records.iter().rev();
        records.map(|r| seen.insert(&*r.base)).collect()
    };
    keep.reverse();
    let mut n = 0;
    list.records.retain(|_| {
        n += 1;
        keep[n - 1]
    });
    list.records.len() != before
}

/// The header line, newline included.
pub fn header_line(list: &Uidlist) -> String {
    let mut s = format!("3 V{} N{}", list.uidvalidity, list.nextuid);
    if let Some(guid) = &list.guid {
        s.push_str(" G");
        s.push_str(guid);
    }
    if !list.header_extra.is_empty() {
        s.push(' ');
        s.push_str(&list.header_extra);
    }
    s.push('\n');
    s
}

/// One record line, newline included.
pub fn record_line(record: &Record, out: &mut String) {
    use std::fmt::Write;
    let _ = write!(out, "{}", record.uid);
    if !record.fields.is_empty() {
        out.push(' ');
        out.push_str(&record.fields);
    }
    out.push_str(" :");
    out.push_str(&record.base);
    out.push('\n');
}

/// The whole file, as version 3.
pub fn serialize(list: &Uidlist) -> String {
    let mut s = header_line(list);
    s.reserve(list.records.len() * 64);
    for record in &list.records {
        record_line(record, &mut s);
    }
    s
}

/// A new mailbox GUID: 128 random bits in hex, as Dovecot's `guid_128_generate`.
pub fn new_guid() -> String {
    format!("{:032x}", rand::random::<u128>())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Written the way Dovecot 2.3 writes it (maildir-uidlist.c `maildir_uidlist_write_fd`):
    /// records with and without fields, a POP3 UIDL override, an unknown header field.
    const DOVECOT: &str = "3 V1700000000 N12 G8a6d6a2f2c8e2465ab1b0000f4b4e2a1 Xextra\n\
        1 :1700000000.M1P100.mail,S=1355,W=1394\n\
        2 W2481 :1700000001.M2P100.mail,S=2451\n\
        5 P0000000500000001 O3 :1700000002.M3P100.mail,S=10,W=11\n\
        9 G3eb13a0ff9e2b4652f0f0000f4b4e2a1 :1700000003.M4P100.mail\n";

    #[test]
    fn dovecot_file_round_trips() {
        let parsed = parse(DOVECOT.as_bytes()).unwrap();
        assert!(parsed.problems.is_empty(), "{:?}", parsed.problems);
        assert!(!parsed.torn_tail);
        let list = &parsed.list;
        assert_eq!(
            (list.version, list.uidvalidity, list.nextuid),
            (3, 1700000000, 12)
        );
        assert_eq!(
            list.guid.as_deref(),
            Some("8a6d6a2f2c8e2465ab1b0000f4b4e2a1")
        );
        assert_eq!(list.header_extra, "Xextra");
        let uids: Vec<u32> = list.records.iter().map(|r| r.uid).collect();
        assert_eq!(uids, [1, 2, 5, 9]);
        assert_eq!(&*list.records[1].fields, "W2481");
        assert_eq!(&*list.records[2].fields, "P0000000500000001 O3");
        assert_eq!(&*list.records[3].base, "1700000003.M4P100.mail");
        assert_eq!(serialize(list), DOVECOT, "written back unchanged");
    }

    #[test]
    fn courier_v1_is_read_and_written_as_v3() {
        let v1 = "1 1234 7\n3 1200000000.123.host:2,S\n4 1200000001.124.host\n";
        let parsed = parse(v1.as_bytes()).unwrap();
        assert!(parsed.problems.is_empty(), "{:?}", parsed.problems);
        let list = &parsed.list;
        assert_eq!((list.version, list.uidvalidity, list.nextuid), (1, 1234, 7));
        assert_eq!(&*list.records[0].base, "1200000000.123.host");
        let mut v3 = list.clone();
        v3.guid = Some("0".repeat(32));
        assert_eq!(
            serialize(&v3),
            format!(
                "3 V1234 N7 G{}\n3 :1200000000.123.host\n4 :1200000001.124.host\n",
                "0".repeat(32)
            )
        );
    }

    #[test]
    fn nextuid_never_below_the_records() {
        // Appended records do not update the header (Dovecot appends the same way).
        let data = "3 V1 N2 G00000000000000000000000000000000\n1 :a\n7 :b\n";
        assert_eq!(parse(data.as_bytes()).unwrap().list.nextuid, 8);
    }

    #[test]
    fn torn_last_line_is_left_out() {
        let data = "3 V1 N1 G00000000000000000000000000000000\n1 :a\n2 :b,S=1";
        let parsed = parse(data.as_bytes()).unwrap();
        assert!(parsed.torn_tail);
        assert!(parsed.problems.is_empty());
        assert_eq!(parsed.list.records.len(), 1);
        assert_eq!(parsed.list.nextuid, 2);
    }

    #[test]
    fn bad_records_are_problems() {
        let cases = [
            "x :a",          // bad UID
            "0 :a",          // UID 0
            "2 :a",          // out of order (after 5)
            "6 a",           // no ':'
            "6 :",           // empty name
            "6 :a/b",        // a slash
            "6 s12 :a",      // field key not upper-case
            "4294967295 :a", // UID too high
            "\u{0}\u{ff}",   // garbage
        ];
        for bad in cases {
            let data = format!("3 V1 N1 G00000000000000000000000000000000\n5 :z\n{bad}\n9 :y\n");
            let parsed = parse(data.as_bytes()).unwrap();
            assert_eq!(parsed.problems.len(), 1, "{bad:?}: {:?}", parsed.problems);
            let uids: Vec<u32> = parsed.list.records.iter().map(|r| r.uid).collect();
            assert_eq!(uids, [5, 9], "{bad:?}");
        }
    }

    #[test]
    fn a_file_listed_again_takes_its_new_uid() {
        let data = "3 V1 N1 G00000000000000000000000000000000\n1 :a\n2 :b\n3 :a\n";
        let mut list = parse(data.as_bytes()).unwrap().list;
        assert!(dedupe(&mut list));
        let got: Vec<(u32, &str)> = list.records.iter().map(|r| (r.uid, &*r.base)).collect();
        assert_eq!(got, [(2, "b"), (3, "a")]);
        assert!(!dedupe(&mut list));
    }

    #[test]
    fn unusable_headers() {
        let cases = [
            "",
            "\n1 :a\n",
            "2 V1 N1\n",
            "3 V0 N1\n",
            "3 V1 N0\n",
            "3 Vx N1\n",
            "3 V1 N1 Gnothex\n",
            "1 5\n",
            "3\n",
        ];
        for bad in cases {
            assert!(parse(bad.as_bytes()).is_err(), "{bad:?}");
        }
        // A header without a GUID is fine (Dovecot adds one when it rewrites).
        let list = parse(b"3 V5 N1\n").unwrap().list;
        assert_eq!((list.uidvalidity, list.guid.as_deref()), (5, None));
        assert_eq!(header_line(&list), "3 V5 N1\n");
    }

    #[test]
    fn new_lists() {
        let guid = new_guid();
        assert_eq!(guid.len(), 32);
        let list = Uidlist::new(42, guid.clone());
        assert_eq!(serialize(&list), format!("3 V42 N1 G{guid}\n"));
        assert_eq!(parse(serialize(&list).as_bytes()).unwrap().list, list);
    }
}
