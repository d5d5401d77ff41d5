//! A message on disk, as couriers read it: its id, its envelope, and its data in a file,
//! read with pread through a shared descriptor (no seek, so clones read at once).

use crate::message::envelope::Envelope;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

/// A queue id: 16 lower-case hex characters, safe as a file name.
///
/// The first 11 digits are milliseconds since the epoch, so ids sort oldest first; the last 5
/// are random.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueId(String);

impl QueueId {
    /// Accepts exactly 16 lower-case hex characters.
    pub fn parse(s: &str) -> Option<QueueId> {
        let ok = s.len() == 16 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        ok.then(|| QueueId(s.to_string()))
    }

    /// A fresh id from the clock and a random number.
    pub fn generate() -> QueueId {
        let millis = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let time = (millis as u64) & 0xfff_ffff_ffff; // 44 bits: good until the year 2527.
        let random = rand::random::<u32>() & 0xf_ffff;
        QueueId(format!("{time:011x}{random:05x}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for QueueId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A message on disk: its envelope, and where its data lies in its file. The queue writes and
/// loads it (`queue::store`); couriers read it.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    pub id: QueueId,
    pub envelope: Envelope,
    pub path: PathBuf,
    pub data_offset: u64,
    pub data_len: u64,
    /// The file, still open from when it was written (a message just committed, on its way
    /// to its first attempt): reading it needs no open. `None` for a message loaded from
    /// disk; the runner drops it before a message waits for a retry, so the number of
    /// descriptors held stays that of the messages in flight.
    pub file: Option<Arc<File>>,
    /// The file's other name, in `queue/free/`, when it was written there (a recycled file,
    /// linked into `queue/` at commit): removing the message then only unlinks its queue
    /// name, and the file is back in the pool under this one.
    pub pool_name: Option<PathBuf>,
}

/// The message as couriers see it: the header lines added after it was read (envelope
/// `headers`), then the data as received, streamed from the queue file.
pub type MessageReader = io::Chain<io::Cursor<Vec<u8>>, FileRange>;

/// Reads `[pos, end)` of a shared file with pread: no seek, so clones of one open file can
/// be read at once.
#[derive(Debug)]
pub struct FileRange {
    file: Arc<File>,
    pos: u64,
    end: u64,
}

impl FileRange {
    /// `[start, end)` of `file`.
    pub fn new(file: Arc<File>, start: u64, end: u64) -> FileRange {
        FileRange {
            file,
            pos: start,
            end,
        }
    }
}

impl Read for FileRange {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = usize::try_from(self.end.saturating_sub(self.pos)).unwrap_or(usize::MAX);
        let want = buf.len().min(left);
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl StoredMessage {
    /// A reader over the message for couriers: the data is never loaded whole.
    pub fn open_data(&self) -> io::Result<MessageReader> {
        let file = match &self.file {
            Some(file) => file.clone(),
            None => Arc::new(File::open(&self.path)?),
        };
        let added = io::Cursor::new(self.envelope.headers.as_bytes().to_vec());
        let end = self.data_offset.saturating_add(self.data_len);
        Ok(added.chain(FileRange::new(file, self.data_offset, end)))
    }

    /// Length in octets of what [`open_data`](StoredMessage::open_data) yields.
    pub fn message_len(&self) -> u64 {
        self.envelope.headers.len() as u64 + self.data_len
    }
}

/// A message written to a file of its own in `dir`, for the tests of its readers.
#[cfg(test)]
pub(crate) fn written(dir: &std::path::Path, data: &[u8], envelope: Envelope) -> StoredMessage {
    let id = QueueId::generate();
    let path = dir.join(id.as_str());
    std::fs::write(&path, data).expect("write a test message");
    StoredMessage {
        id,
        envelope,
        path,
        data_offset: 0,
        data_len: data.len() as u64,
        file: None,
        pool_name: None,
    }
}
