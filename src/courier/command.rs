//! Running a delivery command (MDA, pipe alias): no shell, the message on stdin, a time limit,
//! exit 0 = delivered, 75 (EX_TEMPFAIL) = temporary, anything else = permanent.
//!
//! # How
//!
//! The child is spawned with `smol::process` (smol's re-export of async-process, already a
//! dependency of smol): the command is configured as a `std::process::Command` (for
//! `process_group`, which async-process does not expose) and converted. Its pipes are then
//! async, so feeding stdin, draining stdout/stderr and waiting for the exit all run on the
//! caller's executor without a thread per command; only the queue-file reads go through
//! `smol::Unblock` (a blocking-pool reader). Dropping the future (shutdown) kills the child's
//! process group.
//!
//! # Environment
//!
//! Cleared, then `PATH=/usr/local/bin:/usr/bin:/bin` and the caller's `env`. No `HOME`: the
//! command runs as tambo's own user, whose home is no mailbox's home; an MDA that needs one is
//! given it on its command line (maildrop `-d`, procmail `-a`), or a caller passes it in `env`.
//! The working directory is tambo's.

use crate::courier::DeliveryError;
use crate::message::MessageReader;
use crate::message::StoredMessage;
use smol::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use smol::process::{Child, ChildStdin, Stdio};
use std::future::Future;
use std::io;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The only inherited-looking variable: where to find programs named without a `/`.
pub const PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// sysexits.h: "temporary failure, the user is invited to retry".
pub const EX_TEMPFAIL: i32 = 75;
/// Queue-file read size: the message is streamed, never held whole.
const CHUNK: usize = 64 * 1024;
/// Output kept per stream for the error reason; the rest is read and dropped so the child
/// never blocks on a full pipe.
const OUTPUT_KEPT: usize = 4 * 1024;
/// Longest output line quoted in a reason (reasons end up in logs and DSNs).
const REASON_LINE_MAX: usize = 200;
/// How long output is still read after the exit (see [`supervise`]).
const OUTPUT_GRACE: Duration = Duration::from_secs(1);

/// Runs `argv` with `prepend` and then the message of `item` on stdin, under `limit`.
pub async fn run(
    argv: &[String],
    env: &[(String, String)],
    item: &StoredMessage,
    prepend: &[u8],
    limit: Duration,
) -> Result<(), DeliveryError> {
    let Some(program) = argv.first() else {
        return Err(DeliveryError::permanent("empty delivery command"));
    };
    // Opened before spawning: a queue file we cannot read must not start anything.
    let data = item.open_data().map_err(|e| unreadable(item, &e))?;
    let mut child = spawn(argv, env).map_err(|e| spawn_error(program, &e))?;
    let group = ProcessGroup::of(&child);
    let feed = feed(child.stdin.take(), &group, data, item, prepend);
    let (exit, stdout, stderr) = supervise(&mut child, &group, feed, limit).await;
    match exit? {
        Exit::Status(status) => interpret(program, status, &stdout, &stderr),
        Exit::TimedOut => Err(DeliveryError::temporary(format!(
            "{program}: killed after the time limit of {}s",
            limit.as_secs_f64()
        ))),
    }
}

/// How the child ended.
enum Exit {
    Status(ExitStatus),
    /// Killed (with its process group) at the time limit.
    TimedOut,
}

fn spawn(argv: &[String], env: &[(String, String)]) -> io::Result<Child> {
    let mut std_cmd = std::process::Command::new(&argv[0]);
    std_cmd
        .args(&argv[1..])
        .env_clear()
        .env("PATH", PATH)
        .envs(env.iter().map(|(k, v)| (k, v)));
    spawn_in_group(std_cmd)
}

/// Starts `std_cmd` in a process group of its own (so a time-out kills whatever it started
/// too, kill -pgid: see [`ProcessGroup`]), with piped stdin, stdout and stderr. Also used by
/// the post-data hook (`hooks.rs`).
pub(crate) fn spawn_in_group(mut std_cmd: std::process::Command) -> io::Result<Child> {
    std_cmd.process_group(0);
    let mut cmd = smol::process::Command::from(std_cmd);
    // The conversion forgets stdio settings: set them on the async command.
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd.spawn()
}

fn spawn_error(program: &str, e: &io::Error) -> DeliveryError {
    match e.kind() {
        io::ErrorKind::NotFound => {
            DeliveryError::permanent(format!("command not found: {program}"))
        }
        io::ErrorKind::PermissionDenied => {
            DeliveryError::permanent(format!("command {program} cannot be run: {e}"))
        }
        // std refuses NUL bytes in arguments and environment this way.
        io::ErrorKind::InvalidInput => {
            DeliveryError::permanent(format!("invalid command line for {program}: {e}"))
        }
        // Out of processes, memory, file descriptors: may pass.
        _ => DeliveryError::temporary(format!("cannot start {program}: {e}")),
    }
}

fn unreadable(item: &StoredMessage, e: &io::Error) -> DeliveryError {
    DeliveryError::temporary(format!(
        "cannot read queued message {}: {e}",
        item.path.display()
    ))
}

/// Runs the child to its end (or the time limit) while draining its output; returns how it
/// ended and the first bytes of its stdout and stderr.
///
/// Output held open by something the command left running in the background is not waited
/// for more than [`OUTPUT_GRACE`] after the exit: the exit status is what counts, and a
/// delivery that succeeded must not turn into a time-out (and be delivered again).
async fn supervise(
    child: &mut Child,
    group: &ProcessGroup,
    feed: impl Future<Output = Result<(), DeliveryError>>,
    limit: Duration,
) -> (Result<Exit, DeliveryError>, Vec<u8>, Vec<u8>) {
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let (exited_tx, exited_rx) = smol::channel::bounded::<()>(1);
    let exited = async {
        let exit = wait_within(child, group, feed, limit).await;
        drop(exited_tx);
        exit
    };
    let drained = async {
        smol::future::zip(capture(stdout, &mut out), capture(stderr, &mut err)).await;
    };
    let grace = async {
        let _ = exited_rx.recv().await; // Err once the sender is dropped: the child is gone.
        smol::Timer::after(OUTPUT_GRACE).await;
    };
    let (exit, ()) = smol::future::zip(exited, smol::future::or(drained, grace)).await;
    (exit, out, err)
}

/// Feeds the input and waits for the exit; at the time limit, kills the process group.
async fn wait_within(
    child: &mut Child,
    group: &ProcessGroup,
    feed: impl Future<Output = Result<(), DeliveryError>>,
    limit: Duration,
) -> Result<Exit, DeliveryError> {
    let finished = async {
        let fed = feed.await;
        let status = child.status().await;
        group.mark_reaped();
        fed?; // On a queue read error the child was killed: its status means nothing.
        let status = status.map_err(|e| DeliveryError::temporary(format!("cannot wait: {e}")))?;
        Ok(Exit::Status(status))
    };
    let timer = async {
        smol::Timer::after(limit).await;
        Ok(Exit::TimedOut)
    };
    let exit = smol::future::or(finished, timer).await;
    if let Ok(Exit::TimedOut) = exit {
        group.kill();
        // Reap it; the kill already decided the outcome.
        let _ = child.status().await;
        group.mark_reaped();
    }
    exit
}

/// Writes `prepend` and the message to the child's stdin, then closes it.
///
/// A write error means the child stopped reading (EPIPE: it exited or closed stdin); that is
/// not ours to judge, its exit status decides. A read error on the queue file is ours: the
/// child is killed *before* stdin is closed, so it can never take a truncated message for a
/// whole one.
async fn feed(
    stdin: Option<ChildStdin>,
    group: &ProcessGroup,
    data: MessageReader,
    item: &StoredMessage,
    prepend: &[u8],
) -> Result<(), DeliveryError> {
    let Some(mut stdin) = stdin else {
        return Ok(());
    };
    let mut source = smol::Unblock::with_capacity(CHUNK, data);
    if stdin.write_all(prepend).await.is_err() {
        return Ok(());
    }
    let mut buf = vec![0u8; CHUNK];
    let mut copied = 0u64;
    loop {
        let n = match source.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(abort(group, unreadable(item, &e), stdin)),
        };
        copied += n as u64;
        if let Err(e) = stdin.write_all(&buf[..n]).await {
            log::debug!("command stopped reading its input: {e}");
            return Ok(());
        }
    }
    if copied != item.message_len() {
        let e = io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "queue file shorter than recorded",
        );
        return Err(abort(group, unreadable(item, &e), stdin));
    }
    // Dropping stdin afterwards closes the pipe: the child sees end of input.
    let _ = stdin.close().await;
    Ok(())
}

/// Kills the child while still holding its stdin open (see [`feed`]).
fn abort(group: &ProcessGroup, error: DeliveryError, stdin: ChildStdin) -> DeliveryError {
    group.kill();
    drop(stdin);
    error
}

/// Reads a stream to its end, keeping the first [`OUTPUT_KEPT`] bytes in `kept`.
async fn capture(pipe: Option<impl AsyncRead + Unpin>, kept: &mut Vec<u8>) {
    let Some(mut pipe) = pipe else {
        return;
    };
    let mut buf = [0u8; 4096];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                let room = OUTPUT_KEPT.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
}

/// Exit 0 delivered; 75 temporary; any other exit or a signal permanent.
fn interpret(
    program: &str,
    status: ExitStatus,
    stdout: &[u8],
    stderr: &[u8],
) -> Result<(), DeliveryError> {
    let detail = first_line(stderr)
        .or_else(|| first_line(stdout))
        .map(|line| format!(": {line}"))
        .unwrap_or_default();
    if status.success() {
        if !detail.is_empty() {
            log::debug!("{program} succeeded{detail}");
        }
        return Ok(());
    }
    match (status.code(), status.signal()) {
        (Some(EX_TEMPFAIL), _) => Err(DeliveryError::temporary(format!(
            "{program} exited with status {EX_TEMPFAIL} (temporary failure){detail}"
        ))),
        (Some(code), _) => Err(DeliveryError::permanent(format!(
            "{program} exited with status {code}{detail}"
        ))),
        (None, Some(signal)) => Err(DeliveryError::permanent(format!(
            "{program} killed by signal {signal}{detail}"
        ))),
        (None, None) => Err(DeliveryError::permanent(format!(
            "{program} ended abnormally ({status}){detail}"
        ))),
    }
}

/// The first non-blank line of `output`, printable and bounded: it goes into logs and DSNs.
fn first_line(output: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(output);
    let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    let clean: String = line
        .chars()
        .filter(|c| !c.is_control())
        .take(REASON_LINE_MAX)
        .collect();
    Some(clean)
}

/// The child's process group: killed on time-out, on a queue read error, and when the
/// delivery future is dropped (shutdown) before the child was reaped. Also used by the
/// post-data hook (`hooks.rs`), whose children are started the same way.
pub(crate) struct ProcessGroup {
    pgid: libc::pid_t,
    /// Once the child is reaped its pid (= the group id) may be reused: no more kills.
    /// Atomic only so that a `&ProcessGroup` held across awaits keeps the future `Send`.
    reaped: AtomicBool,
}

impl ProcessGroup {
    pub(crate) fn of(child: &Child) -> ProcessGroup {
        ProcessGroup {
            // Pids fit in pid_t; std gets them from the kernel as pid_t.
            pgid: child.id() as libc::pid_t,
            reaped: AtomicBool::new(false),
        }
    }

    pub(crate) fn mark_reaped(&self) {
        self.reaped.store(true, Ordering::Relaxed);
    }

    pub(crate) fn kill(&self) {
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
pub(crate) mod tests {
    use super::*;
    use crate::message::Envelope;
    use std::path::Path;

    /// A stored message holding `data`, in a fresh temp dir.
    pub(crate) fn item_with(data: &[u8]) -> (tempfile::TempDir, StoredMessage) {
        item_with_envelope(data, envelope("sender@example.com", Vec::new()))
    }

    pub(crate) fn envelope(from: &str, rcpts: Vec<crate::message::QueuedRcpt>) -> Envelope {
        Envelope {
            from: from.to_string(),
            rcpts,
            received_at: 1_700_000_000,
            client: "test".to_string(),
            ..Default::default()
        }
    }

    pub(crate) fn item_with_envelope(
        data: &[u8],
        env: Envelope,
    ) -> (tempfile::TempDir, StoredMessage) {
        let tmp = tempfile::tempdir().unwrap();
        let item = crate::message::stored::written(tmp.path(), data, env);
        (tmp, item)
    }

    fn argv(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    fn run_sync(args: &[&str], item: &StoredMessage, limit: Duration) -> Result<(), DeliveryError> {
        smol::block_on(run(&argv(args), &[], item, b"", limit))
    }

    const LIMIT: Duration = Duration::from_secs(10);

    #[test]
    fn exit_status_decides() {
        let (_tmp, item) = item_with(b"Subject: x\r\n\r\nbody\r\n");
        // (argv, Ok?, permanent, text the reason must contain)
        let cases: &[(&[&str], bool, bool, &str)] = &[
            (&["/bin/true"], true, false, ""),
            (&["true"], true, false, ""), // Found through our PATH.
            (&["/bin/false"], false, true, "status 1"),
            (&["/bin/sh", "-c", "exit 75"], false, false, "status 75"),
            (
                &["/bin/sh", "-c", "echo; echo '  no such user ' >&2; exit 67"],
                false,
                true,
                "status 67: no such user",
            ),
            (
                &["/bin/sh", "-c", "echo out only; exit 1"],
                false,
                true,
                "status 1: out only",
            ),
            (
                &["/bin/sh", "-c", "kill -TERM $$"],
                false,
                true,
                "signal 15",
            ),
            (
                &["/nonexistent/mda"],
                false,
                true,
                "command not found: /nonexistent/mda",
            ),
            (&["/etc/passwd"], false, true, "cannot be run"),
            (&["/bin/echo", "a\0b"], false, true, "invalid command line"),
        ];
        for (args, ok, permanent, text) in cases {
            let got = run_sync(args, &item, LIMIT);
            match got {
                Ok(()) => assert!(ok, "{args:?} succeeded"),
                Err(e) => {
                    assert!(!ok, "{args:?}: {e}");
                    assert_eq!(e.permanent, *permanent, "{args:?}: {e}");
                    assert!(e.reason.contains(text), "{args:?}: {e}");
                }
            }
        }
    }

    /// The runner spawns deliveries on a multi-threaded executor.
    #[test]
    fn delivery_futures_are_send() {
        fn assert_send<T: Send>(_: &T) {}
        let (_tmp, item) = item_with(b"x");
        let to = crate::addr::Address::parse("a@example.com").unwrap();
        let argv = argv(&["true"]);
        assert_send(&run(&argv, &[], &item, b"", LIMIT));
        assert_send(&crate::courier::mda::deliver(&argv, "", &to, &item, LIMIT));
        assert_send(&crate::courier::pipe::deliver(
            &argv,
            "a@example.com",
            "",
            &item,
            LIMIT,
        ));
    }

    #[test]
    fn empty_argv_is_permanent() {
        let (_tmp, item) = item_with(b"x");
        let e = smol::block_on(run(&[], &[], &item, b"", LIMIT)).unwrap_err();
        assert!(e.permanent);
    }

    #[test]
    fn time_limit_kills_and_is_temporary() {
        let (tmp, item) = item_with(b"x");
        let pid_file = tmp.path().join("pid");
        let script = format!("sleep 30 & echo $! > {}; wait", pid_file.display());
        let started = std::time::Instant::now();
        let e = run_sync(&["/bin/sh", "-c", &script], &item, Duration::from_secs(1)).unwrap_err();
        assert!(!e.permanent, "{e}");
        assert!(e.reason.contains("time limit"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(5));
        // The grandchild was in the group: it is gone (or a zombie awaiting its new parent).
        let pid = std::fs::read_to_string(&pid_file).unwrap();
        assert!(wait_dead(pid.trim()), "sleep {pid} survived");
    }

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
    fn background_job_holding_output_does_not_turn_success_into_timeout() {
        let (tmp, item) = item_with(b"x");
        let pid_file = tmp.path().join("pid");
        let script = format!("sleep 30 & echo $! > {}; exit 0", pid_file.display());
        let started = std::time::Instant::now();
        let got = run_sync(&["/bin/sh", "-c", &script], &item, Duration::from_secs(10));
        let pid = std::fs::read_to_string(&pid_file).unwrap();
        // SAFETY: kill(2) on a pid this test started; cleanup only.
        unsafe { libc::kill(pid.trim().parse().unwrap(), libc::SIGKILL) };
        assert_eq!(got, Ok(()));
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn stalled_reader_hits_the_limit() {
        // Never reads: the 3 MiB write blocks on a full pipe until the time-out.
        let (_tmp, item) = item_with(&vec![b'a'; 3 << 20]);
        let e = run_sync(&["/bin/sleep", "30"], &item, Duration::from_secs(1)).unwrap_err();
        assert!(!e.permanent && e.reason.contains("time limit"), "{e}");
    }

    fn big_message() -> Vec<u8> {
        let mut data = b"Subject: big\r\n\r\n".to_vec();
        let mut i = 0u32;
        while data.len() < 3 << 20 {
            data.extend_from_slice(format!("line {i} of a large message\r\n").as_bytes());
            i += 1;
        }
        data
    }

    #[test]
    fn message_arrives_whole_after_prepend() {
        let data = big_message();
        let (tmp, item) = item_with(&data);
        let out = tmp.path().join("out");
        let args = argv(&["/bin/sh", "-c", "exec cat > \"$0\"", out.to_str().unwrap()]);
        smol::block_on(run(&args, &[], &item, b"Return-Path: <a@b>\r\n", LIMIT)).unwrap();
        let mut want = b"Return-Path: <a@b>\r\n".to_vec();
        want.extend_from_slice(&data);
        assert!(std::fs::read(&out).unwrap() == want, "content differs");
    }

    #[test]
    fn output_is_drained_while_feeding() {
        // tee echoes all 3 MiB back on stdout: not draining it would dead-lock.
        let data = big_message();
        let (tmp, item) = item_with(&data);
        let out = tmp.path().join("out");
        run_sync(&["/usr/bin/tee", out.to_str().unwrap()], &item, LIMIT).unwrap();
        assert!(std::fs::read(&out).unwrap() == data, "content differs");
    }

    #[test]
    fn child_that_reads_nothing_decides_by_exit_status() {
        let (_tmp, item) = item_with(&big_message());
        run_sync(&["/bin/true"], &item, LIMIT).unwrap();
        let e = run_sync(&["/bin/sh", "-c", "exit 75"], &item, LIMIT).unwrap_err();
        assert!(!e.permanent, "{e}");
    }

    #[test]
    fn environment_is_cleared() {
        let (tmp, item) = item_with(b"x");
        let out = tmp.path().join("env");
        let args = argv(&["/bin/sh", "-c", "exec /usr/bin/env > \"$0\"", path(&out)]);
        let env = [("SENDER".to_string(), "a@b".to_string())];
        smol::block_on(run(&args, &env, &item, b"", LIMIT)).unwrap();
        let text = std::fs::read_to_string(&out).unwrap();
        let vars: Vec<&str> = text.lines().collect();
        assert!(
            vars.contains(&"PATH=/usr/local/bin:/usr/bin:/bin"),
            "{vars:?}"
        );
        assert!(vars.contains(&"SENDER=a@b"), "{vars:?}");
        assert!(!vars.iter().any(|v| v.starts_with("HOME=")), "{vars:?}");
        assert!(!vars.iter().any(|v| v.starts_with("CARGO")), "{vars:?}");
    }

    fn path(p: &Path) -> &str {
        p.to_str().unwrap()
    }

    #[test]
    fn missing_queue_file_runs_nothing() {
        let (tmp, mut item) = item_with(b"x");
        let marker = tmp.path().join("ran");
        // As for a message loaded from disk (no open file) whose file has gone.
        item.path = tmp.path().join("gone");
        item.file = None;
        let args = ["/bin/sh", "-c", "touch \"$0\"", path(&marker)];
        let e = run_sync(&args, &item, LIMIT).unwrap_err();
        assert!(!e.permanent, "{e}");
        assert!(!marker.exists());
    }

    #[test]
    fn truncated_queue_file_kills_before_eof() {
        let (tmp, item) = item_with(b"whole message");
        // Cut inside the data, as a damaged disk or a stray truncate would.
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&item.path)
            .unwrap();
        file.set_len(item.data_offset + 5).unwrap();
        let out = tmp.path().join("out");
        let args = [
            "/bin/sh",
            "-c",
            "cat > \"$0.tmp\" && mv \"$0.tmp\" \"$0\"",
            path(&out),
        ];
        let e = run_sync(&args, &item, LIMIT).unwrap_err();
        assert!(!e.permanent && e.reason.contains("cannot read"), "{e}");
        assert!(
            !out.exists(),
            "the command finished with a truncated message"
        );
    }

    #[test]
    fn first_line_is_clean_and_bounded() {
        let cases: &[(&[u8], Option<&str>)] = &[
            (b"", None),
            (b"\n  \n", None),
            (b"\n err\x1b[31mor \r\nsecond", Some("err[31mor")),
            (b"\xffbad utf8\n", Some("\u{fffd}bad utf8")),
        ];
        for (input, want) in cases {
            assert_eq!(first_line(input).as_deref(), *want, "{input:?}");
        }
        assert_eq!(first_line(&[b'x'; 5000]).unwrap().len(), REASON_LINE_MAX);
    }
}
