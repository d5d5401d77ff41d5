//! The one Maildir writer: a message into `tmp/` with LF line ends (as tambo's and Dovecot's
//! deliveries store it), fdatasync'd, with its size on disk and its size as IMAP sends it;
//! then published into `new/` or `cur/` with `link`, which never replaces a file.
//! Delivery, APPEND and COPY (when a hard link is not possible) all write through here.

use crate::mailbox::StoreError;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Mode of message files (SPEC §11).
pub const FILE_MODE: u32 = 0o600;
/// Read size when copying a message in.
const COPY_BUFFER: usize = 64 * 1024;
/// Messages up to this size are also kept in memory while written, so their summary is
/// computed without reading the file back; larger ones get theirs when first asked.
pub const KEEP_IN_MEMORY: usize = 2 << 20;

/// A message written to `tmp/`.
#[derive(Debug)]
pub struct Written {
    pub path: PathBuf,
    /// Octets on disk (the `,S=` field).
    pub size: u64,
    /// Octets as IMAP sends it, every bare LF as CRLF (the `,W=` field).
    pub crlf_size: u64,
    /// The stored bytes, when no larger than [`KEEP_IN_MEMORY`].
    pub data: Option<Vec<u8>>,
    /// The file's mtime once written (Dovecot's INTERNALDATE), from the open file: no second
    /// lookup of the path.
    pub mtime: i64,
}

/// How the temp file is created.
#[derive(Debug, Clone, Copy)]
pub enum Create {
    /// A name of this delivery's own: a file left by an interrupted attempt is overwritten.
    Own,
    /// A fresh unique name: never follow or reuse an existing file.
    New,
}

/// Writes `input` (LF or CRLF) to `path` with LF line ends, then fdatasyncs it. `source`
/// names the input in errors. On failure the temp file is removed.
pub fn write_tmp(
    path: &Path,
    create: Create,
    input: &mut dyn Read,
    source: &Path,
    size_hint: u64,
) -> Result<Written, StoreError> {
    let mut options = OpenOptions::new();
    options.write(true).mode(FILE_MODE);
    match create {
        Create::Own => options.create(true).truncate(true),
        Create::New => options.create_new(true),
    };
    let file = options.open(path).map_err(|e| StoreError::io(path, e))?;
    let result = copy_converted(&file, path, input, source, size_hint);
    if result.is_err() {
        remove_quietly(path);
    }
    result
}

fn copy_converted(
    mut file: &File,
    path: &Path,
    input: &mut dyn Read,
    source: &Path,
    size_hint: u64,
) -> Result<Written, StoreError> {
    // Buffers no larger than the message: a small message is one read and one write.
    let chunk = usize::try_from(size_hint).map_or(COPY_BUFFER, |n| n.clamp(1, COPY_BUFFER));
    let mut buf = vec![0u8; chunk];
    let mut out = Vec::with_capacity(chunk + 1);
    let mut kept = (size_hint <= KEEP_IN_MEMORY as u64).then(Vec::new);
    let (mut conv, mut count) = (CrlfToLf::default(), CrlfCounter::default());
    let mut flush = |out: &mut Vec<u8>, kept: &mut Option<Vec<u8>>| -> Result<(), StoreError> {
        count.add(out);
        if let Some(k) = kept {
            if k.len() + out.len() <= KEEP_IN_MEMORY {
                k.extend_from_slice(out);
            } else {
                *kept = None;
            }
        }
        file.write_all(out).map_err(|e| StoreError::io(path, e))?;
        out.clear();
        Ok(())
    };
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(StoreError::io(source, e)),
        };
        conv.convert(&buf[..n], &mut out);
        if out.len() >= COPY_BUFFER {
            flush(&mut out, &mut kept)?;
        }
    }
    conv.finish(&mut out);
    flush(&mut out, &mut kept)?;
    // fdatasync: data and size; the name is made durable by the fsync of the directory.
    file.sync_data().map_err(|e| StoreError::io(path, e))?;
    let mtime = file
        .metadata()
        .map_err(|e| StoreError::io(path, e))?
        .mtime();
    Ok(Written {
        path: path.to_path_buf(),
        size: count.size,
        crlf_size: count.crlf_size,
        data: kept,
        mtime,
    })
}

/// Whether [`publish`] made the file or found it there.
#[derive(Debug, PartialEq, Eq)]
pub enum Published {
    Created,
    /// A file of that name was already there (a delivery made by an earlier attempt).
    Existed,
}

/// Links the temp file to its final name and removes the temp name. The caller fsyncs the
/// directory.
pub fn publish(tmp: &Path, dest: &Path) -> Result<Published, StoreError> {
    let outcome = match fs::hard_link(tmp, dest) {
        Ok(()) => Ok(Published::Created),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(Published::Existed),
        Err(e) => Err(StoreError::io(dest, e)),
    };
    remove_quietly(tmp);
    outcome
}

pub fn remove_quietly(path: &Path) {
    if let Err(e) = fs::remove_file(path)
        && e.kind() != io::ErrorKind::NotFound
    {
        log::warn!("mailbox: cannot remove {}: {e}", path.display());
    }
}

/// Counts what goes to disk: its size, and its size with every bare LF sent as CRLF (the
/// same rule as `summary::crlf_size`).
#[derive(Debug, Default)]
struct CrlfCounter {
    size: u64,
    crlf_size: u64,
    last: u8,
}

impl CrlfCounter {
    fn add(&mut self, chunk: &[u8]) {
        self.size += chunk.len() as u64;
        self.crlf_size += chunk.len() as u64;
        for at in memchr::memchr_iter(b'\n', chunk) {
            let before = if at == 0 { self.last } else { chunk[at - 1] };
            if before != b'\r' {
                self.crlf_size += 1;
            }
        }
        if let Some(&b) = chunk.last() {
            self.last = b;
        }
    }
}

/// Streaming CRLF → LF conversion; a CR at the end of one chunk is held until the next one
/// shows whether an LF follows. Lone CRs are kept.
#[derive(Debug, Default)]
pub struct CrlfToLf {
    pending_cr: bool,
}

impl CrlfToLf {
    /// Copies `input` to `out` with every CR that is followed by LF left out; a CR at the
    /// end of `input` waits for the next call (or [`CrlfToLf::finish`]) to know.
    pub fn convert(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        out.reserve(input.len() + 1);
        if std::mem::take(&mut self.pending_cr) && input.first() != Some(&b'\n') {
            if input.is_empty() {
                self.pending_cr = true;
                return;
            }
            out.push(b'\r');
        }
        while let Some(cr) = memchr::memchr(b'\r', input) {
            out.extend_from_slice(&input[..cr]);
            match input.get(cr + 1) {
                Some(b'\n') => {}
                Some(_) => out.push(b'\r'),
                None => {
                    self.pending_cr = true;
                    return;
                }
            }
            input = &input[cr + 1..];
        }
        out.extend_from_slice(input);
    }

    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if std::mem::take(&mut self.pending_cr) {
            out.push(b'\r');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::summary::crlf_size;

    fn convert_in_chunks(input: &[u8], chunk: usize) -> Vec<u8> {
        let mut conv = CrlfToLf::default();
        let mut out = Vec::new();
        for part in input.chunks(chunk) {
            conv.convert(part, &mut out);
        }
        conv.finish(&mut out);
        out
    }

    #[test]
    fn crlf_conversion_any_chunking() {
        let cases: [(&[u8], &[u8]); 9] = [
            (b"\r\r\r", b"\r\r\r"),
            (b"\ra\r\n\r", b"\ra\n\r"),
            (b"a\r\nb\r\n", b"a\nb\n"),
            (b"\r\n\r\n", b"\n\n"),
            (b"a\rb", b"a\rb"),
            (b"a\r", b"a\r"),
            (b"\r\r\n", b"\r\n"),
            (b"a\nb", b"a\nb"),
            (b"", b""),
        ];
        for (input, want) in cases {
            for chunk in 1..=input.len().max(1) {
                assert_eq!(
                    convert_in_chunks(input, chunk),
                    want,
                    "{input:?} in chunks of {chunk}"
                );
            }
        }
    }

    #[test]
    fn counter_agrees_with_summary_crlf_size() {
        let cases: [&[u8]; 7] = [
            b"", b"a\nb\n", b"\n\n", b"a\r\nb", b"\r", b"x\r\n\n", b"\r\n",
        ];
        for data in cases {
            for chunk in 1..=data.len().max(1) {
                let mut c = CrlfCounter::default();
                for part in data.chunks(chunk) {
                    c.add(part);
                }
                assert_eq!(c.size, data.len() as u64);
                assert_eq!(
                    c.crlf_size,
                    crlf_size(data),
                    "{data:?} in chunks of {chunk}"
                );
            }
        }
    }

    #[test]
    fn writes_converted_and_counts() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("m");
        let mut input: &[u8] = b"Subject: x\r\n\r\nbody\r\n";
        let w = write_tmp(&path, Create::New, &mut input, Path::new("in"), 20).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"Subject: x\n\nbody\n");
        assert_eq!((w.size, w.crlf_size), (17, 20));
        assert_eq!(w.data.as_deref(), Some(&b"Subject: x\n\nbody\n"[..]));
        // Create::New never reuses a file; Create::Own overwrites its own.
        let mut again: &[u8] = b"y";
        assert!(write_tmp(&path, Create::New, &mut again, Path::new("in"), 1).is_err());
        let w = write_tmp(&path, Create::Own, &mut again, Path::new("in"), 1).unwrap();
        assert_eq!((w.size, fs::read(&path).unwrap()), (1, b"y".to_vec()));

        let dest = tmp.path().join("dest");
        assert_eq!(publish(&path, &dest).unwrap(), Published::Created);
        assert!(!path.exists());
        fs::write(&path, b"z").unwrap();
        assert_eq!(publish(&path, &dest).unwrap(), Published::Existed);
        assert_eq!(fs::read(&dest).unwrap(), b"y");
    }

    #[test]
    fn big_messages_are_not_kept_and_read_errors_name_the_source() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("big");
        let big = vec![b'a'; KEEP_IN_MEMORY + 1];
        let w = write_tmp(&path, Create::New, &mut &big[..], Path::new("in"), 10).unwrap();
        assert!(w.data.is_none());
        assert_eq!(w.size, big.len() as u64);

        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("boom"))
            }
        }
        let path = tmp.path().join("failed");
        let err =
            write_tmp(&path, Create::New, &mut Failing, Path::new("/queue/x"), 1).unwrap_err();
        assert!(err.to_string().contains("/queue/x"), "{err}");
        assert!(!path.exists(), "temp file removed");
    }
}
