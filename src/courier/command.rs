//! Running a delivery command (MDA, pipe alias): no shell, the message on stdin, a time limit,
//! exit 0 = delivered, 75 (EX_TEMPFAIL) = temporary, anything else = permanent.
//!
//! # How
//!
//! [`crate::process`] spawns and supervises the child (its own process group, stdin fed from
//! the queue file a chunk at a time, output drained and capped, the group killed at the time
//! limit or when the delivery future is dropped at shutdown); only the queue-file reads go
//! through `smol::Unblock` (a blocking-pool reader). This module decides what the command is
//! given and what its end means.
//!
//! # Environment
//!
//! Cleared, then `PATH=/usr/local/bin:/usr/bin:/bin` and the caller's `env`. No `HOME`: the
//! command runs as tambo's own user, whose home is no mailbox's home; an MDA that needs one is
//! given it on its command line (maildrop `-d`, procmail `-a`), or a caller passes it in `env`.
//! The working directory is tambo's.

use crate::courier::DeliveryError;
use crate::message::StoredMessage;
use crate::process::{self, End, Stderr};
use smol::io::{AsyncRead, AsyncReadExt};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
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
    let input = smol::io::Cursor::new(prepend).chain(Exactly {
        inner: smol::Unblock::with_capacity(CHUNK, data),
        expected: item.message_len(),
        read: 0,
    });
    let finished = process::Command::new(program, limit)
        .args(&argv[1..])
        .env("PATH", PATH)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .keep(OUTPUT_KEPT)
        .label("command")
        .run(input, Stderr::Keep)
        .await;
    outcome(program, item, limit, finished)
}

/// The queue file's data, which must be the recorded length: one that ends short (a damaged
/// disk, a stray truncate) reads as an error, so the command is killed before it sees the end
/// of its input and can take a truncated message for a whole one.
struct Exactly<R> {
    inner: R,
    expected: u64,
    read: u64,
}

impl<R: AsyncRead + Unpin> AsyncRead for Exactly<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let n = ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        self.read += n as u64;
        if n == 0 && !buf.is_empty() && self.read != self.expected {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "queue file shorter than recorded",
            )));
        }
        Poll::Ready(Ok(n))
    }
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

/// Exit 0 delivered; 75 temporary; any other exit or a signal permanent, with the first line
/// of stderr (else stdout) as the reason. Not ending on its own is temporary, except a
/// command that cannot be run at all.
fn outcome(
    program: &str,
    item: &StoredMessage,
    limit: Duration,
    finished: process::Finished,
) -> Result<(), DeliveryError> {
    let detail = first_line(&finished.stderr.bytes)
        .or_else(|| first_line(&finished.stdout.bytes))
        .map(|line| format!(": {line}"))
        .unwrap_or_default();
    match finished.end {
        End::Exited(0) => {
            if !detail.is_empty() {
                log::debug!("{program} succeeded{detail}");
            }
            Ok(())
        }
        End::Exited(EX_TEMPFAIL) => Err(DeliveryError::temporary(format!(
            "{program} exited with status {EX_TEMPFAIL} (temporary failure){detail}"
        ))),
        End::Exited(code) => Err(DeliveryError::permanent(format!(
            "{program} exited with status {code}{detail}"
        ))),
        End::Signaled(signal) => Err(DeliveryError::permanent(format!(
            "{program} killed by signal {signal}{detail}"
        ))),
        End::TimedOut => Err(DeliveryError::temporary(format!(
            "{program}: killed after the time limit of {}s",
            limit.as_secs_f64()
        ))),
        End::SpawnFailed(e) => Err(spawn_error(program, &e)),
        End::InputFailed(e) => Err(unreadable(item, &e)),
        End::WaitFailed(e) => Err(DeliveryError::temporary(format!("cannot wait: {e}"))),
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
