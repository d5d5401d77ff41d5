//! `tambo-cache`: per folder, what it costs to learn from a message file (its CRLF size, its
//! INTERNALDATE, its summary: ENVELOPE, BODY, BODYSTRUCTURE, and the header texts SEARCH
//! compares), keyed by base file name so a delivery can fill it before the message has a UID.
//!
//! The file is `tambo-cache 1\n`, then records appended by anyone (one `write` each,
//! O_APPEND): `R<crc32 hex> <length>\n<body>\n`, the body being
//! `<base>\t<crlf size>\t<internaldate>\t<format>\t<len>...\n` and the summary parts, one
//! length each: four in format 3 (the current one: the search texts followed by the SORT and
//! THREAD keys) and in format 2 (search texts without those keys, read as none), three in
//! format 0 (no summary: all empty) and in format 1 (summaries before the search texts,
//! read as none). A later record
//! for the same name wins.
//!
//! It is disposable: it never says which messages exist (the directories and the uidlist
//! do), only facts about files that do. A damaged record (bad checksum, torn write, garbage)
//! is skipped and the reader finds the next one; the folder then rewrites the file from what
//! is still good. A record for a file that is gone is ignored and dropped at the next
//! rewrite; a file without a record gets one when first needed.

use crate::mailbox::shared::CacheMark;
use crate::mailbox::summary::Summary;
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub const FILE: &str = "tambo-cache";
const MAGIC: &[u8] = b"tambo-cache 1\n";
/// The version of the summary encoding in records; bump it when `summary` changes what it
/// writes, so older records are computed again.
pub const SUMMARY_FORMAT: u32 = 3;
/// No record is longer (a larger length is garbage).
const MAX_RECORD: usize = 16 << 20;

/// What the cache knows about one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub crlf_size: u64,
    pub internaldate: i64,
    /// Where its summary lies in the cache file, when it has one of the current format.
    pub summary: Option<SummaryAt>,
}

/// The summary parts' position in the cache file: offset, then the lengths of ENVELOPE,
/// BODY, BODYSTRUCTURE and the search texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SummaryAt {
    pub offset: u64,
    pub lens: [u32; 4],
}

/// A record for `base`, and the offset of its summary bytes within it.
pub fn record(
    base: &str,
    crlf_size: u64,
    internaldate: i64,
    summary: Option<&Summary>,
) -> (Vec<u8>, usize) {
    // An empty summary is no summary (ENVELOPE is never empty once summaries are real).
    let summary = summary.filter(|s| !s.envelope.is_empty());
    let parts: Vec<&[u8]> = match summary {
        Some(s) => vec![&s.envelope, &s.body, &s.bodystructure, &s.search],
        None => vec![b"", b"", b""],
    };
    let format = if summary.is_some() { SUMMARY_FORMAT } else { 0 };
    let mut body = format!("{base}\t{crlf_size}\t{internaldate}\t{format}").into_bytes();
    for part in &parts {
        body.extend_from_slice(format!("\t{}", part.len()).as_bytes());
    }
    body.push(b'\n');
    let summary_at = body.len();
    for part in parts {
        body.extend_from_slice(part);
    }
    let head = format!("R{:08x} {}\n", crc32fast::hash(&body), body.len());
    let mut out = Vec::with_capacity(head.len() + body.len() + 1);
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(&body);
    out.push(b'\n');
    (out, head.len() + summary_at)
}

/// What a parse found.
#[derive(Debug, Default)]
pub struct Parsed {
    pub entries: HashMap<Box<str>, Entry>,
    /// Records read (counting those overridden later), to tell when a rewrite pays.
    pub records: usize,
    /// Something was skipped: the file should be rewritten.
    pub damaged: bool,
    /// The data ends inside a record (being written now, or torn by a crash).
    pub torn_tail: bool,
    /// Offset just past the last whole record: where to continue next time.
    pub end: u64,
}

/// Parses records from `data`, which starts at `offset` in the file (0: the whole file,
/// magic line included).
pub fn parse(data: &[u8], offset: u64) -> Parsed {
    let mut parsed = Parsed::default();
    let mut pos = 0;
    if offset == 0 {
        if !data.starts_with(MAGIC) {
            // Even empty: records appended to it would lack the magic line.
            parsed.damaged = true;
            return parsed;
        }
        pos = MAGIC.len();
    }
    parsed.end = offset + pos as u64;
    // After damage, every `R` is tried as the start of a record: the checksum tells.
    let mut resyncing = false;
    while pos < data.len() {
        match parse_record(&data[pos..], offset + pos as u64) {
            Ok((base, entry, used)) => {
                parsed.entries.insert(base.into(), entry);
                parsed.records += 1;
                pos += used;
                parsed.end = offset + pos as u64;
                resyncing = false;
            }
            Err(Bad::Incomplete) if !resyncing => {
                parsed.torn_tail = true;
                break;
            }
            Err(_) => {
                parsed.damaged = true;
                resyncing = true;
                match memchr::memchr(b'R', &data[pos + 1..]) {
                    Some(at) => pos += at + 1,
                    None => {
                        parsed.end = offset + data.len() as u64;
                        break;
                    }
                }
            }
        }
    }
    parsed
}

enum Bad {
    Incomplete,
    Damaged,
}

fn parse_record(data: &[u8], offset: u64) -> Result<(&str, Entry, usize), Bad> {
    let Some(nl) = data.iter().take(32).position(|&b| b == b'\n') else {
        return Err(if data.len() < 32 {
            Bad::Incomplete
        } else {
            Bad::Damaged
        });
    };
    let head = std::str::from_utf8(&data[..nl]).map_err(|_| Bad::Damaged)?;
    let (crc, len) = head
        .strip_prefix('R')
        .and_then(|h| h.split_once(' '))
        .ok_or(Bad::Damaged)?;
    let crc = u32::from_str_radix(crc, 16).map_err(|_| Bad::Damaged)?;
    let len: usize = len.parse().map_err(|_| Bad::Damaged)?;
    if len > MAX_RECORD {
        return Err(Bad::Damaged);
    }
    let start = nl + 1;
    if data.len() < start + len + 1 {
        return Err(Bad::Incomplete);
    }
    let body = &data[start..start + len];
    if data[start + len] != b'\n' || crc32fast::hash(body) != crc {
        return Err(Bad::Damaged);
    }
    let (base, entry) = parse_body(body, offset + start as u64).ok_or(Bad::Damaged)?;
    Ok((base, entry, start + len + 1))
}

fn parse_body(body: &[u8], offset: u64) -> Option<(&str, Entry)> {
    let nl = body.iter().position(|&b| b == b'\n')?;
    let line = std::str::from_utf8(&body[..nl]).ok()?;
    let mut fields = line.split('\t');
    let base = fields.next().filter(|b| !b.is_empty())?;
    let crlf_size = fields.next()?.parse().ok()?;
    let internaldate = fields.next()?.parse().ok()?;
    let format: u32 = fields.next()?.parse().ok()?;
    let mut lens = [0u32; 4];
    let count = if format >= 2 { 4 } else { 3 };
    for len in &mut lens[..count] {
        *len = fields.next()?.parse().ok()?;
    }
    let total: u64 = lens.iter().map(|&l| u64::from(l)).sum();
    if fields.next().is_some() || total != (body.len() - nl - 1) as u64 {
        return None;
    }
    let summary = (format == SUMMARY_FORMAT).then_some(SummaryAt {
        offset: offset + nl as u64 + 1,
        lens,
    });
    Some((
        base,
        Entry {
            crlf_size,
            internaldate,
            summary,
        },
    ))
}

/// A folder's cache file, open for reading summaries and appending records. Errors are
/// logged and otherwise ignored: without a cache, everything is computed from the files.
#[derive(Debug)]
pub struct CacheFile {
    path: PathBuf,
    file: Option<File>,
    /// The file's inode: summary positions are valid in this file only.
    ino: u64,
    /// Where parsing stopped (the next incremental parse starts there).
    parsed_to: u64,
}

impl CacheFile {
    /// Opens (creating it when missing) and reads the whole file. Returns its data too,
    /// for a rewrite that keeps the good records.
    pub fn open(dir: &Path) -> (CacheFile, Parsed, Vec<u8>) {
        let path = dir.join(FILE);
        let file = match ensure(&path) {
            Ok(file) => Some(file),
            Err(e) => {
                log::warn!("{}: {e}; going without a cache", path.display());
                None
            }
        };
        let mut data = Vec::new();
        if let Some(mut f) = file.as_ref()
            && let Err(e) = f.read_to_end(&mut data)
        {
            log::warn!("{}: {e}", path.display());
            data.clear();
        }
        let parsed = parse(&data, 0);
        let cache = CacheFile {
            ino: inode(file.as_ref()),
            path,
            file,
            parsed_to: parsed.end,
        };
        (cache, parsed, data)
    }

    /// Opens the file again for a view that knows it up to `mark.end` (see `shared`),
    /// reading only the records appended since. `None` when it is another file now
    /// (rewritten, or replaced), is shorter than that (truncated), has grown past
    /// `mark.limit`, or what was appended is damaged: a first open reads it all and
    /// rewrites it.
    pub(crate) fn reopen(dir: &Path, mark: CacheMark) -> Option<(CacheFile, Parsed)> {
        let path = dir.join(FILE);
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&path)
            .ok()?;
        let meta = file.metadata().ok()?;
        if meta.ino() != mark.ino || meta.len() < mark.end || meta.len() > mark.limit {
            return None;
        }
        let grown = meta.len() > mark.end;
        let mut cache = CacheFile {
            path,
            file: Some(file),
            ino: mark.ino,
            parsed_to: mark.end,
        };
        if !grown {
            return Some((cache, Parsed::default()));
        }
        let tail = cache.read_new();
        if tail.damaged || tail.torn_tail || cache.ino != mark.ino {
            return None;
        }
        Some((cache, tail))
    }

    /// The file's inode and how far it was parsed, for a view that points into it; `None`
    /// when going without a cache.
    pub(crate) fn mark(&self) -> Option<(u64, u64)> {
        self.file.as_ref().map(|_| (self.ino, self.parsed_to))
    }

    /// The file's size now (0 when going without one).
    pub(crate) fn len(&self) -> u64 {
        self.file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map_or(0, |m| m.len())
    }

    /// Records appended (by anyone) since the last parse; the whole file again if it was
    /// replaced in between.
    pub fn read_new(&mut self) -> Parsed {
        let replaced = match (
            fs::metadata(&self.path),
            self.file.as_ref().map(File::metadata),
        ) {
            (Ok(now), Some(Ok(ours))) => now.ino() != ours.ino(),
            _ => true,
        };
        if replaced {
            let dir = self
                .path
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default();
            let (fresh, parsed, _) = CacheFile::open(&dir);
            *self = fresh;
            return parsed;
        }
        let Some(file) = &self.file else {
            return Parsed::default();
        };
        let mut data = Vec::new();
        let mut reader = file;
        let read = reader
            .seek(io::SeekFrom::Start(self.parsed_to))
            .and_then(|_| reader.read_to_end(&mut data));
        if let Err(e) = read {
            log::warn!("{}: {e}", self.path.display());
            return Parsed::default();
        }
        let parsed = parse(&data, self.parsed_to);
        self.parsed_to = parsed.end;
        parsed
    }

    /// Appends records (one write); returns the offset they start at in this file. The
    /// caller takes what they say into its view.
    pub fn append(&mut self, records: &[u8]) -> Option<u64> {
        let file = self.file.as_mut()?;
        // O_APPEND: the write lands at the end whatever others appended; the position after
        // it tells where.
        let result = file
            .write_all(records)
            .and_then(|()| file.stream_position());
        match result {
            Ok(end) => {
                let start = end - records.len() as u64;
                // Right after what was parsed: nobody appended in between, so everything
                // up to the end is known (the caller keeps what it wrote).
                if start == self.parsed_to {
                    self.parsed_to = end;
                }
                Some(start)
            }
            Err(e) => {
                log::warn!("{}: {e}", self.path.display());
                None
            }
        }
    }

    /// Reads a summary back.
    pub fn summary(&self, at: SummaryAt) -> io::Result<Summary> {
        let file = self
            .file
            .as_ref()
            .ok_or_else(|| io::Error::other("no cache file"))?;
        let total: usize = at.lens.iter().map(|&l| l as usize).sum();
        let mut buf = vec![0u8; total];
        file.read_exact_at(&mut buf, at.offset)?;
        let [e, b, bs, _] = at.lens.map(|l| l as usize);
        let search = buf.split_off(e + b + bs);
        let bodystructure = buf.split_off(e + b);
        let body = buf.split_off(e);
        Ok(Summary {
            envelope: buf,
            body,
            bodystructure,
            search,
        })
    }

    /// Reads back only the search texts of a summary (SEARCH on header fields).
    pub fn search_texts(&self, at: SummaryAt) -> io::Result<Vec<u8>> {
        let file = self
            .file
            .as_ref()
            .ok_or_else(|| io::Error::other("no cache file"))?;
        let skip: u64 = at.lens[..3].iter().map(|&l| u64::from(l)).sum();
        let mut buf = vec![0u8; at.lens[3] as usize];
        file.read_exact_at(&mut buf, at.offset + skip)?;
        Ok(buf)
    }

    /// Replaces the file with `records` (temp file, rename: readers keep the old one), and
    /// uses the new one from now on. Returns the offset the records start at, or `None` when
    /// the cache could not be rewritten (it is then left as it was).
    pub fn rewrite(&mut self, records: &[u8]) -> Option<u64> {
        let mut content = Vec::with_capacity(MAGIC.len() + records.len());
        content.extend_from_slice(MAGIC);
        content.extend_from_slice(records);
        // No fsync: a cache lost in a crash is rebuilt.
        let temp = self.path.with_extension(format!(
            "tmp.{}.{:x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let result = fs::write(&temp, &content)
            .and_then(|()| {
                fs::set_permissions(&temp, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            })
            .and_then(|()| fs::rename(&temp, &self.path))
            .and_then(|()| OpenOptions::new().read(true).append(true).open(&self.path));
        match result {
            Ok(file) => {
                self.ino = inode(Some(&file));
                self.file = Some(file);
                self.parsed_to = content.len() as u64;
                Some(MAGIC.len() as u64)
            }
            Err(e) => {
                let _ = fs::remove_file(&temp);
                log::warn!("{}: cannot rewrite: {e}", self.path.display());
                None
            }
        }
    }
}

fn inode(file: Option<&File>) -> u64 {
    file.and_then(|f| f.metadata().ok()).map_or(0, |m| m.ino())
}

/// Appends one record to a folder's cache without reading it (delivery, APPEND).
pub fn append_to(dir: &Path, records: &[u8]) {
    let path = dir.join(FILE);
    if let Err(e) = ensure(&path).and_then(|mut f| f.write_all(records)) {
        log::warn!("{}: {e}", path.display());
    }
}

/// Opens the cache for reading and appending, creating it with its magic line first when
/// missing: made aside and linked into place, so no one ever sees it without the line.
fn ensure(path: &Path) -> io::Result<File> {
    let open = || OpenOptions::new().read(true).append(true).open(path);
    match open() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        other => return other,
    }
    let temp = path.with_extension(format!(
        "new.{}.{:x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)?;
    let linked = file
        .write_all(MAGIC)
        .and_then(|()| fs::hard_link(&temp, path));
    let _ = fs::remove_file(&temp);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    open()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(tag: &str) -> Summary {
        Summary {
            envelope: format!("(\"env {tag}\")").into_bytes(),
            body: format!("(\"body\n{tag}\")").into_bytes(),
            bodystructure: format!("(\"bs {tag}\")").into_bytes(),
            search: format!("S3 {tag}\n").into_bytes(),
        }
    }

    fn file_with(records: &[Vec<u8>]) -> Vec<u8> {
        let mut data = MAGIC.to_vec();
        for r in records {
            data.extend_from_slice(r);
        }
        data
    }

    #[test]
    fn records_round_trip() {
        let (a, a_at) = record("1.M1P1.h,S=5", 7, 1_700_000_000, Some(&summary("a")));
        let (b, _) = record("2.M1P1.h", 9, -5, None);
        let data = file_with(&[a.clone(), b]);
        let parsed = parse(&data, 0);
        assert!(!parsed.damaged && !parsed.torn_tail);
        assert_eq!(parsed.records, 2);
        assert_eq!(parsed.end, data.len() as u64);
        let ea = parsed.entries["1.M1P1.h,S=5"];
        assert_eq!((ea.crlf_size, ea.internaldate), (7, 1_700_000_000));
        let at = ea.summary.unwrap();
        assert_eq!(at.offset, (MAGIC.len() + a_at) as u64);
        let s = summary("a");
        let whole = [s.envelope, s.body, s.bodystructure].concat();
        let off = at.offset as usize;
        assert_eq!(&data[off..off + whole.len()], &whole[..]);
        let eb = parsed.entries["2.M1P1.h"];
        assert_eq!((eb.crlf_size, eb.internaldate, eb.summary), (9, -5, None));
    }

    #[test]
    fn empty_summary_is_no_summary() {
        let empty = Summary {
            envelope: Vec::new(),
            body: Vec::new(),
            bodystructure: Vec::new(),
            search: Vec::new(),
        };
        let (r, _) = record("x", 1, 2, Some(&empty));
        assert_eq!(parse(&file_with(&[r]), 0).entries["x"].summary, None);
    }

    #[test]
    fn damage_is_skipped_and_reported() {
        let (a, _) = record("a", 1, 1, Some(&summary("a")));
        let (b, _) = record("b", 2, 2, Some(&summary("b")));
        let (c, _) = record("c", 3, 3, None);
        let mut flipped = b.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 0x20;
        let torn = &a[..a.len() - 5];
        let cases: Vec<(&str, Vec<u8>, &[&str])> = vec![
            (
                "bit flip",
                file_with(&[a.clone(), flipped, c.clone()]),
                &["a", "c"],
            ),
            (
                "torn then more",
                file_with(&[torn.to_vec(), b.clone(), c.clone()]),
                &["b", "c"],
            ),
            (
                "garbage",
                file_with(&[b"\x00\xffgarbage\nRzz 1\n\n".to_vec(), b.clone()]),
                &["b"],
            ),
            (
                "huge length",
                file_with(&[b"R00000000 99999999999\n".to_vec(), c.clone()]),
                &["c"],
            ),
            ("no magic", [b"junk\n".to_vec(), a.clone()].concat(), &[]),
        ];
        for (what, data, want) in cases {
            let parsed = parse(&data, 0);
            assert!(parsed.damaged, "{what}");
            let mut got: Vec<&str> = parsed.entries.keys().map(|k| &**k).collect();
            got.sort();
            assert_eq!(got, want, "{what}");
        }
    }

    #[test]
    fn torn_tail_is_not_damage() {
        let (a, _) = record("a", 1, 1, None);
        let (b, _) = record("b", 2, 2, None);
        for cut in 1..b.len() {
            let data = file_with(&[a.clone(), b[..cut].to_vec()]);
            let parsed = parse(&data, 0);
            assert!(parsed.torn_tail && !parsed.damaged, "cut at {cut}");
            assert_eq!(parsed.entries.len(), 1);
            assert_eq!(parsed.end, (MAGIC.len() + a.len()) as u64);
        }
    }

    #[test]
    fn file_append_read_rewrite() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut cache, parsed, _) = CacheFile::open(tmp.path());
        assert!(parsed.entries.is_empty() && !parsed.damaged);
        assert_eq!(fs::read(tmp.path().join(FILE)).unwrap(), MAGIC);

        // Right after what was parsed: known, not read again.
        let (own, _) = record("own", 3, 4, None);
        cache.append(&own).unwrap();
        assert!(cache.read_new().entries.is_empty(), "its own record");
        // Someone else appends before our next record: both are read.
        append_to(tmp.path(), &record("b", 1, 2, None).0);
        let (r, at) = record("a", 10, 20, Some(&summary("a")));
        let start = cache.append(&r).unwrap();
        let parsed = cache.read_new();
        assert_eq!(parsed.entries.len(), 2);
        assert!(parsed.entries.contains_key("b"));
        let entry = parsed.entries["a"];
        assert_eq!(entry.summary.unwrap().offset, start + at as u64);
        let got = cache.summary(entry.summary.unwrap()).unwrap();
        assert_eq!(got.envelope, summary("a").envelope);
        assert_eq!(got.body, summary("a").body);
        assert_eq!(got.bodystructure, summary("a").bodystructure);
        assert!(cache.read_new().entries.is_empty(), "nothing new");

        let start = cache.rewrite(&r).unwrap();
        let data = fs::read(tmp.path().join(FILE)).unwrap();
        let parsed = parse(&data, 0);
        assert_eq!(parsed.entries.len(), 1);
        assert_eq!(
            parsed.entries["a"].summary.unwrap().offset,
            start + at as u64
        );
        // Replaced by another process: read again from the start.
        fs::write(
            tmp.path().join("x"),
            file_with(&[record("c", 1, 1, None).0]),
        )
        .unwrap();
        fs::rename(tmp.path().join("x"), tmp.path().join(FILE)).unwrap();
        let parsed = cache.read_new();
        assert_eq!(
            parsed.entries.keys().map(|k| &**k).collect::<Vec<_>>(),
            ["c"]
        );
    }
}
