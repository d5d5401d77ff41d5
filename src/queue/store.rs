//! Queue file format and durable operations (SPEC §8).
//!
//! # Layout
//!
//! One file per message, `data_dir/queue/<id>`, mode 0600, named by its [`QueueId`]:
//!
//! ```text
//! TAMBO-QUEUE 1 <data_len as 20 decimal digits>\n   fixed-size first line (35 bytes)
//! <data_len bytes of message data>                   as received (CRLF, dot-unstuffed)
//! <envelope JSON>\n                                  one line, written at commit
//! \n                                                 zero or more empty lines (padding)
//! <status record JSON>\n                             zero or more, appended by Queue::record
//! ```
//!
//! The padding blanks out what is left of an older message when a recycled file is written
//! over (see `FreePool`): keeping the file's size spares the fdatasync an inode write.
//!
//! A status record is `{"rcpt":<index>,"state":"pending"|"delivered"|"failed",
//! ["reason":...,] "last_error":...}`; records apply in file order, so the last one for a
//! recipient wins.
//!
//! # Why this shape
//!
//! - Data is streamed to disk while it arrives, before its length is known, so the first line
//!   holds a placeholder that commit overwrites in place (pwrite). Its fixed size means the data
//!   offset is a constant and the loader can seek over the data without reading it.
//! - The envelope follows the data, so it is written once, at commit, in one piece.
//! - Recipient state changes are appends, not rewrites: one small write and one fsync per
//!   delivery, and an append torn by a crash can only damage its own line. A line counts only
//!   once its `\n` is there; a torn tail is ignored on load, and [`Queue::record`] starts a new
//!   line first if the file does not end with one, so a later append never merges with it.
//!
//! # Durability
//!
//! While being received, a message lives in a file outside `queue/` proper (same filesystem):
//! a recycled file in `queue/free/` (see `FreePool`), or `queue/tmp/<id>` when the pool is
//! empty. Commit flushes, writes the length and the envelope, fsyncs the file, gives it the
//! name `queue/<id>` (never replacing a file there: a hard link for a pooled file, which keeps
//! its pool name, else a rename), then fsyncs the folder: only then is the message
//! acknowledged (250 after DATA). A file in `queue/` is therefore always complete, and
//! anything named only in `queue/tmp/` or `queue/free/` after a crash was never
//! acknowledged, so [`Queue::load_all`] deletes those names (a queued message linked from
//! `free/` keeps its queue name).
//!
//! Many sessions commit at once, each with its own [`Incoming`]; the folder fsyncs of
//! concurrent commits are shared (`fsutil::DirTicket`): one fsync covers every link or rename
//! made before it started.

use crate::message::{Envelope, FileRange, MessageReader, QueueId, RcptState, StoredMessage};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Magic and format version at the start of every queue file.
const MAGIC: &str = "TAMBO-QUEUE 1 ";
/// Digits of the data length in the first line (`u64::MAX` has 20).
const LEN_DIGITS: usize = 20;
/// Length of the first line, hence the offset of the message data.
const HEADER_LEN: u64 = (MAGIC.len() + LEN_DIGITS + 1) as u64;
/// Written until commit; it does not parse, so a half-written file can never pass for whole.
const PLACEHOLDER: &[u8] = b"TAMBO-QUEUE 1 --------------------\n";
/// Buffer for streaming message data to the temp file: most messages fit, and a larger one
/// costs a few more writes rather than every message a large allocation.
const WRITE_BUFFER: usize = 16 * 1024;
/// Id clashes need the same millisecond and 20 equal random bits; a few retries suffice.
const ID_ATTEMPTS: usize = 16;
const FILE_MODE: u32 = 0o600;

/// One status line of a queue file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct StatusRecord {
    rcpt: usize,
    #[serde(flatten)]
    state: RcptState,
    #[serde(default)]
    last_error: Option<String>,
}

/// Why one queue file could not be loaded (logged; the file is kept for a human to look at).
#[derive(Debug, thiserror::Error)]
enum LoadError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("bad first line (not a committed tambo queue file)")]
    BadHeader,
    #[error("envelope line missing or cut short")]
    NoEnvelope,
    #[error("bad envelope: {0}")]
    BadEnvelope(#[from] serde_json::Error),
}

#[derive(Debug, Clone)]
pub struct Queue {
    dir: PathBuf,
    free: Arc<FreePool>,
}

/// Finished queue files in `queue/free/`, overwritten in place by new messages. Writing over
/// blocks a file already owns is much cheaper than a new file, or an emptied one: no inode or
/// block allocation, no freeing (with a discard, on a disk mounted `discard`), and no forced
/// flush at close (ext4's `auto_da_alloc` after a truncation). Measured on ext4: a quarter of
/// the server's CPU went to creating and deleting one file per message, and truncating to
/// empty still cost a third more than overwriting.
///
/// The pool keeps each file open, and a new message is written where the file lies, in
/// `free/`: taking a file costs no system call. Commit links it into `queue/` and removal
/// unlinks that name again, so `free/` itself does not change per message (see
/// `Incoming::enter_queue` for why that matters). The pool starts empty at each start ([`Queue::load_all`] deletes what is in
/// `free/`), so it only ever holds files this process has written and cleared.
#[derive(Debug)]
struct FreePool {
    dir: PathBuf,
    files: Mutex<Vec<FreeFile>>,
}

/// A file in the pool: where it is, open for reading and writing, and its length.
#[derive(Debug)]
struct FreeFile {
    path: PathBuf,
    file: Arc<File>,
    len: u64,
}

impl FreePool {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<FreeFile>> {
        // A panic while holding the lock leaves at worst a file the pool forgot.
        self.files.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes `path` (a queue file or temp file that is done with; `open` is its descriptor
    /// when the caller has one, `pool_name` its name in `free/` when it has one) out of the
    /// way: back to the pool, its contents overwritten with zeros (no message lingers there),
    /// while the pool has room and the file is small; else deleted. A file with a pool name
    /// only loses its queue name; another is moved to `free/`. Not fsync'd: what the pool
    /// holds needs no durability, and a crash at worst leaves the file where it was.
    fn put(
        &self,
        path: &Path,
        id: &QueueId,
        open: Option<&Arc<File>>,
        pool_name: Option<&Path>,
    ) -> io::Result<()> {
        let file = match open {
            Some(file) => file.clone(),
            None => Arc::new(OpenOptions::new().read(true).write(true).open(path)?),
        };
        let len = file.metadata()?.len();
        if len > FREE_FILE_MAX || self.lock().len() >= FREE_POOL {
            if let Some(name) = pool_name {
                remove_if_there(name)?;
            }
            return fs::remove_file(path);
        }
        let free = if let Some(name) = pool_name {
            fs::remove_file(path)?;
            name.to_path_buf()
        } else if path.parent() == Some(self.dir.as_path()) {
            // Taken from the pool and given back unqueued (`Incoming::recycle`).
            path.to_path_buf()
        } else {
            let free = self.dir.join(id.as_str());
            match rename_noreplace(path, &free) {
                Ok(()) => free,
                // The name is taken (a clashing id): not worth keeping.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    return fs::remove_file(path);
                }
                Err(e) => return Err(e),
            }
        };
        match zero_fill(&file, len) {
            Ok(()) => self.lock().push(FreeFile {
                path: free,
                file,
                len,
            }),
            Err(e) => {
                log::warn!("queue: cannot clear {}: {e}", free.display());
                fs::remove_file(&free)?;
            }
        }
        Ok(())
    }

    /// A pooled file for a new message; `None` when the pool is empty.
    fn take(&self) -> Option<FreeFile> {
        self.lock().pop()
    }

    /// Forgets every pooled file and deletes whatever is in `free/`: at start-up, where a
    /// file may hold part of a message that was being received when the last run ended.
    fn clear(&self) -> io::Result<()> {
        self.lock().clear();
        remove_files_in(&self.dir).map(drop)
    }
}

/// Deletes every file in `dir` and returns their paths; a file that cannot be deleted is
/// logged and left.
fn remove_files_in(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        match fs::remove_file(&path) {
            Ok(()) => removed.push(path),
            Err(e) => log::warn!("queue: cannot remove {}: {e}", path.display()),
        }
    }
    Ok(removed)
}

/// Deletes `path`; already gone is fine.
fn remove_if_there(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Overwrites the first `len` bytes of `file` with zeros.
fn zero_fill(file: &File, len: u64) -> io::Result<()> {
    const ZEROS: [u8; 8192] = [0; 8192];
    let mut at = 0;
    while at < len {
        let n = (len - at).min(ZEROS.len() as u64);
        file.write_all_at(&ZEROS[..n as usize], at)?;
        at += n;
    }
    Ok(())
}

/// A recycled file's old tail up to this long is overwritten with empty lines rather than
/// cut off (see `Incoming::finish_file`); a longer one is cut off.
const MAX_PADDING: u64 = 4096;
/// Recycled files kept at most (about the number of messages received at once). Each holds
/// a descriptor open, counted in the file descriptor margin `serve` asks for (`net::caps::raise_fd_limit`).
pub const FREE_POOL: usize = 64;
/// Larger files are deleted, not pooled: the pool must not hold on to much disk.
const FREE_FILE_MAX: u64 = 256 * 1024;

/// `rename(from, to)` that fails rather than replace an existing `to` (like `O_EXCL`):
/// `renameat2(RENAME_NOREPLACE)`, or link and unlink where the filesystem lacks it.
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
    };
    let (c_from, c_to) = (c(from)?, c(to)?);
    // SAFETY: both pointers are valid NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            c_from.as_ptr(),
            libc::AT_FDCWD,
            c_to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EINVAL | libc::ENOSYS) => {
            fs::hard_link(from, to)?;
            fs::remove_file(from)
        }
        _ => Err(err),
    }
}

/// A message being received: data is streamed to a temp file in the queue folder.
///
/// Dropping it without [`commit`](Incoming::commit) removes the temp file.
#[derive(Debug)]
pub struct Incoming {
    id: QueueId,
    /// Where the file is while it is written: `tmp/<id>`, or a recycled file in `free/`.
    path: PathBuf,
    queue_dir: PathBuf,
    free: Arc<FreePool>,
    out: BufWriter<SharedFile>,
    data_len: u64,
    /// Length of the recycled file's old contents: commit cuts off whatever of it is left
    /// past the new message.
    stale_len: u64,
    /// Set once the file has its queue name (or was removed): Drop leaves it alone.
    done: bool,
}

/// The file an [`Incoming`] writes, shared with the [`StoredMessage`] it becomes at commit. Written
/// at its own offset (pwrite), not the descriptor's: a recycled file's descriptor is left
/// wherever its previous message ended.
#[derive(Debug)]
struct SharedFile {
    file: Arc<File>,
    pos: u64,
}

impl Write for SharedFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Queue {
    /// Opens (creating, mode 0700) `data_dir/queue`.
    pub fn open(data_dir: &Path) -> io::Result<Queue> {
        let dir = data_dir.join("queue");
        crate::fsutil::create_private_dir_all(&dir.join("tmp"))?;
        crate::fsutil::create_private_dir_all(&dir.join("free"))?;
        Ok(Queue {
            free: Arc::new(FreePool {
                dir: dir.join("free"),
                files: Mutex::new(Vec::new()),
            }),
            dir,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn tmp_dir(&self) -> PathBuf {
        self.dir.join("tmp")
    }

    fn path_of(&self, id: &QueueId) -> PathBuf {
        self.dir.join(id.as_str())
    }

    /// Starts a new message; allocates its id.
    pub fn incoming(&self) -> io::Result<Incoming> {
        let (id, path, file, stale_len) = self.create_temp()?;
        let mut incoming = Incoming {
            id,
            path,
            queue_dir: self.dir.clone(),
            free: self.free.clone(),
            out: BufWriter::with_capacity(WRITE_BUFFER, SharedFile { file, pos: 0 }),
            data_len: 0,
            stale_len,
            done: false,
        };
        // On error, dropping `incoming` removes the temp file.
        incoming.out.write_all(PLACEHOLDER)?;
        Ok(incoming)
    }

    /// A file to write a new message into, with a fresh id: a recycled file when the pool
    /// has one (with the length of its old contents), else `tmp/<id>`, created exclusively.
    ///
    /// The id is not checked against `queue/` here: commit never replaces a queued file,
    /// so a clash (same millisecond and 20 equal random bits) fails that commit, and the
    /// client sends the message again, rather than overwriting a queued message.
    fn create_temp(&self) -> io::Result<(QueueId, PathBuf, Arc<File>, u64)> {
        if let Some(free) = self.free.take() {
            return Ok((QueueId::generate(), free.path, free.file, free.len));
        }
        for _ in 0..ID_ATTEMPTS {
            let id = QueueId::generate();
            let path = self.tmp_dir().join(id.as_str());
            match create_exclusive(&path) {
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                created => return Ok((id, path, Arc::new(created?), 0)),
            }
        }
        Err(io::Error::other("could not allocate a free queue id"))
    }

    /// Loads every complete message; removes stale temp files and the pool of recycled
    /// files. Errors on one file are logged and that file is left in place.
    ///
    /// Call at start-up, before any [`Incoming`] exists: it deletes everything in `tmp/` and
    /// `free/`.
    pub fn load_all(&self) -> io::Result<Vec<StoredMessage>> {
        self.clean_tmp()?;
        self.free.clear()?;
        self.list()
    }

    /// Every complete message, read-only: safe while a server runs (`util queue`). A file
    /// that cannot be read is logged and skipped.
    pub fn list(&self) -> io::Result<Vec<StoredMessage>> {
        let mut items = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let name = entry?.file_name();
            let Some(id) = name.to_str().and_then(QueueId::parse) else {
                if name != "tmp" && name != "free" {
                    log::warn!("queue: ignoring unexpected file {:?}", self.dir.join(&name));
                }
                continue;
            };
            let path = self.path_of(&id);
            match load_file(id, &path) {
                Ok(item) => items.push(item),
                Err(e) => log::error!("queue: cannot load {}, left in place: {e}", path.display()),
            }
        }
        items.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(items)
    }

    /// Deletes what a crash left in `tmp/`: none of it was ever acknowledged.
    fn clean_tmp(&self) -> io::Result<()> {
        for path in remove_files_in(&self.tmp_dir())? {
            log::info!("queue: removed uncommitted {}", path.display());
        }
        Ok(())
    }

    /// Durably records a recipient's new state (appended to the message's file, fsync'd).
    pub fn record(
        &self,
        item: &StoredMessage,
        rcpt_index: usize,
        state: &RcptState,
        last_error: Option<&str>,
    ) -> io::Result<()> {
        if rcpt_index >= item.envelope.rcpts.len() {
            let msg = format!("{}: no recipient #{rcpt_index}", item.id);
            return Err(io::Error::new(io::ErrorKind::InvalidInput, msg));
        }
        let record = StatusRecord {
            rcpt: rcpt_index,
            state: state.clone(),
            last_error: last_error.map(str::to_string),
        };
        let mut line = serde_json::to_vec(&record).map_err(io::Error::other)?;
        line.push(b'\n');
        // No `create`: recording into a message that was removed must fail, not recreate it.
        let file = OpenOptions::new()
            .read(true) // To check the last byte.
            .append(true)
            .open(self.path_of(&item.id))?;
        if !ends_with_newline(&file)? {
            // A torn earlier append (crash, full disk): end it so this line stays whole.
            line.insert(0, b'\n');
        }
        // One write with O_APPEND: concurrent records for other recipients do not interleave.
        // Not fsync'd here: the runner calls `sync` once per attempt when the message stays
        // queued, and removes the file otherwise. A kill -9 keeps what was written (it is in
        // the page cache); only an OS crash can lose the latest records, redelivering those
        // recipients, which is the window every MTA has between the peer's 250 and its books.
        (&file).write_all(&line)
    }

    /// Makes the status records written so far durable.
    pub fn sync(&self, item: &StoredMessage) -> io::Result<()> {
        match &item.file {
            Some(file) => file.sync_data(),
            None => File::open(self.path_of(&item.id))?.sync_data(),
        }
    }

    /// Removes a finished message from the queue. Its file goes back to the pool while the
    /// pool has room (losing its queue name, or moved to `free/` if it has no name there),
    /// else it is deleted.
    ///
    /// The folder is fsync'd soon, not before this returns (`fsutil::fsync_dir_soon`):
    /// nobody waits on a removal, and under load the next commit's fsync of the same folder
    /// covers it. A crash of tambo changes nothing (the unlink or rename is done); a crash of the
    /// machine within that second can bring the message back, to be delivered again, as can
    /// one between the peer's 250 and our status record: RFC 5321 §6.1 prefers a duplicate
    /// to a loss.
    pub fn remove(&self, item: &StoredMessage) -> io::Result<()> {
        match self.free.put(
            &self.path_of(&item.id),
            &item.id,
            item.file.as_ref(),
            item.pool_name.as_deref(),
        ) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        crate::fsutil::fsync_dir_soon(&self.dir);
        Ok(())
    }

    /// A reader over `item`'s message data; see [`StoredMessage::open_data`].
    pub fn open_data(&self, item: &StoredMessage) -> io::Result<MessageReader> {
        item.open_data()
    }
}

fn create_exclusive(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true) // `Incoming::data_reader` reads the message back through it.
        .write(true)
        .create_new(true) // O_EXCL: never reuse or follow an existing file.
        .mode(FILE_MODE)
        .open(path)
}

fn ends_with_newline(file: &File) -> io::Result<bool> {
    let len = file.metadata()?.len();
    let mut last = [0u8; 1];
    file.read_exact_at(&mut last, len.saturating_sub(1))?;
    Ok(last[0] == b'\n')
}

impl Incoming {
    pub fn id(&self) -> &QueueId {
        &self.id
    }

    /// Appends message bytes (buffered).
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.data_len += bytes.len() as u64;
        Ok(())
    }

    /// Octets of message data written so far.
    pub fn data_len(&self) -> u64 {
        self.data_len
    }

    /// The data written so far, to read back in pieces from the temp file (in the page cache:
    /// it was just written), for the checks that read the message: DKIM, the post-data hook.
    /// The message is never read whole into memory.
    pub fn data_reader(&mut self) -> io::Result<FileRange> {
        self.out.flush()?;
        Ok(FileRange::new(
            self.file().clone(),
            HEADER_LEN,
            HEADER_LEN + self.data_len,
        ))
    }

    /// The message as received so far, for a courier that delivers it before it is queued
    /// (queue::direct): an [`StoredMessage`] whose file is the temp file. Valid until this `Incoming`
    /// is committed, recycled or dropped.
    pub fn view(&mut self, envelope: &Envelope) -> io::Result<StoredMessage> {
        self.out.flush()?;
        Ok(self.item(self.path.clone(), envelope.clone()))
    }

    /// The message as an [`StoredMessage`] whose file is at `path`, read through the open file.
    fn item(&self, path: PathBuf, envelope: Envelope) -> StoredMessage {
        StoredMessage {
            id: self.id.clone(),
            envelope,
            path,
            data_offset: HEADER_LEN,
            data_len: self.data_len,
            file: Some(self.file().clone()),
            pool_name: None,
        }
    }

    /// The file being written.
    fn file(&self) -> &Arc<File> {
        &self.out.get_ref().file
    }

    /// Done with a message that never needs the queue (delivered before it was queued): the
    /// temp file goes to the pool of reusable files.
    pub fn recycle(mut self) {
        self.done = true;
        let file = self.file().clone();
        if let Err(e) = self.free.put(&self.path, &self.id, Some(&file), None) {
            log::warn!("queue: cannot recycle {}: {e}", self.path.display());
            let _ = fs::remove_file(&self.path);
        }
    }

    /// Writes the envelope, fsyncs, names it in `queue/`, fsyncs the folder. When this returns
    /// Ok, the message is durable: this is what a 250 after DATA waits for.
    ///
    /// On error the temp file is removed and nothing is queued. The new name never replaces
    /// a file: a message already queued under the same id makes this commit fail.
    pub fn commit(self, envelope: Envelope) -> io::Result<StoredMessage> {
        self.commit_unsynced(envelope)?.wait()
    }

    /// [`Incoming::commit`] up to the folder's fsync, which the returned [`Unsynced`] waits
    /// for: blocking, or as a task that holds no thread meanwhile.
    pub fn commit_unsynced(mut self, envelope: Envelope) -> io::Result<Unsynced> {
        self.finish_file(&envelope)?;
        let path = self.queue_dir.join(self.id.as_str());
        let pool_name = self.enter_queue(&path).map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => {
                io::Error::new(e.kind(), format!("queue id {} is already in use", self.id))
            }
            _ => e,
        })?;
        self.done = true;
        // Taken after the link or rename: the fsync that serves it started after it.
        let folder = crate::fsutil::DirTicket::take(&self.queue_dir);
        let mut item = self.item(path, envelope);
        item.pool_name = pool_name;
        Ok(Unsynced { item, folder })
    }

    /// Gives the written file its name in `queue/`, never replacing a file there: a link when
    /// it lies in the pool (it keeps its pool name, returned), else a rename.
    ///
    /// A link leaves `free/` untouched. On ext4 without a journal that matters: a file renamed
    /// into a folder has its next fdatasync write that folder too (`ext4_sync_parent`), and
    /// `free/` changes with every removal, so each commit paid two more disk writes for it.
    fn enter_queue(&self, path: &Path) -> io::Result<Option<PathBuf>> {
        if self.path.parent() == Some(self.free.dir.as_path()) {
            match fs::hard_link(&self.path, path) {
                Ok(()) => return Ok(Some(self.path.clone())),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(e),
                // A filesystem without hard links: rename, as for a new file.
                Err(_) => {}
            }
        }
        rename_noreplace(&self.path, path).map(|()| None)
    }

    /// Flushes the data, fills in its length, appends the envelope line, fsyncs.
    fn finish_file(&mut self, envelope: &Envelope) -> io::Result<()> {
        self.out.flush()?;
        let file: &File = self.file();
        let header = format!("{MAGIC}{:0width$}\n", self.data_len, width = LEN_DIGITS);
        file.write_all_at(header.as_bytes(), 0)?;
        // serde_json escapes control characters, so the envelope is exactly one line.
        let mut line = serde_json::to_vec(envelope).map_err(io::Error::other)?;
        line.push(b'\n');
        let data_end = HEADER_LEN + self.data_len;
        let end = data_end + line.len() as u64;
        let stale = self.stale_len.saturating_sub(end);
        if stale > 0 && stale <= MAX_PADDING {
            // A recycled file's old contents go a little past ours: blank them out with
            // empty lines (skipped on load) rather than cut them off, so the size does not
            // change and the fdatasync below writes the data alone, not the inode too.
            line.resize(line.len() + stale as usize, b'\n');
        }
        file.write_all_at(&line, data_end)?;
        if stale > MAX_PADDING {
            file.set_len(end)?;
        }
        // fdatasync covers the data and the size (what reading the file back needs);
        // the name is made durable by the folder's fsync after the link or rename.
        file.sync_data()
    }

    /// Drops the temp file (message refused).
    pub fn abort(self) {
        // Drop does the work.
    }
}

/// A message named in the queue whose folder is not fsync'd yet: not to be acknowledged
/// before [`Unsynced::wait`] or [`Unsynced::durable`] says Ok.
pub struct Unsynced {
    item: StoredMessage,
    folder: crate::fsutil::DirTicket,
}

impl Unsynced {
    /// Blocks until the queue folder's fsync covers the rename.
    pub fn wait(self) -> io::Result<StoredMessage> {
        let outcome = self.folder.wait();
        Self::conclude(self.item, outcome)
    }

    /// Waits, as a task, until the queue folder's fsync covers the rename.
    pub async fn durable(self) -> io::Result<StoredMessage> {
        let outcome = self.folder.durable().await;
        Self::conclude(self.item, outcome)
    }

    fn conclude(item: StoredMessage, outcome: io::Result<()>) -> io::Result<StoredMessage> {
        if let Err(e) = outcome {
            // Not acknowledged, so the client will send it again: a copy that reappears after
            // a crash would be delivered twice. Best effort; the fsync error is what matters.
            let _ = fs::remove_file(&item.path);
            return Err(e);
        }
        Ok(item)
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        match fs::remove_file(&self.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                log::warn!("queue: cannot remove {}: {e}", self.path.display());
            }
            _ => {}
        }
    }
}

/// Reads one committed queue file: header, envelope, then status records in order.
fn load_file(id: QueueId, path: &Path) -> Result<StoredMessage, LoadError> {
    let mut reader = BufReader::new(File::open(path)?);
    let data_len = read_header(&mut reader)?;
    let envelope_at = HEADER_LEN
        .checked_add(data_len)
        .ok_or(LoadError::BadHeader)?;
    reader.seek(SeekFrom::Start(envelope_at))?;
    let Line::Whole(line) = read_line(&mut reader)? else {
        return Err(LoadError::NoEnvelope);
    };
    let mut envelope: Envelope = serde_json::from_slice(&line)?;
    apply_records(&mut reader, &mut envelope, path)?;
    let item = StoredMessage {
        id,
        envelope,
        path: path.to_path_buf(),
        data_offset: HEADER_LEN,
        data_len,
        file: None,
        pool_name: None,
    };
    Ok(item)
}

/// Parses the fixed-size first line and returns the data length.
fn read_header(reader: &mut impl Read) -> Result<u64, LoadError> {
    let mut header = [0u8; HEADER_LEN as usize];
    reader.read_exact(&mut header).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => LoadError::BadHeader,
        _ => LoadError::Io(e),
    })?;
    let (magic, rest) = header.split_at(MAGIC.len());
    let (digits, newline) = rest.split_at(LEN_DIGITS);
    if magic != MAGIC.as_bytes() || newline != b"\n" || !digits.iter().all(u8::is_ascii_digit) {
        return Err(LoadError::BadHeader);
    }
    // All ASCII digits, so this is valid UTF-8; it may still overflow a u64.
    let digits = std::str::from_utf8(digits).map_err(|_| LoadError::BadHeader)?;
    digits.parse().map_err(|_| LoadError::BadHeader)
}

/// Applies status records in file order. A torn or unparsable line was never acknowledged by
/// `record` (it fsyncs after the whole line), so it is skipped.
fn apply_records(
    reader: &mut impl BufRead,
    envelope: &mut Envelope,
    path: &Path,
) -> Result<(), LoadError> {
    loop {
        let line = match read_line(reader)? {
            // Padding over a recycled file's old tail (`Incoming::finish_file`).
            Line::Whole(line) if line.is_empty() => continue,
            Line::Whole(line) => line,
            Line::Torn(len) => {
                log::warn!(
                    "queue: {}: ignoring torn last line ({len} bytes)",
                    path.display()
                );
                return Ok(());
            }
            Line::End => return Ok(()),
        };
        let record = match serde_json::from_slice::<StatusRecord>(&line) {
            Ok(record) => record,
            Err(e) => {
                log::warn!(
                    "queue: {}: skipping damaged status line: {e}",
                    path.display()
                );
                continue;
            }
        };
        let Some(rcpt) = envelope.rcpts.get_mut(record.rcpt) else {
            log::warn!(
                "queue: {}: status for unknown recipient #{}",
                path.display(),
                record.rcpt
            );
            continue;
        };
        rcpt.state = record.state;
        rcpt.last_error = record.last_error;
    }
}

enum Line {
    /// A complete line, without its `\n`.
    Whole(Vec<u8>),
    /// Bytes with no `\n` before EOF: a write cut short by a crash.
    Torn(usize),
    End,
}

fn read_line(reader: &mut impl BufRead) -> io::Result<Line> {
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line)?;
    Ok(match line.pop() {
        Some(b'\n') => Line::Whole(line),
        Some(_) => Line::Torn(line.len() + 1),
        None => Line::End,
    })
}

/// Current time as seconds since the epoch.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::aliases::Recipient;
    use crate::message::QueuedRcpt;
    use std::os::unix::fs::PermissionsExt;

    fn envelope(n_rcpts: usize) -> Envelope {
        let rcpts = (0..n_rcpts)
            .map(|i| QueuedRcpt {
                original: format!("user{i}@example.org"),
                target: Recipient::Mailbox {
                    address: format!("user{i}@example.org"),
                },
                state: RcptState::Pending,
                last_error: None,
            })
            .collect();
        Envelope {
            from: "sender@example.com".to_string(),
            rcpts,
            received_at: 1_700_000_000,
            client: "192.0.2.1 helo=mx.example.com\nnewline".to_string(),
            ..Default::default()
        }
    }

    fn queue() -> (tempfile::TempDir, Queue) {
        let tmp = tempfile::tempdir().unwrap();
        let queue = Queue::open(tmp.path()).unwrap();
        (tmp, queue)
    }

    fn put(queue: &Queue, data: &[u8], env: Envelope) -> StoredMessage {
        let mut incoming = queue.incoming().unwrap();
        incoming.write(data).unwrap();
        incoming.commit(env).unwrap()
    }

    fn read_data(item: &StoredMessage) -> Vec<u8> {
        let mut data = Vec::new();
        item.open_data().unwrap().read_to_end(&mut data).unwrap();
        data
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn append(path: &Path, bytes: &[u8]) {
        OpenOptions::new()
            .append(true)
            .open(path)
            .unwrap()
            .write_all(bytes)
            .unwrap();
    }

    #[test]
    fn queue_id_validation() {
        let cases = [
            ("0123456789abcdef", true),
            ("0123456789ABCDEF", false),
            ("0123456789abcde", false),
            ("0123456789abcdef0", false),
            ("../456789abcdef0", false),
            ("0123456789abcdeg", false),
            ("", false),
            ("tmp", false),
        ];
        for (s, ok) in cases {
            assert_eq!(QueueId::parse(s).is_some(), ok, "{s:?}");
        }
        let a = QueueId::generate();
        assert_eq!(QueueId::parse(a.as_str()), Some(a.clone()));
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(QueueId::generate() > a, "ids sort by time");
    }

    #[test]
    fn commit_then_load_round_trips() {
        let (_tmp, queue) = queue();
        let data = b"Subject: hi\r\n\r\nbody\r\n";
        let item = put(&queue, data, envelope(2));
        assert_eq!(item.path, queue.dir().join(item.id.as_str()));
        assert_eq!(
            (item.data_offset, item.data_len),
            (HEADER_LEN, data.len() as u64)
        );
        assert_eq!(read_data(&item), data);

        let loaded = queue.load_all().unwrap();
        assert_eq!(loaded.len(), 1);
        let got = &loaded[0];
        assert_eq!(got.id, item.id);
        assert_eq!(got.envelope, envelope(2));
        assert_eq!(
            (got.data_offset, got.data_len),
            (item.data_offset, item.data_len)
        );
        assert_eq!(read_data(got), data);
        assert_eq!(names(&queue.dir().join("tmp")), Vec::<String>::new());
    }

    #[test]
    fn file_layout_is_as_documented() {
        let (_tmp, queue) = queue();
        let item = put(&queue, b"abc", envelope(1));
        let raw = fs::read(&item.path).unwrap();
        let text = String::from_utf8(raw).unwrap();
        let mut lines = text.split_inclusive('\n');
        assert_eq!(lines.next(), Some("TAMBO-QUEUE 1 00000000000000000003\n"));
        assert!(
            lines
                .next()
                .unwrap()
                .starts_with("abc{\"from\":\"sender@example.com\"")
        );
        assert_eq!(lines.next(), None);
    }

    #[test]
    fn empty_message() {
        let (_tmp, queue) = queue();
        let item = queue.incoming().unwrap().commit(envelope(1)).unwrap();
        assert_eq!(item.data_len, 0);
        let loaded = queue.load_all().unwrap();
        assert_eq!(loaded[0].data_len, 0);
        assert_eq!(read_data(&loaded[0]), b"");
    }

    #[test]
    fn records_apply_in_order() {
        let (_tmp, queue) = queue();
        let item = put(&queue, b"x", envelope(3));
        let failed = RcptState::Failed {
            reason: "550 no such user".to_string(),
        };
        queue
            .record(&item, 0, &RcptState::Pending, Some("421 try later"))
            .unwrap();
        queue.record(&item, 1, &failed, None).unwrap();
        queue.record(&item, 0, &RcptState::Delivered, None).unwrap();
        queue
            .record(&item, 2, &RcptState::Pending, Some("timeout"))
            .unwrap();

        let rcpts = &queue.load_all().unwrap()[0].envelope.rcpts;
        let got: Vec<_> = rcpts
            .iter()
            .map(|r| (r.state.clone(), r.last_error.clone()))
            .collect();
        let want = [
            (RcptState::Delivered, None),
            (failed, None),
            (RcptState::Pending, Some("timeout".to_string())),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn record_refuses_unknown_recipient_and_removed_message() {
        let (_tmp, queue) = queue();
        let item = put(&queue, b"x", envelope(1));
        let err = queue
            .record(&item, 1, &RcptState::Delivered, None)
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        queue.remove(&item).unwrap();
        assert!(queue.record(&item, 0, &RcptState::Delivered, None).is_err());
        assert!(
            !item.path.exists(),
            "record must not recreate a removed message"
        );
    }

    #[test]
    fn torn_or_damaged_records_are_ignored() {
        let delivered = br#"{"rcpt":0,"state":"delivered","last_error":null}"#;
        let cases: [(&str, &[u8], RcptState); 4] = [
            ("no newline", delivered, RcptState::Pending),
            (
                "cut JSON",
                br#"{"rcpt":0,"state":"deliv"#,
                RcptState::Pending,
            ),
            ("bad JSON line", b"{\"rcpt\":0,\"sta\n", RcptState::Pending),
            (
                "unknown rcpt",
                b"{\"rcpt\":7,\"state\":\"delivered\"}\n",
                RcptState::Pending,
            ),
        ];
        for (name, tail, want) in cases {
            let (_tmp, queue) = queue();
            let item = put(&queue, b"x", envelope(2));
            append(&item.path, tail);
            let loaded = queue.load_all().unwrap();
            assert_eq!(loaded.len(), 1, "{name}");
            assert_eq!(loaded[0].envelope.rcpts[0].state, want, "{name}");
        }
    }

    #[test]
    fn record_after_torn_line_stays_whole() {
        let (_tmp, queue) = queue();
        let item = put(&queue, b"x", envelope(2));
        append(&item.path, br#"{"rcpt":0,"state":"del"#);
        queue.record(&item, 1, &RcptState::Delivered, None).unwrap();
        let rcpts = &queue.load_all().unwrap()[0].envelope.rcpts;
        assert_eq!(rcpts[0].state, RcptState::Pending);
        assert_eq!(rcpts[1].state, RcptState::Delivered);
    }

    #[test]
    fn load_cleans_tmp_and_never_loads_uncommitted() {
        let (_tmp, queue) = queue();
        let committed = put(&queue, b"kept", envelope(1));
        let mut crashed = queue.incoming().unwrap();
        crashed.write(b"never acknowledged").unwrap();
        // As if the process died: no Drop, the temp file stays.
        std::mem::forget(crashed);
        fs::write(queue.dir().join("tmp/junk"), b"junk").unwrap();
        assert_eq!(names(&queue.dir().join("tmp")).len(), 2);

        let loaded = queue.load_all().unwrap();
        let ids: Vec<_> = loaded.iter().map(|i| i.id.clone()).collect();
        assert_eq!(ids, [committed.id]);
        assert_eq!(names(&queue.dir().join("tmp")), Vec::<String>::new());
    }

    /// A pooled file holds no message: same length, all zeros.
    fn assert_cleared(path: &Path) {
        let bytes = fs::read(path).unwrap();
        assert!(!bytes.is_empty(), "kept its blocks");
        assert!(
            bytes.iter().all(|&b| b == 0),
            "message bytes left in the pool"
        );
    }

    #[test]
    fn finished_files_are_cleared_and_overwritten_in_place() {
        use std::os::unix::fs::MetadataExt;
        let (_tmp, queue) = queue();
        let mut a = queue.incoming().unwrap();
        a.write(&[b's'; 3000]).unwrap();
        let item = a.commit(envelope(3)).unwrap();
        queue.record(&item, 0, &RcptState::Delivered, None).unwrap();
        let inode = fs::metadata(&item.path).unwrap().ino();
        let old_len = fs::metadata(&item.path).unwrap().len();
        queue.remove(&item).unwrap();
        assert!(!item.path.exists());
        let recycled = queue.dir().join("free").join(item.id.as_str());
        assert_eq!(fs::metadata(&recycled).unwrap().len(), old_len);
        assert_cleared(&recycled);

        // A shorter message over the longer old one: nothing of the old one is left, and
        // the file keeps its size (the old tail is blanked out with empty lines).
        let mut b = queue.incoming().unwrap();
        b.write(b"new").unwrap();
        let next = b.commit(envelope(1)).unwrap();
        assert_eq!(
            fs::metadata(&next.path).unwrap().ino(),
            inode,
            "same inode reused"
        );
        // Linked into the queue, it keeps its pool name (the same file).
        assert_eq!(next.pool_name.as_deref(), Some(recycled.as_path()));
        assert_eq!(fs::metadata(&recycled).unwrap().ino(), inode);
        let raw = fs::read(&next.path).unwrap();
        assert_eq!(raw.len() as u64, old_len, "size kept");
        let end = HEADER_LEN as usize + 3 + serde_json::to_vec(&envelope(1)).unwrap().len() + 1;
        assert!(
            raw[end..].iter().all(|&b| b == b'\n'),
            "old tail blanked out"
        );
        queue.record(&next, 0, &RcptState::Delivered, None).unwrap();
        let loaded = queue.list().unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].envelope.rcpts.len(), 1);
        assert_eq!(loaded[0].envelope.rcpts[0].state, RcptState::Delivered);
        assert_eq!(read_data(&loaded[0]), b"new");
        assert_eq!(fs::metadata(&next.path).unwrap().mode() & 0o777, 0o600);

        // A longer message over a shorter old one grows the file as usual.
        queue.remove(&next).unwrap();
        let mut c = queue.incoming().unwrap();
        c.write(&[b'l'; 5000]).unwrap();
        let longer = c.commit(envelope(2)).unwrap();
        assert_eq!(fs::metadata(&longer.path).unwrap().ino(), inode);
        assert_eq!(read_data(&queue.list().unwrap()[0]), vec![b'l'; 5000]);
    }

    #[test]
    fn a_recycled_file_is_written_where_it_lies_and_linked_into_the_queue() {
        use std::os::unix::fs::MetadataExt;
        let (_tmp, queue) = queue();
        let first = put(&queue, &[b'a'; 2000], envelope(1));
        let inode = fs::metadata(&first.path).unwrap().ino();
        queue.remove(&first).unwrap();
        let free = queue.dir().join("free");
        assert_eq!(names(&free), [first.id.as_str()]);

        let mut b = queue.incoming().unwrap();
        b.write(b"second").unwrap();
        // Written in `free/`, under its old name: nothing went to `tmp/`.
        assert_eq!(names(&queue.dir().join("tmp")), Vec::<String>::new());
        assert_eq!(names(&free), [first.id.as_str()]);
        assert_ne!(b.id(), &first.id);
        let second = b.commit(envelope(1)).unwrap();
        // A second name in `queue/`; `free/` itself is left as it was.
        assert_eq!(names(&free), [first.id.as_str()]);
        assert_eq!(second.path, queue.dir().join(second.id.as_str()));
        assert_eq!(fs::metadata(&second.path).unwrap().ino(), inode);
        assert_eq!(fs::metadata(&second.path).unwrap().nlink(), 2);
        // The committed item reads through the descriptor it was written with.
        assert!(second.file.is_some());
        assert_eq!(read_data(&second), b"second");
        let loaded = queue.list().unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(read_data(&loaded[0]), b"second");
        assert!(loaded[0].file.is_none());

        // Removal drops the queue name only: the file is back in the pool, cleared.
        queue.remove(&second).unwrap();
        assert!(!second.path.exists());
        assert_eq!(names(&free), [first.id.as_str()]);
        let pooled = free.join(first.id.as_str());
        assert_eq!(fs::metadata(&pooled).unwrap().nlink(), 1);
        assert_cleared(&pooled);
        assert!(queue.list().unwrap().is_empty());
    }

    #[test]
    fn a_restart_keeps_messages_linked_from_the_pool() {
        let (_tmp, queue) = queue();
        let first = put(&queue, b"first", envelope(1));
        queue.remove(&first).unwrap();
        let queued = put(&queue, b"still queued", envelope(1));
        assert!(queued.pool_name.is_some());

        // A restart deletes the pool's names; the queued message keeps its own.
        let restarted = Queue::open(queue.dir().parent().unwrap()).unwrap();
        let loaded = restarted.load_all().unwrap();
        assert_eq!(names(&queue.dir().join("free")), Vec::<String>::new());
        assert_eq!(loaded.len(), 1);
        assert_eq!(read_data(&loaded[0]), b"still queued");
        assert!(loaded[0].pool_name.is_none());
        // Its removal moves it to the pool, as for any file without a pool name.
        restarted.remove(&loaded[0]).unwrap();
        assert_eq!(names(&queue.dir().join("free")), [loaded[0].id.as_str()]);
    }

    #[test]
    fn commit_never_replaces_a_queued_message() {
        let (_tmp, queue) = queue();
        let mut a = queue.incoming().unwrap();
        a.write(b"newcomer").unwrap();
        // A message already queued under the same id (a clash of ids).
        let queued = queue.dir().join(a.id().as_str());
        fs::write(&queued, b"already queued").unwrap();
        let err = a.commit(envelope(1)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert!(err.to_string().contains("already in use"), "{err}");
        assert_eq!(fs::read(&queued).unwrap(), b"already queued");
        assert_eq!(names(&queue.dir().join("tmp")), Vec::<String>::new());
    }

    #[test]
    fn a_commit_can_wait_for_its_folder_fsync_as_a_task() {
        let (_tmp, queue) = queue();
        let items: Vec<StoredMessage> = smol::block_on(async {
            let mut unsynced = Vec::new();
            for i in 0..8u8 {
                let mut incoming = queue.incoming().unwrap();
                incoming.write(&[b'a' + i; 10]).unwrap();
                unsynced.push(incoming.commit_unsynced(envelope(1)).unwrap());
            }
            let mut items = Vec::new();
            for u in unsynced {
                items.push(u.durable().await.unwrap());
            }
            items
        });
        let loaded = queue.load_all().unwrap();
        assert_eq!(loaded.len(), 8);
        for (i, item) in items.iter().enumerate() {
            assert_eq!(read_data(item), vec![b'a' + i as u8; 10]);
        }
    }

    #[test]
    fn start_up_empties_the_pool() {
        let (_tmp, queue) = queue();
        let first = put(&queue, b"done", envelope(1));
        queue.remove(&first).unwrap();
        // As if the process died while receiving into the recycled file.
        let mut crashed = queue.incoming().unwrap();
        crashed.write(b"never acknowledged").unwrap();
        std::mem::forget(crashed);
        let free = queue.dir().join("free");
        assert_eq!(names(&free).len(), 1);

        let restarted = Queue::open(queue.dir().parent().unwrap()).unwrap();
        assert!(restarted.load_all().unwrap().is_empty());
        assert_eq!(names(&free), Vec::<String>::new());
        // And the pool works again from empty.
        let next = put(&restarted, b"next", envelope(1));
        assert_eq!(read_data(&restarted.list().unwrap()[0]), b"next");
        restarted.remove(&next).unwrap();
        assert_eq!(names(&free), [next.id.as_str()]);
    }

    #[test]
    fn a_long_old_tail_is_cut_off() {
        let (_tmp, queue) = queue();
        let mut a = queue.incoming().unwrap();
        a.write(&[b'o'; 3 * MAX_PADDING as usize]).unwrap();
        let old = a.commit(envelope(2)).unwrap();
        queue.remove(&old).unwrap();
        let mut b = queue.incoming().unwrap();
        b.write(b"short").unwrap();
        let item = b.commit(envelope(1)).unwrap();
        let end = HEADER_LEN as usize + 5 + serde_json::to_vec(&envelope(1)).unwrap().len() + 1;
        assert_eq!(fs::metadata(&item.path).unwrap().len() as usize, end);
        queue.record(&item, 0, &RcptState::Delivered, None).unwrap();
        let loaded = queue.load_all().unwrap();
        assert_eq!(read_data(&loaded[0]), b"short");
        assert_eq!(loaded[0].envelope.rcpts[0].state, RcptState::Delivered);
    }

    #[test]
    fn large_files_are_deleted_not_pooled() {
        let (_tmp, queue) = queue();
        let mut a = queue.incoming().unwrap();
        a.write(&vec![b'x'; FREE_FILE_MAX as usize + 1]).unwrap();
        let item = a.commit(envelope(1)).unwrap();
        queue.remove(&item).unwrap();
        assert!(!item.path.exists());
        assert_eq!(names(&queue.dir().join("free")), Vec::<String>::new());
    }

    #[test]
    fn rename_noreplace_never_replaces() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b, c) = (
            tmp.path().join("a"),
            tmp.path().join("b"),
            tmp.path().join("c"),
        );
        fs::write(&a, b"a").unwrap();
        fs::write(&b, b"b").unwrap();
        let err = rename_noreplace(&a, &b).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&b).unwrap(), b"b");
        rename_noreplace(&a, &c).unwrap();
        assert!(!a.exists());
        assert_eq!(fs::read(&c).unwrap(), b"a");
    }

    #[test]
    fn viewed_then_recycled_message_is_never_queued() {
        use std::os::unix::fs::MetadataExt;
        let (_tmp, queue) = queue();
        let mut a = queue.incoming().unwrap();
        a.write(b"delivered ").unwrap();
        a.write(b"before the queue").unwrap();
        let mut env = envelope(1);
        env.headers = "X-Added: 1\r\n".into();
        let view = a.view(&env).unwrap();
        let mut data = String::new();
        view.open_data().unwrap().read_to_string(&mut data).unwrap();
        assert_eq!(data, "X-Added: 1\r\ndelivered before the queue");
        assert_eq!(view.message_len(), data.len() as u64);
        let inode = fs::metadata(&view.path).unwrap().ino();
        a.recycle();
        assert!(!view.path.exists(), "temp file left behind");
        assert!(
            queue.list().unwrap().is_empty(),
            "recycled message was queued"
        );
        let recycled = queue.dir().join("free").join(view.id.as_str());
        assert_cleared(&recycled);
        let next = queue.incoming().unwrap().commit(envelope(1)).unwrap();
        assert_eq!(
            fs::metadata(&next.path).unwrap().ino(),
            inode,
            "inode reused"
        );
    }

    #[test]
    fn abort_and_drop_leave_nothing() {
        let (_tmp, queue) = queue();
        let mut a = queue.incoming().unwrap();
        a.write(b"refused").unwrap();
        a.abort();
        let mut b = queue.incoming().unwrap();
        b.write(b"connection lost").unwrap();
        drop(b);
        assert_eq!(names(queue.dir()), ["free", "tmp"]);
        assert_eq!(names(&queue.dir().join("tmp")), Vec::<String>::new());
        assert!(queue.load_all().unwrap().is_empty());
    }

    #[test]
    fn abort_when_temp_already_gone_does_not_panic() {
        let (_tmp, queue) = queue();
        let a = queue.incoming().unwrap();
        fs::remove_file(queue.dir().join("tmp").join(a.id().as_str())).unwrap();
        a.abort();
    }

    #[test]
    fn modes_are_private() {
        let tmp = tempfile::tempdir().unwrap();
        let queue = Queue::open(&tmp.path().join("data")).unwrap();
        let incoming = queue.incoming().unwrap();
        let tmp_file = queue.dir().join("tmp").join(incoming.id().as_str());
        assert_eq!(mode(&tmp_file), 0o600);
        let item = incoming.commit(envelope(1)).unwrap();
        assert_eq!(mode(&item.path), 0o600);
        for dir in ["data", "data/queue", "data/queue/tmp"] {
            assert_eq!(mode(&tmp.path().join(dir)), 0o700, "{dir}");
        }
    }

    #[test]
    fn large_message_streams_with_right_offset() {
        let (_tmp, queue) = queue();
        let mut incoming = queue.incoming().unwrap();
        let chunk: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
        for _ in 0..160 {
            incoming.write(&chunk).unwrap();
        }
        incoming.commit(envelope(1)).unwrap();
        let loaded = queue.load_all().unwrap();
        let item = &loaded[0];
        assert_eq!(
            (item.data_offset, item.data_len),
            (HEADER_LEN, 10 * 1024 * 1024)
        );
        let data = read_data(item);
        assert_eq!(data.len(), 10 * 1024 * 1024);
        assert!(data.chunks(chunk.len()).all(|c| c == chunk));
        assert_eq!(item.envelope, envelope(1));
    }

    #[test]
    fn corrupted_files_are_skipped_but_kept() {
        let (_tmp, queue) = queue();
        let good = put(&queue, b"good", envelope(1));
        let valid_header = format!("{MAGIC}{:020}\n", 4);
        let cases: [(&str, Vec<u8>); 6] = [
            ("000000000000000a", b"garbage".to_vec()),
            ("000000000000000b", PLACEHOLDER.to_vec()),
            (
                "000000000000000c",
                format!("{valid_header}data{{not json}}\n").into_bytes(),
            ),
            ("000000000000000d", format!("{valid_header}da").into_bytes()),
            (
                "000000000000000e",
                format!("{MAGIC}99999999999999999999\n").into_bytes(),
            ),
            ("000000000000000f", Vec::new()),
        ];
        for (name, contents) in &cases {
            fs::write(queue.dir().join(name), contents).unwrap();
        }
        fs::write(queue.dir().join("not-an-id"), b"x").unwrap();
        let loaded = queue.load_all().unwrap();
        let ids: Vec<_> = loaded.iter().map(|i| i.id.clone()).collect();
        assert_eq!(ids, [good.id]);
        for (name, contents) in &cases {
            assert_eq!(
                &fs::read(queue.dir().join(name)).unwrap(),
                contents,
                "{name}"
            );
        }
    }

    #[test]
    fn load_is_sorted_and_remove_deletes() {
        let (_tmp, queue) = queue();
        let items: Vec<StoredMessage> = (0..5)
            .map(|i| put(&queue, &[b'0' + i], envelope(1)))
            .collect();
        let mut want: Vec<_> = items.iter().map(|i| i.id.clone()).collect();
        want.sort();
        let got: Vec<_> = queue
            .load_all()
            .unwrap()
            .into_iter()
            .map(|i| i.id)
            .collect();
        assert_eq!(got, want);
        queue.remove(&items[2]).unwrap();
        queue.remove(&items[2]).unwrap(); // Idempotent.
        assert_eq!(queue.load_all().unwrap().len(), 4);
        assert!(!items[2].path.exists());
    }

    #[test]
    fn concurrent_commits_are_independent() {
        let (_tmp, queue) = queue();
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let queue = queue.clone();
                std::thread::spawn(move || {
                    (0..10)
                        .map(|i| put(&queue, format!("{t}-{i}").as_bytes(), envelope(1)).id)
                        .count()
                })
            })
            .collect();
        let total: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(total, 80);
        let loaded = queue.load_all().unwrap();
        assert_eq!(loaded.len(), 80);
        let mut datas: Vec<_> = loaded.iter().map(read_data).collect();
        datas.sort();
        datas.dedup();
        assert_eq!(datas.len(), 80);
    }
}
