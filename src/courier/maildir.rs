//! Built-in Maildir delivery: `data_dir/mail/<domain>/<user>/{tmp,new,cur}`, folders 0700,
//! files 0600, fsync before the rename into `new/` (maildir(5)).

use crate::courier::DeliveryError;
use crate::fsutil;
use crate::message::StoredMessage;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Read size when copying from the queue file.
const COPY_BUFFER: usize = 64 * 1024;
const FILE_MODE: u32 = 0o600;

/// Delivers the message of `item` to the Maildir of `user@domain` under `mail_root`
/// (`data_dir/mail`), prepending `Return-Path` and `Delivered-To`, converting CRLF to LF.
/// Streams from the queue file; never holds the message in memory.
///
/// Idempotent per `delivery_key` (the queue id and the recipient's index): the file is named
/// after it and published with `link`, so a delivery that an earlier attempt already made
/// (the process stopped between the Maildir and the queue's status record) is found in
/// `new/` and not made twice. A message the user moved to `cur/` in between is not looked for.
pub fn deliver(
    mail_root: &Path,
    hostname: &str,
    domain: &str,
    user: &str,
    item: &StoredMessage,
    delivery_key: &str,
) -> Result<(), DeliveryError> {
    check_name("domain", domain)?;
    check_name("user", user)?;
    check_key(delivery_key)?;
    let maildir = mail_root.join(domain).join(user);
    for sub in ["tmp", "new", "cur"] {
        let dir = maildir.join(sub);
        fsutil::create_private_dir_all(&dir).map_err(|e| io_error("cannot create", &dir, &e))?;
    }
    let name = unique_name(item.envelope.received_at, delivery_key, hostname);
    let tmp_path = maildir.join("tmp").join(&name);
    let file = create_own(&tmp_path).map_err(|e| io_error("cannot create", &tmp_path, &e))?;
    let headers = trace_headers(&item.envelope.from, user, domain);
    let size = match write_message(&file, &tmp_path, headers.as_bytes(), item) {
        Ok(size) => size,
        Err(e) => {
            remove_quietly(&tmp_path);
            return Err(e);
        }
    };
    let new_dir = maildir.join("new");
    publish(
        &tmp_path,
        &new_dir.join(format!("{name},S={size}")),
        &new_dir,
    )
}

/// Refuses names that could leave the mail root (SPEC §11). Upstream newtypes already
/// guarantee this; a second check here costs nothing and guards the filesystem.
fn check_name(kind: &str, name: &str) -> Result<(), DeliveryError> {
    let unsafe_name = name.is_empty()
        || name == "."
        || name == ".."
        || name.chars().any(|c| c == '/' || c.is_control());
    if unsafe_name {
        return Err(DeliveryError::permanent(format!(
            "unsafe {kind} name {name:?} for a Maildir"
        )));
    }
    Ok(())
}

/// `<secs>.<key>.<hostname>` (maildir(5): time, a part unique on this host, host name). The
/// queue id in the key is unique on this host, and the recipient index within the message.
fn unique_name(received_at: u64, delivery_key: &str, hostname: &str) -> String {
    format!("{received_at}.{delivery_key}.{}", safe_hostname(hostname))
}

/// A delivery key goes into a file name: letters, digits, `_` and `-` only.
fn check_key(key: &str) -> Result<(), DeliveryError> {
    let ok = !key.is_empty()
        && key.len() <= 64
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !ok {
        return Err(DeliveryError::permanent(format!(
            "bad delivery key {key:?}"
        )));
    }
    Ok(())
}

/// maildir(5): `/` and `:` in the host name are written as `\057` and `\072` (`:` starts the
/// info part of a name in `cur/`).
fn safe_hostname(hostname: &str) -> String {
    if hostname.is_empty() {
        return "localhost".to_string();
    }
    hostname
        .chars()
        .map(|c| match c {
            '/' => "\\057".to_string(),
            ':' => "\\072".to_string(),
            c if c.is_control() => "_".to_string(),
            c => c.to_string(),
        })
        .collect()
}

/// `Return-Path` (RFC 5321 §4.4) and `Delivered-To`, with LF endings like the rest of the file.
fn trace_headers(from: &str, user: &str, domain: &str) -> String {
    // The reverse-path was parsed upstream; dropping control characters here makes header
    // injection impossible even if that ever changes.
    let from: String = from.chars().filter(|c| !c.is_control()).collect();
    format!("Return-Path: <{from}>\nDelivered-To: {user}@{domain}\n")
}

/// The temp file of this delivery. Its name is this delivery's own (see [`deliver`]), so a
/// file left there by an interrupted attempt is ours to overwrite.
fn create_own(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)
}

/// Writes headers and converted data, then fsyncs; returns the number of bytes written.
fn write_message(
    file: &File,
    path: &Path,
    headers: &[u8],
    item: &StoredMessage,
) -> Result<u64, DeliveryError> {
    let mut data = item
        .open_data()
        .map_err(|e| io_error("cannot read", &item.path, &e))?;
    // Buffers no larger than the message, and the headers in the same write as the data:
    // a small message is one write.
    let chunk =
        usize::try_from(item.message_len()).map_or(COPY_BUFFER, |n| n.clamp(1, COPY_BUFFER));
    let mut buf = vec![0u8; chunk];
    let mut out = Vec::with_capacity(headers.len() + chunk + 1);
    out.extend_from_slice(headers);
    let mut written = 0;
    let mut crlf = CrlfToLf::default();
    loop {
        let n = match data.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_error("cannot read", &item.path, &e)),
        };
        crlf.convert(&buf[..n], &mut out);
        if out.len() >= COPY_BUFFER {
            written += write_chunk(file, path, &out)?;
            out.clear();
        }
    }
    crlf.finish(&mut out);
    written += write_chunk(file, path, &out)?;
    // fdatasync: data and size; the name is made durable by the fsync of new/.
    file.sync_data()
        .map_err(|e| io_error("cannot fsync", path, &e))?;
    Ok(written)
}

fn write_chunk(mut file: &File, path: &Path, chunk: &[u8]) -> Result<u64, DeliveryError> {
    file.write_all(chunk)
        .map_err(|e| io_error("cannot write", path, &e))?;
    Ok(chunk.len() as u64)
}

/// Moves the finished file into `new/` and makes that durable (maildir(5)).
fn publish(tmp_path: &Path, new_path: &Path, new_dir: &Path) -> Result<(), DeliveryError> {
    // `link` never replaces: an existing file is this very delivery, made by an earlier
    // attempt that did not live to record it.
    let created = match fs::hard_link(tmp_path, new_path) {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            log::info!("maildir: {} was already delivered", new_path.display());
            false
        }
        Err(e) => {
            remove_quietly(tmp_path);
            return Err(io_error("cannot link into", new_path, &e));
        }
    };
    remove_quietly(tmp_path);
    if let Err(e) = fsutil::fsync_dir_shared(new_dir) {
        // The delivery will be retried, so a copy left here could show up twice.
        if created {
            remove_quietly(new_path);
        }
        return Err(io_error("cannot fsync", new_dir, &e));
    }
    Ok(())
}

fn remove_quietly(path: &Path) {
    if let Err(e) = fs::remove_file(path) {
        log::warn!("maildir: cannot remove {}: {e}", path.display());
    }
}

/// Every I/O failure is temporary: a full disk or quota may clear up before the queue gives
/// up. The reason names the path; it goes to the log, never to a peer.
fn io_error(what: &str, path: &Path, e: &io::Error) -> DeliveryError {
    let hint = match e.raw_os_error() {
        Some(libc::ENOSPC) => " (disk full)",
        Some(libc::EDQUOT) => " (quota exceeded)",
        _ => "",
    };
    DeliveryError::temporary(format!("maildir: {what} {}: {e}{hint}", path.display()))
}

/// Streaming CRLF → LF conversion; a CR at the end of one chunk is held until the next one
/// shows whether an LF follows. Lone CRs are kept.
#[derive(Debug, Default)]
struct CrlfToLf {
    pending_cr: bool,
}

impl CrlfToLf {
    /// Copies `input` to `out` with every CR that is followed by LF left out; a CR at the
    /// end of `input` waits for the next call (or [`CrlfToLf::finish`]) to know.
    fn convert(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
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

    fn finish(&mut self, out: &mut Vec<u8>) {
        if std::mem::take(&mut self.pending_cr) {
            out.push(b'\r');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aliases::Recipient;
    use crate::message::{Envelope, QueuedRcpt, RcptState};
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    fn queued(dir: &Path, from: &str, data: &[u8]) -> StoredMessage {
        let rcpt = QueuedRcpt {
            original: "bob@example.org".to_string(),
            target: Recipient::Mailbox {
                address: "bob@example.org".to_string(),
            },
            state: RcptState::Pending,
            last_error: None,
        };
        let envelope = Envelope {
            from: from.to_string(),
            rcpts: vec![rcpt],
            received_at: 0,
            client: String::new(),
            ..Default::default()
        };
        crate::message::stored::written(dir, data, envelope)
    }

    fn files_in(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        files
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

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
    fn delivers_into_new_with_headers() {
        let tmp = tempfile::tempdir().unwrap();
        let item = queued(
            tmp.path(),
            "alice@example.com",
            b"Subject: hi\r\n\r\nbody\r\n",
        );
        let root = tmp.path().join("mail");
        deliver(&root, "mx.example.org", "example.org", "bob", &item, "q1_0").unwrap();

        let maildir = root.join("example.org/bob");
        let new = files_in(&maildir.join("new"));
        assert_eq!(new.len(), 1);
        assert!(files_in(&maildir.join("tmp")).is_empty());
        assert!(files_in(&maildir.join("cur")).is_empty());
        let want = "Return-Path: <alice@example.com>\nDelivered-To: bob@example.org\n\
                    Subject: hi\n\nbody\n";
        let got = fs::read(&new[0]).unwrap();
        assert_eq!(String::from_utf8_lossy(&got), want);

        let name = new[0].file_name().unwrap().to_str().unwrap();
        let (base, size) = name.rsplit_once(",S=").unwrap();
        assert_eq!(size, want.len().to_string());
        let parts: Vec<&str> = base.splitn(3, '.').collect();
        assert_eq!(parts[0], item.envelope.received_at.to_string(), "{name}");
        assert_eq!(parts[1], "q1_0", "{name}");
        assert_eq!(parts[2], "mx.example.org", "{name}");

        assert_eq!(mode(&new[0]), 0o600);
        for dir in ["mail", "mail/example.org", "mail/example.org/bob"] {
            assert_eq!(mode(&tmp.path().join(dir)), 0o700, "{dir}");
        }
        for sub in ["tmp", "new", "cur"] {
            assert_eq!(mode(&maildir.join(sub)), 0o700, "{sub}");
        }
    }

    #[test]
    fn null_sender_distinct_keys_and_idempotence() {
        let tmp = tempfile::tempdir().unwrap();
        let item = queued(tmp.path(), "", b"x\r\n");
        let root = tmp.path().join("mail");
        deliver(&root, "host", "example.org", "bob", &item, "q1_0").unwrap();
        deliver(&root, "host", "example.org", "bob", &item, "q1_1").unwrap();
        // The same delivery again (a restart before its status was recorded): no second copy.
        deliver(&root, "host", "example.org", "bob", &item, "q1_0").unwrap();
        let new = files_in(&root.join("example.org/bob/new"));
        assert_eq!(new.len(), 2);
        assert_ne!(new[0], new[1]);
        assert!(files_in(&root.join("example.org/bob/tmp")).is_empty());
        assert!(check_key("../x").is_err() && check_key("").is_err());
        for path in new {
            let text = fs::read_to_string(path).unwrap();
            assert!(text.starts_with("Return-Path: <>\n"), "{text}");
        }
    }

    #[test]
    fn crlf_split_at_buffer_boundary() {
        let tmp = tempfile::tempdir().unwrap();
        // The CR of a CRLF is the last byte of the first 64 KiB read; a lone CR follows later.
        let mut data = vec![b'a'; COPY_BUFFER - 1];
        data.extend_from_slice(b"\r\nb\rc\r\n");
        let item = queued(tmp.path(), "a@b.c", &data);
        let root = tmp.path().join("mail");
        deliver(&root, "host", "example.org", "bob", &item, "q1_0").unwrap();
        let new = files_in(&root.join("example.org/bob/new"));
        let got = fs::read(&new[0]).unwrap();
        let mut want = b"Return-Path: <a@b.c>\nDelivered-To: bob@example.org\n".to_vec();
        want.extend(vec![b'a'; COPY_BUFFER - 1]);
        want.extend_from_slice(b"\nb\rc\n");
        assert!(got == want, "content differs around the buffer boundary");
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
    fn unsafe_names_are_refused_permanently() {
        let tmp = tempfile::tempdir().unwrap();
        let item = queued(tmp.path(), "a@b.c", b"x\r\n");
        let root = tmp.path().join("mail");
        let cases = [
            ("", "bob"),
            (".", "bob"),
            ("..", "bob"),
            ("a/b", "bob"),
            ("ex\0ample.org", "bob"),
            ("example.org", ""),
            ("example.org", "."),
            ("example.org", ".."),
            ("example.org", "../../etc"),
            ("example.org", "bo\nb"),
        ];
        for (domain, user) in cases {
            let err = deliver(&root, "host", domain, user, &item, "q1_0").unwrap_err();
            assert!(err.permanent, "{domain:?} {user:?}");
        }
        assert!(!root.exists(), "nothing may be created for a refused name");
    }

    #[test]
    fn io_errors_are_temporary_and_name_the_path() {
        let tmp = tempfile::tempdir().unwrap();
        let item = queued(tmp.path(), "a@b.c", b"x\r\n");
        let root = tmp.path().join("mail");
        // A file where the domain folder should be.
        fs::create_dir_all(&root).unwrap();
        fs::write(root.join("example.org"), b"").unwrap();
        let err = deliver(&root, "host", "example.org", "bob", &item, "q1_0").unwrap_err();
        assert!(!err.permanent);
        assert!(err.reason.contains("example.org/bob"), "{}", err.reason);

        let mut gone = item.clone();
        gone.path = tmp.path().join("missing");
        gone.file = None;
        let err = deliver(&root, "host", "example.net", "bob", &gone, "q1_0").unwrap_err();
        assert!(!err.permanent);
        assert!(err.reason.contains("missing"), "{}", err.reason);
        assert!(
            files_in(&root.join("example.net/bob/tmp")).is_empty(),
            "tmp file removed"
        );
    }

    #[test]
    fn hostname_is_made_safe() {
        let cases = [
            ("mx.example.org", "mx.example.org"),
            ("a/b:c", "a\\057b\\072c"),
            ("", "localhost"),
            ("a\nb", "a_b"),
        ];
        for (host, want) in cases {
            assert_eq!(safe_hostname(host), want, "{host:?}");
        }
    }
}
