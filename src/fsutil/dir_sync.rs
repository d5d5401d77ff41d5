//! Shared fsyncs of a directory (group commit): one fsync covers every rename or unlink made
//! in the directory before it started, so under load one fsync serves many sessions.
//!
//! Three ways to ask, one coalescer per directory:
//! - [`fsync_dir_shared`]: blocking; the caller leads an fsync when none is running, else
//!   waits for one that started after its call (Maildir deliveries, blocking commits);
//! - [`DirTicket::take`] then [`DirTicket::durable`]: the caller does not wait on a thread.
//!   A background thread leads the fsyncs, back to back while requests keep coming, and
//!   wakes the waiting tasks; the commit of a queued message uses it, so a session waiting for
//!   its fsync holds no blocking thread and costs no thread wake-up of its own;
//! - [`fsync_dir_soon`]: nobody waits; the next fsync of the directory covers it, or the
//!   background thread runs one at most [`SOON`] later.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use super::fsync_dir;

/// The most a change passed to [`fsync_dir_soon`] waits for its fsync.
pub const SOON: Duration = Duration::from_secs(1);

/// fsyncs a directory, sharing the work with every other caller for the same directory at
/// the same time: returns once an fsync that *started after this call* has completed, so
/// whatever the caller renamed or unlinked before calling is durable.
pub fn fsync_dir_shared(dir: &Path) -> io::Result<()> {
    let syncer = dir_syncer(dir);
    let ticket = syncer.lock().take_ticket();
    syncer.wait_blocking(dir, ticket)
}

/// Asks for `dir` to be fsync'd soon, without waiting for it: for changes whose durability
/// nobody waits on (a finished message leaving the queue). The next fsync of the same
/// directory covers them, as does a background fsync at most [`SOON`] later, so under load
/// they cost no fsync of their own.
pub fn fsync_dir_soon(dir: &Path) {
    let syncer = dir_syncer(dir);
    let mut state = syncer.lock();
    if state.soon {
        // Already asked for, and not started yet: that fsync will cover this change too.
        return;
    }
    state.soon = true;
    let started = syncer.ensure_leader(&mut state, dir);
    drop(state);
    if started {
        syncer.changed.notify_all();
    }
}

/// A place in the line for an fsync of a directory, taken after a change in it (a rename
/// into the queue). [`DirTicket::durable`] waits, without a thread, until an fsync that
/// started after [`DirTicket::take`] has completed.
pub struct DirTicket {
    syncer: Arc<DirSyncer>,
    dir: PathBuf,
    ticket: u64,
    /// The background leader is running; without it the wait falls back to a blocking one.
    led: bool,
}

impl DirTicket {
    pub fn take(dir: &Path) -> DirTicket {
        let syncer = dir_syncer(dir);
        let mut state = syncer.lock();
        let ticket = state.take_ticket();
        let led = syncer.ensure_leader(&mut state, dir);
        let idle = !state.running;
        drop(state);
        if led && idle {
            syncer.changed.notify_all();
        }
        DirTicket {
            syncer,
            dir: dir.to_path_buf(),
            ticket,
            led,
        }
    }

    /// Waits for the fsync that covers this ticket, and returns its outcome.
    pub async fn durable(self) -> io::Result<()> {
        if !self.led {
            let DirTicket {
                syncer,
                dir,
                ticket,
                ..
            } = self;
            return smol::unblock(move || syncer.wait_blocking(&dir, ticket)).await;
        }
        loop {
            // Listen first, then check: a round that ends between the two still wakes us.
            let listener = self.syncer.round_done.listen();
            if let Some(outcome) = self.syncer.lock().outcome(self.ticket) {
                return outcome;
            }
            listener.await;
        }
    }

    /// The blocking wait, for callers on a blocking thread.
    pub fn wait(self) -> io::Result<()> {
        self.syncer.wait_blocking(&self.dir, self.ticket)
    }
}

/// One coalescer per directory path, created on first use and kept (a mail server has few
/// directories that see renames: the queue, and one `new/` per mailbox).
fn dir_syncer(dir: &Path) -> Arc<DirSyncer> {
    static SYNCERS: OnceLock<Mutex<HashMap<PathBuf, Arc<DirSyncer>>>> = OnceLock::new();
    let map = SYNCERS.get_or_init(Default::default);
    let mut map = map.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(syncer) = map.get(dir) {
        return syncer.clone();
    }
    map.entry(dir.to_path_buf()).or_default().clone()
}

#[derive(Default)]
struct DirSyncer {
    state: Mutex<SyncState>,
    /// Notified when a round ends and when work arrives for the background leader; blocking
    /// waiters and the leader wait on it.
    changed: Condvar,
    /// Notified when a round ends, for [`DirTicket::durable`].
    round_done: event_listener::Event,
}

struct FailedBatch {
    after: u64,
    upto: u64,
    kind: io::ErrorKind,
    msg: String,
}

#[derive(Default)]
struct SyncState {
    /// Requests so far (a request's ticket is the value after its increment).
    requested: u64,
    /// Every ticket up to this one is covered by a completed fsync.
    completed: u64,
    /// The tickets of the latest failed batch (`after < ticket <= upto`), and its error.
    failed: Option<FailedBatch>,
    running: bool,
    /// Changes passed to `fsync_dir_soon` wait for an fsync that has not started yet.
    soon: bool,
    /// The background leader thread is running.
    leader: bool,
    /// fsyncs run so far (for tests).
    rounds: u64,
}

impl SyncState {
    /// A new request's ticket: served by the first fsync that starts after this.
    fn take_ticket(&mut self) -> u64 {
        self.requested += 1;
        self.requested
    }

    /// The outcome for `ticket`, once an fsync covering it has completed.
    fn outcome(&self, ticket: u64) -> Option<io::Result<()>> {
        if self.completed < ticket {
            return None;
        }
        Some(match &self.failed {
            Some(f) if f.after < ticket && ticket <= f.upto => {
                Err(io::Error::new(f.kind, f.msg.clone()))
            }
            _ => Ok(()),
        })
    }

    fn pending(&self) -> bool {
        self.requested > self.completed
    }
}

impl DirSyncer {
    fn lock(&self) -> MutexGuard<'_, SyncState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts the background leader of this directory unless it runs; whether it runs.
    fn ensure_leader(self: &Arc<Self>, state: &mut SyncState, dir: &Path) -> bool {
        if state.leader {
            return true;
        }
        let (leader, owned) = (self.clone(), dir.to_path_buf());
        let spawned = std::thread::Builder::new()
            .name("dir-sync".into())
            .spawn(move || leader.lead_forever(&owned));
        match spawned {
            Ok(_) => state.leader = true,
            // Waiters then lead their own fsyncs, and `soon` changes wait for the next one
            // (or the kernel's writeback).
            Err(e) => log::warn!(
                "cannot start the background fsync of {}: {e}",
                dir.display()
            ),
        }
        state.leader
    }

    /// Blocks until an fsync covering `ticket` has completed, leading one if none runs.
    fn wait_blocking(&self, dir: &Path, ticket: u64) -> io::Result<()> {
        let mut state = self.lock();
        loop {
            if let Some(outcome) = state.outcome(ticket) {
                return outcome;
            }
            state = if state.running {
                self.changed.wait(state).unwrap_or_else(|p| p.into_inner())
            } else {
                self.round(state, dir)
            };
        }
    }

    /// The background leader: runs an fsync as soon as tickets wait (back to back while they
    /// keep coming), and one at most [`SOON`] after a `soon` request that nothing covered.
    fn lead_forever(&self, dir: &Path) {
        let mut state = self.lock();
        loop {
            if state.running || !(state.pending() || state.soon) {
                state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            if !state.pending() {
                // Only `soon`: give a commit's fsync the chance to cover it first.
                let deadline = Instant::now() + SOON;
                while state.soon && !state.pending() && !state.running {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    state = self
                        .changed
                        .wait_timeout(state, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                if state.running || !(state.soon || state.pending()) {
                    continue;
                }
            }
            let soon_only = !state.pending();
            state = self.round(state, dir);
            if soon_only && let Some(f) = &state.failed {
                // Nobody waits on these changes, so nobody else reports the failure.
                log::warn!("background fsync of {} failed: {}", dir.display(), f.msg);
            }
        }
    }

    /// One fsync, covering every ticket issued and every `soon` change made before it starts.
    fn round<'a>(
        &'a self,
        mut state: MutexGuard<'a, SyncState>,
        dir: &Path,
    ) -> MutexGuard<'a, SyncState> {
        state.running = true;
        state.soon = false;
        let (after, batch) = (state.completed, state.requested);
        drop(state);
        let result = fsync_dir(dir);
        let mut state = self.lock();
        state.running = false;
        state.completed = batch;
        state.rounds += 1;
        if let Err(e) = result {
            state.failed = Some(FailedBatch {
                after,
                upto: batch,
                kind: e.kind(),
                msg: e.to_string(),
            });
        }
        self.changed.notify_all();
        self.round_done.notify(usize::MAX);
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// fsyncs of `dir` run so far.
    fn rounds(dir: &Path) -> u64 {
        dir_syncer(dir).lock().rounds
    }

    #[test]
    fn soon_sync_runs_in_the_background_or_rides_on_a_shared_one() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        fs::write(dir.join("a"), b"x").unwrap();
        fsync_dir_soon(&dir);
        let deadline = Instant::now() + SOON * 5;
        while rounds(&dir) == 0 {
            assert!(Instant::now() < deadline, "no background fsync");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!dir_syncer(&dir).lock().soon);

        // A shared fsync that starts after the request covers it: none runs later.
        fs::write(dir.join("b"), b"x").unwrap();
        fsync_dir_soon(&dir);
        fsync_dir_shared(&dir).unwrap();
        let after_shared = rounds(&dir);
        assert!(!dir_syncer(&dir).lock().soon, "covered by the shared fsync");
        std::thread::sleep(SOON + Duration::from_millis(300));
        assert_eq!(rounds(&dir), after_shared, "no redundant background fsync");
    }

    #[test]
    fn shared_dir_sync_serves_concurrent_callers_and_reports_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let threads: Vec<_> = (0..16)
            .map(|i| {
                let dir = dir.clone();
                std::thread::spawn(move || {
                    fs::write(dir.join(format!("f{i}")), b"x").unwrap();
                    fsync_dir_shared(&dir)
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap().unwrap();
        }
        let missing = tmp.path().join("missing");
        assert!(fsync_dir_shared(&missing).is_err());
        // A later success is not spoiled by the earlier failure, and vice versa.
        fs::create_dir(&missing).unwrap();
        fsync_dir_shared(&missing).unwrap();
    }

    #[test]
    fn tickets_are_served_without_a_waiting_thread() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let tickets: Vec<DirTicket> = (0..32)
            .map(|i| {
                fs::write(dir.join(format!("f{i}")), b"x").unwrap();
                DirTicket::take(&dir)
            })
            .collect();
        let last = tickets.last().map(|t| t.ticket).unwrap();
        smol::block_on(async {
            for ticket in tickets {
                let waited = smol::future::or(async { Some(ticket.durable().await) }, async {
                    smol::Timer::after(Duration::from_secs(10)).await;
                    None
                })
                .await;
                waited.expect("served within 10 s").unwrap();
            }
        });
        let syncer = dir_syncer(&dir);
        let state = syncer.lock();
        assert!(state.completed >= last);
        assert!(state.leader, "led by the background thread");
        assert!(state.rounds >= 1 && state.rounds <= last);
    }

    #[test]
    fn a_failed_fsync_fails_exactly_its_tickets() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("d");
        // No such directory: the fsync fails, and so does every ticket it covers.
        let ticket = DirTicket::take(&dir);
        let outcome = smol::block_on(ticket.durable());
        assert!(outcome.is_err());
        // Once the directory exists, a new ticket succeeds; the blocking wait agrees.
        fs::create_dir(&dir).unwrap();
        smol::block_on(DirTicket::take(&dir).durable()).unwrap();
        DirTicket::take(&dir).wait().unwrap();
        fsync_dir_shared(&dir).unwrap();
    }
}
