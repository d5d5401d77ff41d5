//! Queue file format and durable operations. See the module docs inside for the layout.

use crate::aliases::Recipient;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// A queue id: 16 lower-case hex characters, safe as a file name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueId(String);

impl QueueId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for QueueId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum RcptState {
    Pending,
    Delivered,
    Failed { reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QueuedRcpt {
    /// The address the client gave at RCPT.
    pub original: String,
    pub target: Recipient,
    pub state: RcptState,
    /// Last temporary error, for `util queue` and logs.
    #[serde(default)]
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Envelope {
    /// Reverse-path; empty for `<>`.
    pub from: String,
    pub rcpts: Vec<QueuedRcpt>,
    /// Seconds since the epoch.
    pub received_at: u64,
    /// Client address, HELO, auth user: for logs and DSNs.
    pub client: String,
}

/// A message in the queue, as loaded: its envelope, and where its data lies in the file.
#[derive(Debug, Clone)]
pub struct Item {
    pub id: QueueId,
    pub envelope: Envelope,
    pub path: PathBuf,
    pub data_offset: u64,
    pub data_len: u64,
}

#[derive(Debug, Clone)]
pub struct Queue {
    dir: PathBuf,
}

/// A message being received: data is streamed to a temp file in the queue folder.
#[derive(Debug)]
pub struct Incoming {}

impl Queue {
    /// Opens (creating, mode 0700) `data_dir/queue`.
    pub fn open(data_dir: &Path) -> io::Result<Queue> {
        todo!("{data_dir:?}")
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// Starts a new message; allocates its id.
    pub fn incoming(&self) -> io::Result<Incoming> {
        todo!()
    }
    /// Loads every complete message; removes stale temp files. Errors on one file are logged
    /// and that file is left in place.
    pub fn load_all(&self) -> io::Result<Vec<Item>> {
        todo!()
    }
    /// Durably records a recipient's new state (appended to the message's file, fsync'd).
    pub fn record(&self, item: &Item, rcpt_index: usize, state: &RcptState, last_error: Option<&str>) -> io::Result<()> {
        todo!("{item:?}{rcpt_index}{state:?}{last_error:?}")
    }
    /// Removes a finished message's file (and fsyncs the folder).
    pub fn remove(&self, item: &Item) -> io::Result<()> {
        todo!("{item:?}")
    }
}

impl Incoming {
    pub fn id(&self) -> &QueueId {
        todo!()
    }
    /// Appends message bytes (buffered).
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        todo!("{}", bytes.len())
    }
    /// Writes the envelope, fsyncs, renames into place, fsyncs the folder. When this returns
    /// Ok, the message is durable: this is what a 250 after DATA waits for.
    pub fn commit(self, envelope: Envelope) -> io::Result<Item> {
        todo!("{envelope:?}")
    }
    /// Drops the temp file (message refused).
    pub fn abort(self) {
        todo!()
    }
}

/// Current time as seconds since the epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
