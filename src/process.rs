//! Child processes under supervision: the post-data hook (`hooks.rs`) and delivery commands
//! (`courier/command.rs`) are both started and watched here; what an exit means is theirs.
//!
//! A [`Command`] runs in a process group of its own with a cleared environment plus the
//! variables given. Its stdin is fed from an [`AsyncRead`] a chunk at a time (a message is
//! never held whole), stdout (and stderr, when asked) is kept up to a cap and the rest read
//! and dropped, so the child never blocks on a full pipe; its exit is awaited under a time
//! limit. At the limit, or when the future is dropped (shutdown), the whole group is killed:
//! whatever the command started in the background goes with it. [`Finished`] says how it
//! ended.
//!
//! # How
//!
//! The command is configured as a `std::process::Command` (for `process_group`, which
//! `smol::process`, smol's re-export of async-process, does not expose) and converted. Its
//! pipes are then async: feeding stdin, draining the output and waiting for the exit all run
//! on the caller's executor, without a thread per child.

use smol::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use smol::process::{Child, ChildStdin, Stdio};
use std::ffi::{OsStr, OsString};
use std::future::Future;
use std::io;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Output kept per stream unless [`Command::keep`] says otherwise.
pub const DEFAULT_KEPT: usize = 64 * 1024;
/// How long output is still read after the child exited (see [`Command::run`]).
const OUTPUT_GRACE: Duration = Duration::from_secs(1);
/// Input read (and written) at a time.
const CHUNK: usize = 64 * 1024;

/// A program to run: what it is given, and the bounds it runs within.
#[derive(Debug, Clone)]
pub struct Command {
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    dir: Option<PathBuf>,
    limit: Duration,
    kept: usize,
    label: &'static str,
}

/// What becomes of the child's stderr.
pub enum Stderr<'a> {
    /// Kept up to the cap, as stdout is, in [`Finished::stderr`].
    Keep,
    /// Handed over a chunk at a time as it is read (e.g. to be logged line by line while the
    /// child runs); [`Finished::stderr`] stays empty.
    Each(&'a mut (dyn FnMut(&[u8]) + Send)),
}

/// How a run ended, with the output kept.
#[derive(Debug)]
pub struct Finished {
    pub end: End,
    pub stdout: Captured,
    /// Empty unless [`Stderr::Keep`].
    pub stderr: Captured,
}

/// How the child ended, or why it never ran to its own end.
#[derive(Debug)]
pub enum End {
    /// Exited with this status.
    Exited(i32),
    /// Killed by this signal (not by us).
    Signaled(i32),
    /// Still running at the time limit: killed with its process group.
    TimedOut,
    /// Could not be started (not found, not executable, a NUL in an argument, no resources).
    SpawnFailed(io::Error),
    /// Reading the input failed: the group was killed before its stdin was closed, so the
    /// child never took a truncated input for a whole one.
    InputFailed(io::Error),
    /// Its status could not be collected.
    WaitFailed(io::Error),
}

impl End {
    fn of(status: ExitStatus) -> End {
        match (status.code(), status.signal()) {
            (Some(code), _) => End::Exited(code),
            (None, Some(signal)) => End::Signaled(signal),
            // waitpid without WUNTRACED reports only exits and deaths by a signal.
            (None, None) => {
                End::WaitFailed(io::Error::other(format!("ended abnormally ({status})")))
            }
        }
    }
}

/// The first bytes of a stream, and whether there was more.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Captured {
    pub bytes: Vec<u8>,
    pub truncated: bool,
}

impl Captured {
    fn keep(&mut self, chunk: &[u8], cap: usize) {
        let room = cap.saturating_sub(self.bytes.len());
        self.bytes
            .extend_from_slice(&chunk[..chunk.len().min(room)]);
        self.truncated |= chunk.len() > room;
    }
}

impl Command {
    /// `program` (a path, or a name looked up in the `PATH` given with [`Command::env`]),
    /// to be stopped after `limit`.
    pub fn new(program: impl AsRef<OsStr>, limit: Duration) -> Command {
        Command {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            env: Vec::new(),
            dir: None,
            limit,
            kept: DEFAULT_KEPT,
            label: "command",
        }
    }

    pub fn args(mut self, args: impl IntoIterator<Item = impl AsRef<OsStr>>) -> Command {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Adds variables to the environment, which is otherwise empty.
    pub fn envs(
        mut self,
        vars: impl IntoIterator<Item = (impl AsRef<OsStr>, impl AsRef<OsStr>)>,
    ) -> Command {
        self.env.extend(
            vars.into_iter()
                .map(|(k, v)| (k.as_ref().to_owned(), v.as_ref().to_owned())),
        );
        self
    }

    pub fn env(self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Command {
        self.envs([(key, value)])
    }

    /// The working directory (else ours).
    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Command {
        self.dir = Some(dir.as_ref().to_owned());
        self
    }

    /// Bytes kept per captured stream.
    pub fn keep(mut self, bytes: usize) -> Command {
        self.kept = bytes;
        self
    }

    /// What the child is called in our logs.
    pub fn label(mut self, label: &'static str) -> Command {
        self.label = label;
        self
    }

    /// Runs the command with `input` on stdin, to its end or the time limit.
    ///
    /// A child that stops reading its input (exits, closes stdin) is not an error: the write
    /// fails with EPIPE, feeding stops, and its exit decides. Output held open by something
    /// the child left running in the background is not waited for more than
    /// `OUTPUT_GRACE` after the exit: the exit is what counts, and a delivery that
    /// succeeded must not turn into a time-out (and be delivered again).
    pub async fn run(&self, input: impl AsyncRead + Unpin, stderr: Stderr<'_>) -> Finished {
        let (mut out, mut err) = (Captured::default(), Captured::default());
        let mut child = match self.spawn() {
            Ok(child) => child,
            Err(e) => {
                return Finished {
                    end: End::SpawnFailed(e),
                    stdout: out,
                    stderr: err,
                };
            }
        };
        let group = ProcessGroup::of(&child);
        let (stdin, stdout_pipe, stderr_pipe) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take());
        let (exited_tx, exited_rx) = smol::channel::bounded::<()>(1);
        let feed = feed(stdin, &group, input, self.label);
        let exited = async {
            let end = wait_within(&mut child, &group, feed, self.limit).await;
            drop(exited_tx);
            end
        };
        let kept = self.kept;
        let drained = async {
            let stdout_drained = read_all(stdout_pipe, |chunk| out.keep(chunk, kept));
            let stderr_drained = async {
                match stderr {
                    Stderr::Keep => read_all(stderr_pipe, |chunk| err.keep(chunk, kept)).await,
                    Stderr::Each(each) => read_all(stderr_pipe, each).await,
                }
            };
            smol::future::zip(stdout_drained, stderr_drained).await;
        };
        let grace = async {
            let _ = exited_rx.recv().await; // Err once the sender is gone: the child ended.
            smol::Timer::after(OUTPUT_GRACE).await;
        };
        let (end, ()) = smol::future::zip(exited, smol::future::or(drained, grace)).await;
        Finished {
            end,
            stdout: out,
            stderr: err,
        }
    }

    fn spawn(&self) -> io::Result<Child> {
        let mut std_cmd = std::process::Command::new(&self.program);
        std_cmd
            .args(&self.args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            // Its own group, so that a kill -pgid also reaches whatever it starts.
            .process_group(0);
        if let Some(dir) = &self.dir {
            std_cmd.current_dir(dir);
        }
        let mut cmd = smol::process::Command::from(std_cmd);
        // The conversion forgets stdio settings: set them on the async command.
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd.spawn()
    }
}

/// Feeds the input and waits for the exit; at the time limit, kills the process group.
async fn wait_within(
    child: &mut Child,
    group: &ProcessGroup,
    feed: impl Future<Output = io::Result<()>>,
    limit: Duration,
) -> End {
    let finished = async {
        let fed = feed.await;
        let status = child.status().await;
        group.mark_reaped();
        match (fed, status) {
            // The child was killed for it: its status means nothing.
            (Err(e), _) => End::InputFailed(e),
            (Ok(()), Err(e)) => End::WaitFailed(e),
            (Ok(()), Ok(status)) => End::of(status),
        }
    };
    let timer = async {
        smol::Timer::after(limit).await;
        End::TimedOut
    };
    let end = smol::future::or(finished, timer).await;
    if let End::TimedOut = end {
        group.kill();
        // Reap it; the kill already decided the outcome.
        let _ = child.status().await;
        group.mark_reaped();
    }
    end
}

/// Copies `input` to the child's stdin, then closes it.
///
/// A write error means the child stopped reading (EPIPE: it exited or closed stdin); not ours
/// to judge, its exit decides. A read error is ours: the group is killed *before* stdin is
/// closed, so the child never sees the end of a truncated input.
async fn feed(
    stdin: Option<ChildStdin>,
    group: &ProcessGroup,
    mut input: impl AsyncRead + Unpin,
    label: &str,
) -> io::Result<()> {
    let Some(mut stdin) = stdin else {
        return Ok(());
    };
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match input.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                group.kill();
                drop(stdin);
                return Err(e);
            }
        };
        if let Err(e) = stdin.write_all(&buf[..n]).await {
            log::debug!("{label} stopped reading its input: {e}");
            return Ok(());
        }
    }
    // Dropping stdin afterwards closes the pipe: the child sees the end of its input.
    let _ = stdin.close().await;
    Ok(())
}

/// Reads a stream to its end, handing each chunk to `each`.
async fn read_all(pipe: Option<impl AsyncRead + Unpin>, mut each: impl FnMut(&[u8])) {
    let Some(mut pipe) = pipe else {
        return;
    };
    let mut buf = [0u8; 4096];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => each(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
}

/// The child's process group: killed on time-out, on an input read error, and when the run
/// is dropped (shutdown) before the child was reaped.
struct ProcessGroup {
    pgid: libc::pid_t,
    /// Once the child is reaped its pid (= the group id) may be reused: no more kills.
    /// Atomic only so that a `&ProcessGroup` held across awaits keeps the future `Send`.
    reaped: AtomicBool,
}

impl ProcessGroup {
    fn of(child: &Child) -> ProcessGroup {
        ProcessGroup {
            // Pids fit in pid_t; std gets them from the kernel as pid_t.
            pgid: child.id() as libc::pid_t,
            reaped: AtomicBool::new(false),
        }
    }

    fn mark_reaped(&self) {
        self.reaped.store(true, Ordering::Relaxed);
    }

    fn kill(&self) {
        if self.reaped.load(Ordering::Relaxed) || self.pgid <= 0 {
            return;
        }
        // SAFETY: kill(2) has no memory-safety preconditions. A negative pid names the group
        // that process_group(0) created; the leader is not reaped yet, so the id is still ours.
        unsafe {
            libc::kill(-self.pgid, libc::SIGKILL);
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use std::time::Instant;

    const LIMIT: Duration = Duration::from_secs(10);

    /// `/bin/sh -c script`, with a `PATH` (the environment is otherwise empty).
    fn sh(script: &str, limit: Duration) -> Command {
        Command::new("/bin/sh", limit)
            .args(["-c", script])
            .env("PATH", "/usr/bin:/bin")
    }

    fn run(cmd: &Command, input: &[u8]) -> Finished {
        smol::block_on(cmd.run(input, Stderr::Keep))
    }

    /// Whether `pid` is gone (or a zombie awaiting its new parent) within two seconds.
    fn wait_dead(pid: &str) -> bool {
        for _ in 0..40 {
            match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                Err(_) => return true,
                Ok(stat)
                    if stat
                        .rsplit(')')
                        .next()
                        .unwrap_or("")
                        .trim()
                        .starts_with('Z') =>
                {
                    return true;
                }
                Ok(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        false
    }

    #[test]
    fn exit_statuses_and_signals() {
        let cases: &[(&str, &str)] = &[
            ("exit 0", "Exited(0)"),
            ("exit 1", "Exited(1)"),
            ("exit 20", "Exited(20)"),
            ("exit 75", "Exited(75)"),
            ("kill -TERM $$", "Signaled(15)"),
            ("kill -KILL $$", "Signaled(9)"),
        ];
        for (script, want) in cases {
            let got = run(&sh(script, LIMIT), b"");
            assert_eq!(format!("{:?}", got.end), *want, "{script}");
        }
    }

    #[test]
    fn missing_program_is_a_spawn_failure() {
        let got = run(&Command::new("/nonexistent/program", LIMIT), b"x");
        let End::SpawnFailed(e) = got.end else {
            panic!("{:?}", got.end);
        };
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        // A NUL byte cannot reach exec: refused at spawn, not at run time.
        let got = run(&Command::new("/bin/echo", LIMIT).args(["a\0b"]), b"");
        assert!(
            matches!(&got.end, End::SpawnFailed(e) if e.kind() == io::ErrorKind::InvalidInput),
            "{:?}",
            got.end
        );
    }

    #[test]
    fn time_limit_kills_the_whole_group() {
        // The background sleep is a child of the shell: it must go too.
        let cmd = sh("sleep 30 & echo $!; wait", Duration::from_millis(500));
        let start = Instant::now();
        let got = run(&cmd, b"");
        let took = start.elapsed();
        assert!(matches!(got.end, End::TimedOut), "{:?}", got.end);
        assert!(
            took >= Duration::from_millis(500) && took < Duration::from_secs(5),
            "{took:?}"
        );
        // Output written before the limit is still reported.
        let pid = String::from_utf8(got.stdout.bytes).unwrap();
        assert!(!pid.trim().is_empty());
        assert!(wait_dead(pid.trim()), "sleep {pid} survived the time limit");
    }

    #[test]
    fn dropping_the_run_kills_the_whole_group() {
        let tmp = tempfile::tempdir().unwrap();
        let pid_file = tmp.path().join("pid");
        let cmd = sh("sleep 30 & echo $! > \"$0\"; wait", LIMIT).args([&pid_file]);
        let pid = smol::block_on(smol::future::or(
            async {
                cmd.run(&b""[..], Stderr::Keep).await;
                None
            },
            async {
                let deadline = Instant::now() + Duration::from_secs(5);
                while Instant::now() < deadline {
                    match std::fs::read_to_string(&pid_file) {
                        Ok(pid) if pid.ends_with('\n') => return Some(pid),
                        _ => smol::Timer::after(Duration::from_millis(20)).await,
                    };
                }
                None
            },
        ));
        // The run future is dropped here, as at shutdown.
        let pid = pid.expect("the command never wrote its pid");
        assert!(wait_dead(pid.trim()), "sleep {pid} survived the drop");
    }

    #[test]
    fn output_is_capped_and_drained() {
        // 2 MB on each stream: not draining either would block the child for good.
        let flood = "head -c 2000000 /dev/zero; head -c 2000000 /dev/zero >&2; echo done >&2";
        let got = run(&sh(flood, LIMIT).keep(1000), b"");
        assert!(matches!(got.end, End::Exited(0)), "{:?}", got.end);
        assert_eq!((got.stdout.bytes.len(), got.stdout.truncated), (1000, true));
        assert_eq!((got.stderr.bytes.len(), got.stderr.truncated), (1000, true));

        let got = run(&sh("printf abc; printf de >&2", LIMIT).keep(3), b"");
        assert_eq!(got.stdout.bytes, b"abc");
        assert!(!got.stdout.truncated);
        assert_eq!(
            (&got.stderr.bytes[..], got.stderr.truncated),
            (&b"de"[..], false)
        );
    }

    #[test]
    fn stderr_handed_over_as_it_comes() {
        let mut seen = Vec::new();
        let mut each = |chunk: &[u8]| seen.extend_from_slice(chunk);
        let cmd = sh("echo out; echo one >&2; echo two >&2", LIMIT);
        let got = smol::block_on(cmd.run(&b""[..], Stderr::Each(&mut each)));
        assert_eq!(got.stdout.bytes, b"out\n");
        assert_eq!(got.stderr, Captured::default());
        assert_eq!(seen, b"one\ntwo\n");
    }

    #[test]
    fn input_reaches_stdin_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        let input: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let got = run(&sh("cat > \"$0\"", LIMIT).args([&out]), &input);
        assert!(matches!(got.end, End::Exited(0)), "{:?}", got.end);
        assert!(std::fs::read(&out).unwrap() == input, "content differs");
    }

    #[test]
    fn child_that_reads_nothing_decides_by_its_exit() {
        let input = vec![b'x'; 4_000_000];
        let start = Instant::now();
        let got = run(&sh("exit 3", LIMIT), &input);
        assert!(matches!(got.end, End::Exited(3)), "{:?}", got.end);
        let got = run(&sh("exec 0<&-; echo closed; exit 0", LIMIT), &input);
        assert!(matches!(got.end, End::Exited(0)), "{:?}", got.end);
        assert_eq!(got.stdout.bytes, b"closed\n");
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
        // One that neither reads nor exits is stopped by the limit, not a blocked write.
        let got = run(&sh("sleep 30", Duration::from_millis(500)), &input);
        assert!(matches!(got.end, End::TimedOut), "{:?}", got.end);
    }

    /// Yields `data`, then fails.
    struct Failing(&'static [u8]);

    impl AsyncRead for Failing {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            if self.0.is_empty() {
                return Poll::Ready(Err(io::Error::other("disk on fire")));
            }
            let n = self.0.len().min(buf.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Poll::Ready(Ok(n))
        }
    }

    #[test]
    fn input_error_kills_before_the_end_of_input() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        // Would leave `out` behind only after seeing the end of its input.
        let cmd = sh("cat > \"$0.tmp\" && mv \"$0.tmp\" \"$0\"", LIMIT).args([&out]);
        let got = smol::block_on(cmd.run(Failing(b"half a message"), Stderr::Keep));
        let End::InputFailed(e) = got.end else {
            panic!("{:?}", got.end);
        };
        assert_eq!(e.to_string(), "disk on fire");
        assert!(!out.exists(), "the command finished with a truncated input");
    }

    #[test]
    fn background_job_holding_output_does_not_delay_the_end() {
        let start = Instant::now();
        let got = run(&sh("sleep 30 & echo $!; exit 0", LIMIT), b"");
        let took = start.elapsed();
        let pid = String::from_utf8_lossy(&got.stdout.bytes)
            .trim()
            .to_string();
        if let Ok(pid) = pid.parse::<libc::pid_t>() {
            // SAFETY: kill(2) on a pid this test started; cleanup only.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        assert!(matches!(got.end, End::Exited(0)), "{:?}", got.end);
        assert!(!pid.is_empty());
        assert!(
            took >= OUTPUT_GRACE && took < OUTPUT_GRACE + Duration::from_secs(3),
            "{took:?}"
        );
    }

    #[test]
    fn environment_is_only_what_is_given() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = std::fs::canonicalize(tmp.path()).unwrap();
        let got = run(
            &Command::new("/usr/bin/env", LIMIT)
                .env("A", "1")
                .envs([("B", "two words")])
                .current_dir(&dir),
            b"",
        );
        assert_eq!(
            String::from_utf8_lossy(&got.stdout.bytes),
            "A=1\nB=two words\n"
        );
        let got = run(&sh("pwd", LIMIT).current_dir(&dir), b"");
        assert_eq!(
            got.stdout.bytes,
            format!("{}\n", dir.display()).into_bytes()
        );
    }

    /// Deliveries and SMTP sessions run on a multi-threaded executor.
    #[test]
    fn runs_are_send() {
        fn assert_send<T: Send>(_: &T) {}
        let cmd = sh("true", LIMIT);
        let mut each = |_: &[u8]| {};
        assert_send(&cmd.run(&b""[..], Stderr::Each(&mut each)));
        assert_send(&cmd.run(&b""[..], Stderr::Keep));
    }
}
