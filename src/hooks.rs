//! `hooks/post-data` (SPEC §9): run for every message received on port 25, with chasquid's
//! environment variables, so that chasquid's example hook runs unchanged.
//!
//! # Contract (chasquid's `runPostDataHook`, internal/smtpsrv/conn.go, and docs/hooks.md)
//!
//! - Looked up for each message ([`PostDataHook::find`]): adding, fixing or removing the file
//!   needs no restart. A file that is not executable by us is skipped (with a warning), as
//!   SPEC §9 says "present and executable".
//! - The message on stdin; the working directory is the config folder (chasquid chdirs there
//!   at start, and its example hook reads `domains/...` relative to it).
//! - The environment is cleared, then: `USER`, `SHELL` and `PATH` from ours (a default `PATH`
//!   when we have none), `PWD` (the config folder), and the envelope: `REMOTE_ADDR`
//!   (`ip:port`, `[v6]:port`: the example hook strips the port), `EHLO_DOMAIN` (reduced to
//!   `[A-Za-z0-9.:[]-]`, shell-safe), `EHLO_DOMAIN_RAW`, `MAIL_FROM` (empty for `<>`),
//!   `RCPT_TO` (space-separated), `AUTH_AS` (empty when not authenticated), `ON_TLS`,
//!   `FROM_LOCAL_DOMAIN`, `SPF_PASS` (`1` or `0`).
//! - Exit 0: accept; its stdout, when it is header lines, is added at the top of the message
//!   (normalised to CRLF); anything else on stdout is logged and ignored, as chasquid does.
//! - Exit 20: permanent rejection (554 5.7.1), the last line of stdout as the reply text.
//! - Any other exit, or a signal: temporary rejection (451 4.3.0) with the last line of
//!   stdout, if any, as the text.
//! - Failure to start, the time limit (60 s as chasquid; `tambo serve` passes it to
//!   [`PostDataHook::find`]), or a failure to read the message back from the queue file while
//!   feeding it: 451 4.3.0 with a generic text. In the last two cases the hook's whole process
//!   group is killed (before its stdin is closed: it never judges a truncated message).
//!
//! Differences from chasquid, all on the lenient or safe side: a missing final newline in
//! the headers is tolerated; header field names and line lengths are checked (RFC 5322
//! §2.1.1, §2.2); the reply text is the last non-blank line, reduced to printable ASCII, with
//! a leading enhanced status code dropped (we send our own); output is capped.
//!
//! # How
//!
//! [`crate::process`] runs it, as it runs delivery commands: in its own process group, stdin
//! fed while stdout and stderr are drained on the caller's executor (a hook that ignores its
//! input or writes a lot cannot deadlock us). This module gives it its environment, logs its
//! stderr and judges its end.

use crate::process::{self, Captured, End, Stderr};
use crate::proto::reply::Reply;
use smol::io::AsyncRead;
use std::ffi::CString;
use std::net::SocketAddr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the hook lives, relative to the config folder (SPEC §2).
pub const HOOK_PATH: &str = "hooks/post-data";
/// chasquid's limit.
pub const DEFAULT_LIMIT: Duration = Duration::from_secs(60);
/// chasquid's exit status for a permanent rejection.
pub const EXIT_PERMANENT: i32 = 20;
/// Used when the hook's environment has no `PATH` of its own to pass on.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// Stdout kept; beyond it the output is read and dropped (and is no longer valid headers).
const STDOUT_KEPT: usize = 64 * 1024;
/// Stderr lines logged per run, and the length each is cut to.
const STDERR_LINES_LOGGED: usize = 50;
const STDERR_LINE_MAX: usize = 300;
/// Longest reply text taken from the hook.
const REPLY_TEXT_MAX: usize = 200;
/// RFC 5322 §2.1.1: lines of at most 998 characters, without the CRLF.
const HEADER_LINE_MAX: usize = 998;

const REJECT_TEXT: &str = "Message rejected";
const TEMPFAIL_TEXT: &str = "Temporary local problem, please try again later";

/// The envelope as the hook sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookEnv {
    /// The client (after a PROXY header, the real one); `REMOTE_ADDR` is `ip:port`.
    pub remote_addr: SocketAddr,
    /// As the client gave it in HELO/EHLO.
    pub ehlo_domain: String,
    /// The reverse-path without `<>`; empty for the null sender.
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    /// `user@domain` when the session authenticated.
    pub auth_as: Option<String>,
    pub on_tls: bool,
    pub from_local_domain: bool,
    pub spf_pass: bool,
}

impl HookEnv {
    /// The variables chasquid sets for the envelope, with its value formats.
    pub fn vars(&self) -> Vec<(&'static str, String)> {
        let vars = [
            ("REMOTE_ADDR", self.remote_addr.to_string()),
            ("EHLO_DOMAIN", sanitize_ehlo_domain(&self.ehlo_domain)),
            ("EHLO_DOMAIN_RAW", self.ehlo_domain.clone()),
            ("MAIL_FROM", self.mail_from.clone()),
            ("RCPT_TO", self.rcpt_to.join(" ")),
            ("AUTH_AS", self.auth_as.clone().unwrap_or_default()),
            ("ON_TLS", flag(self.on_tls)),
            ("FROM_LOCAL_DOMAIN", flag(self.from_local_domain)),
            ("SPF_PASS", flag(self.spf_pass)),
        ];
        // The environment cannot hold NUL; the SMTP parser refuses it anyway.
        vars.into_iter()
            .map(|(k, v)| (k, v.replace('\0', "")))
            .collect()
    }
}

fn flag(b: bool) -> String {
    if b { "1" } else { "0" }.to_string()
}

/// chasquid's `sanitizeEHLODomain`: letters, digits and `-.[]:` (domains and address
/// literals), so that a hook can use it in a shell without quoting surprises.
pub fn sanitize_ehlo_domain(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '[' | ']' | ':'))
        .collect()
}

/// What the hook decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookOutcome {
    /// Go on; `headers` (CRLF-terminated header lines, possibly empty) go at the top.
    Accept { headers: String },
    /// Exit 20: 554 5.7.1 with `text`.
    Reject { text: String },
    /// Anything else: 451 4.3.0 with `text`.
    TempFail { text: String },
}

impl HookOutcome {
    /// The reply that ends DATA for a refusal; `None` for [`HookOutcome::Accept`].
    pub fn reply(&self) -> Option<Reply> {
        self.clone().into_result().err()
    }

    /// The headers to add, or the reply that ends DATA: makes the caller's use one line,
    /// `envelope.headers.insert_str(0, &outcome.into_result().map_err(...)?)`.
    pub fn into_result(self) -> Result<String, Reply> {
        match self {
            HookOutcome::Accept { headers } => Ok(headers),
            // RFC 3463 §3.8: X.7.1 "delivery not authorized, message refused".
            HookOutcome::Reject { text } => Err(Reply::new(554, "5.7.1", text)),
            // RFC 3463 §3.5: X.3.0 "other or undefined mail system status".
            HookOutcome::TempFail { text } => Err(Reply::new(451, "4.3.0", text)),
        }
    }

    /// For metrics: `accept`, `reject`, `tempfail`.
    pub fn label(&self) -> &'static str {
        match self {
            HookOutcome::Accept { .. } => "accept",
            HookOutcome::Reject { .. } => "reject",
            HookOutcome::TempFail { .. } => "tempfail",
        }
    }
}

/// An executable `hooks/post-data` of a config folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostDataHook {
    path: PathBuf,
    /// The config folder, absolute: the hook's working directory.
    dir: PathBuf,
    limit: Duration,
}

impl PostDataHook {
    /// The hook of `config_dir`, when present and executable; looked up per message. It is
    /// killed (with whatever it started) when it runs longer than `limit`.
    pub fn find(config_dir: &Path, limit: Duration) -> Option<PostDataHook> {
        // Absolute, because the child's working directory is the folder itself (the server's
        // config folder already is).
        let dir = if config_dir.is_absolute() {
            config_dir.to_path_buf()
        } else {
            std::path::absolute(config_dir).ok()?
        };
        let path = dir.join(HOOK_PATH);
        std::fs::metadata(&path).ok()?;
        if let Some(why) = unusable(&path) {
            log::warn!("{why}");
            return None;
        }
        Some(PostDataHook { path, dir, limit })
    }

    pub fn limit(&self) -> Duration {
        self.limit
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs the hook with `message` on stdin.
    pub async fn run(&self, env: &HookEnv, message: &[u8]) -> HookOutcome {
        self.run_reader(env, message).await
    }

    /// Runs the hook with whatever `message` yields on stdin (e.g. added headers chained
    /// with the queue file), so a big message need not be held in memory.
    pub async fn run_reader(&self, env: &HookEnv, message: impl AsyncRead + Unpin) -> HookOutcome {
        let outcome = self.judge(self.execute(env, message).await);
        crate::metrics::hook_result(outcome.label());
        outcome
    }

    /// Runs the hook to its end (or the time limit), logging its stderr as it comes.
    async fn execute(&self, env: &HookEnv, message: impl AsyncRead + Unpin) -> process::Finished {
        let path = &self.path;
        let mut lines = StderrLines::default();
        let mut log_lines = |chunk: &[u8]| lines.feed(chunk, |l| log_stderr_line(path, l));
        let finished = process::Command::new(path, self.limit)
            .current_dir(&self.dir)
            .envs(inherited_vars(&self.dir))
            .envs(env.vars())
            .keep(STDOUT_KEPT)
            .label("post-data hook")
            .run(message, Stderr::Each(&mut log_lines))
            .await;
        lines.finish(|l| log_stderr_line(path, l));
        finished
    }

    /// Turns the hook's end and stdout into an outcome, logging refusals.
    fn judge(&self, finished: process::Finished) -> HookOutcome {
        let path = self.path.display();
        let stdout = &finished.stdout;
        let how = match finished.end {
            End::Exited(0) => return accepted(&self.path, stdout),
            End::Exited(EXIT_PERMANENT) => {
                let text = reply_text(&stdout.bytes).unwrap_or_else(|| REJECT_TEXT.into());
                log::info!("post-data hook {path}: exit {EXIT_PERMANENT}, rejecting: {text}");
                return HookOutcome::Reject { text };
            }
            End::Exited(code) => format!("exit {code}"),
            End::Signaled(signal) => format!("killed by signal {signal}"),
            // No verdict of its own: its output means nothing.
            End::SpawnFailed(e) => return self.failed(format_args!("cannot start: {e}")),
            End::WaitFailed(e) => return self.failed(format_args!("cannot wait for it: {e}")),
            End::InputFailed(e) => {
                return self.failed(format_args!("cannot read the message: {e}"));
            }
            End::TimedOut => {
                return self.failed(format_args!(
                    "still running after {:?}: killed with its process group",
                    self.limit
                ));
            }
        };
        let text = reply_text(&stdout.bytes).unwrap_or_else(|| TEMPFAIL_TEXT.into());
        log::info!("post-data hook {path}: {how}, deferring: {text}");
        HookOutcome::TempFail { text }
    }

    fn failed(&self, why: std::fmt::Arguments) -> HookOutcome {
        log::warn!("post-data hook {}: {why}", self.path.display());
        HookOutcome::TempFail {
            text: TEMPFAIL_TEXT.to_string(),
        }
    }
}

/// Exit 0: its stdout, when it is header lines, goes on top of the message.
fn accepted(path: &Path, stdout: &Captured) -> HookOutcome {
    HookOutcome::Accept {
        headers: match parse_headers(stdout) {
            Ok(headers) => headers,
            Err(e) => {
                log::warn!("post-data hook {}: output ignored, {e}", path.display());
                String::new()
            }
        },
    }
}

/// What a `TAMBO_HOOK_TIMEOUT_SECS`-like setting asks for: whole seconds, > 0; anything
/// else (unset included) is [`DEFAULT_LIMIT`].
pub fn parse_limit(value: Option<&str>) -> Duration {
    value
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|&secs| secs > 0)
        .map_or(DEFAULT_LIMIT, Duration::from_secs)
}

/// Why an existing `hooks/post-data` at `path` would be ignored (not a regular file, not
/// executable), as the log line says it; `None` when it would run or does not exist.
pub fn unusable(path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() {
        return Some(format!("{} is not a regular file: ignored", path.display()));
    }
    if !executable(path) {
        return Some(format!("{} is not executable: ignored", path.display()));
    }
    None
}

/// Whether we may execute `path` (access(2) judges with our real ids, as exec will).
fn executable(path: &Path) -> bool {
    let Ok(c_path) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c_path` is a valid NUL-terminated string that outlives the call.
    unsafe { libc::access(c_path.as_ptr(), libc::X_OK) == 0 }
}

/// chasquid passes `USER PWD SHELL PATH` on (empty when unset); `PWD` here names the
/// working directory the hook really gets, and `PATH` falls back to a usable default.
fn inherited_vars(dir: &Path) -> Vec<(&'static str, std::ffi::OsString)> {
    let var = |name| std::env::var_os(name).unwrap_or_default();
    let path = std::env::var_os("PATH")
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| DEFAULT_PATH.into());
    vec![
        ("USER", var("USER")),
        ("SHELL", var("SHELL")),
        ("PATH", path),
        ("PWD", dir.as_os_str().to_owned()),
    ]
}

fn log_stderr_line(path: &Path, line: &str) {
    log::info!("post-data hook {}: stderr: {line}", path.display());
}

/// Splits stderr into bounded, printable lines; stops after [`STDERR_LINES_LOGGED`].
#[derive(Debug, Default)]
struct StderrLines {
    partial: Vec<u8>,
    emitted: usize,
}

impl StderrLines {
    fn feed(&mut self, bytes: &[u8], mut emit: impl FnMut(&str)) {
        for &b in bytes {
            if b == b'\n' {
                self.flush(&mut emit);
            } else if self.partial.len() < STDERR_LINE_MAX * 4 {
                self.partial.push(b);
            }
        }
    }

    fn finish(&mut self, mut emit: impl FnMut(&str)) {
        if !self.partial.is_empty() {
            self.flush(&mut emit);
        }
    }

    fn flush(&mut self, emit: &mut impl FnMut(&str)) {
        let line = printable(&String::from_utf8_lossy(&self.partial), STDERR_LINE_MAX);
        self.partial.clear();
        if line.is_empty() || self.emitted > STDERR_LINES_LOGGED {
            return;
        }
        self.emitted += 1;
        if self.emitted > STDERR_LINES_LOGGED {
            emit("(more stderr not logged)");
        } else {
            emit(&line);
        }
    }
}

/// `s` without control characters, trimmed, cut to `max` characters.
fn printable(s: &str, max: usize) -> String {
    let clean: String = s.chars().filter(|c| !c.is_control()).collect();
    clean.trim().chars().take(max).collect()
}

/// Why a successful hook's stdout was not taken as header lines.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
enum BadOutput {
    #[error("more than {STDOUT_KEPT} bytes")]
    TooLong,
    #[error("not UTF-8")]
    NotUtf8,
    #[error("line {0}: empty line (headers end there)")]
    EmptyLine(usize),
    #[error("line {0}: continuation without a header field before it")]
    LoneContinuation(usize),
    #[error("line {0}: not a header field (`Name: value`)")]
    NotAField(usize),
    #[error("line {0}: control character")]
    ControlChar(usize),
    #[error("line {0}: longer than {HEADER_LINE_MAX} characters")]
    LineTooLong(usize),
}

/// Header lines out of a hook's stdout, each ending in CRLF (RFC 5322 §2.2: `name:` with a
/// name of printable ASCII, or a folded continuation starting with a space or a tab).
/// LF or CRLF line ends are accepted; a missing final line end is added.
fn parse_headers(out: &Captured) -> Result<String, BadOutput> {
    if out.truncated {
        return Err(BadOutput::TooLong);
    }
    let text = std::str::from_utf8(&out.bytes).map_err(|_| BadOutput::NotUtf8)?;
    let body = text.strip_suffix('\n').unwrap_or(text);
    if text.is_empty() {
        return Ok(String::new());
    }
    let mut headers = String::with_capacity(text.len() + 16);
    for (i, line) in body.split('\n').enumerate() {
        let n = i + 1;
        let line = line.strip_suffix('\r').unwrap_or(line);
        check_header_line(line, n, !headers.is_empty())?;
        headers.push_str(line);
        headers.push_str("\r\n");
    }
    Ok(headers)
}

fn check_header_line(line: &str, n: usize, after_field: bool) -> Result<(), BadOutput> {
    if line.trim().is_empty() {
        return Err(BadOutput::EmptyLine(n));
    }
    if line.len() > HEADER_LINE_MAX {
        return Err(BadOutput::LineTooLong(n));
    }
    if line.chars().any(|c| c.is_control() && c != '\t') {
        return Err(BadOutput::ControlChar(n));
    }
    if line.starts_with([' ', '\t']) {
        return if after_field {
            Ok(())
        } else {
            Err(BadOutput::LoneContinuation(n))
        };
    }
    // RFC 5322 §3.6.8: field-name = 1*ftext, ftext = %d33-57 / %d59-126.
    match line.split_once(':') {
        Some((name, _)) if !name.is_empty() && name.bytes().all(|b| (33..=126).contains(&b)) => {
            Ok(())
        }
        _ => Err(BadOutput::NotAField(n)),
    }
}

/// The reply text from a refusing hook's stdout: its last non-blank line (chasquid: the
/// last line), printable ASCII only, without a leading enhanced status code.
fn reply_text(stdout: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(stdout);
    let line = text.lines().map(str::trim).rfind(|l| !l.is_empty())?;
    let ascii: String = line
        .chars()
        .map(|c| if c == '\t' { ' ' } else { c })
        .filter(|c| c.is_ascii() && !c.is_ascii_control())
        .collect();
    let ascii = strip_enhanced_code(ascii.trim());
    let text: String = ascii.chars().take(REPLY_TEXT_MAX).collect();
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

/// `5.7.1 spam` → `spam` (RFC 3463 §2: class.subject.detail, 1-3 digits each).
fn strip_enhanced_code(s: &str) -> &str {
    let (first, rest) = s.split_once(' ').unwrap_or((s, ""));
    let parts: Vec<&str> = first.split('.').collect();
    let is_code = parts.len() == 3
        && matches!(parts[0], "2" | "4" | "5")
        && parts[1..]
            .iter()
            .all(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()));
    if is_code { rest.trim_start() } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::os::unix::fs::PermissionsExt;
    use std::time::Instant;

    /// A config folder whose `hooks/post-data` is `script` (a /bin/sh script body).
    fn config_with_hook(script: &str) -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("hooks")).unwrap();
        let path = tmp.path().join(HOOK_PATH);
        std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        tmp
    }

    fn env() -> HookEnv {
        HookEnv {
            remote_addr: "192.0.2.7:40123".parse().unwrap(),
            ehlo_domain: "mail.sender.example".into(),
            mail_from: "bob@sender.example".into(),
            rcpt_to: vec!["alice@example.test".into(), "carol@example.test".into()],
            auth_as: None,
            on_tls: true,
            from_local_domain: false,
            spf_pass: true,
        }
    }

    const MESSAGE: &[u8] = b"Subject: hi\r\n\r\nhello\r\n";

    fn run_script(script: &str, limit: Duration) -> HookOutcome {
        let tmp = config_with_hook(script);
        let hook = PostDataHook::find(tmp.path(), limit).unwrap();
        smol::block_on(hook.run(&env(), MESSAGE))
    }

    fn run(script: &str) -> HookOutcome {
        run_script(script, Duration::from_secs(20))
    }

    fn accept(headers: &str) -> HookOutcome {
        HookOutcome::Accept {
            headers: headers.into(),
        }
    }

    fn reject(text: &str) -> HookOutcome {
        HookOutcome::Reject { text: text.into() }
    }

    fn tempfail(text: &str) -> HookOutcome {
        HookOutcome::TempFail { text: text.into() }
    }

    #[test]
    fn outcomes_of_small_hooks() {
        let cases: &[(&str, HookOutcome)] = &[
            (
                "cat >/dev/null; echo 'X-Spam-Score: 1.0'",
                accept("X-Spam-Score: 1.0\r\n"),
            ),
            (
                "printf 'A: 1\\r\\nB: two\\n\\tfolded\\n'",
                accept("A: 1\r\nB: two\r\n\tfolded\r\n"),
            ),
            (
                "printf 'X-No-Newline: yes'",
                accept("X-No-Newline: yes\r\n"),
            ),
            ("exit 0", accept("")),
            // chasquid ignores output that is not headers, and accepts.
            ("echo 'this is not a header'", accept("")),
            ("printf 'A: 1\\n\\nbody\\n'", accept("")),
            ("echo 'spam detected'; exit 20", reject("spam detected")),
            (
                "printf 'first\\nvirus found\\n\\n'; exit 20",
                reject("virus found"),
            ),
            (
                "printf '5.7.1 bad\\001 thing\\r\\n'; exit 20",
                reject("bad thing"),
            ),
            ("exit 20", reject(REJECT_TEXT)),
            (
                "echo 'greylisted, please try again'; exit 75",
                tempfail("greylisted, please try again"),
            ),
            ("exit 1", tempfail(TEMPFAIL_TEXT)),
            ("echo 'X-Header: ok'; exit 2", tempfail("X-Header: ok")),
            ("echo going; kill -TERM $$", tempfail("going")),
        ];
        for (script, want) in cases {
            assert_eq!(&run(script), want, "script: {script}");
        }
    }

    #[test]
    fn replies_of_outcomes() {
        let r = reject("spam detected").reply().unwrap();
        assert_eq!(r.to_bytes(), b"554 5.7.1 spam detected\r\n");
        let r = tempfail("later").reply().unwrap();
        assert_eq!(r.to_bytes(), b"451 4.3.0 later\r\n");
        assert_eq!(accept("A: b\r\n").reply(), None);
        assert_eq!(accept("A: b\r\n").into_result(), Ok("A: b\r\n".to_string()));
        let err = reject("no").into_result().unwrap_err();
        assert_eq!((err.code, err.enhanced, err.text()), (554, "5.7.1", "no"));
        let err = tempfail("later").into_result().unwrap_err();
        assert_eq!(
            (err.code, err.enhanced, err.text()),
            (451, "4.3.0", "later")
        );
    }

    #[test]
    fn message_reaches_stdin_whole() {
        let tmp = config_with_hook("cat > seen");
        let hook = PostDataHook::find(tmp.path(), DEFAULT_LIMIT).unwrap();
        let message: Vec<u8> = (0..3_000_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        let got = smol::block_on(hook.run(&env(), &message));
        assert_eq!(got, accept(""));
        assert_eq!(std::fs::read(tmp.path().join("seen")).unwrap(), message);
    }

    #[test]
    fn hook_that_ignores_stdin_and_floods_stdout_does_not_deadlock() {
        let tmp = config_with_hook("head -c 2000000 /dev/zero | tr '\\0' a; exit 20");
        let hook = PostDataHook::find(tmp.path(), Duration::from_secs(20)).unwrap();
        let message = vec![b'x'; 4_000_000];
        let start = Instant::now();
        let got = smol::block_on(hook.run(&env(), &message));
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );
        // The kept part ends inside the flood: the text is that line, cut short.
        let HookOutcome::Reject { text } = got else {
            panic!("expected a rejection, got {got:?}");
        };
        assert_eq!(text, "a".repeat(REPLY_TEXT_MAX));
    }

    #[test]
    fn oversized_header_output_is_ignored() {
        let script =
            "i=0; while [ $i -lt 5000 ]; do echo \"X-Line-$i: some value here\"; i=$((i+1)); done";
        assert_eq!(run(script), accept(""));
    }

    #[test]
    fn time_limit_kills_the_process_group() {
        let tmp = config_with_hook("sleep 30 & echo $! > bg.pid; sleep 30");
        let hook = PostDataHook::find(tmp.path(), Duration::from_millis(500)).unwrap();
        let start = Instant::now();
        let got = smol::block_on(hook.run(&env(), MESSAGE));
        let took = start.elapsed();
        assert_eq!(got, tempfail(TEMPFAIL_TEXT));
        assert!(
            took >= Duration::from_millis(500) && took < Duration::from_secs(5),
            "{took:?}"
        );
        let pid: libc::pid_t = std::fs::read_to_string(tmp.path().join("bg.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The background sleep was in the group: gone (reaped by init) shortly after.
        let gone = (0..100).any(|_| {
            // SAFETY: signal 0 only checks that the process exists.
            let alive = unsafe { libc::kill(pid, 0) } == 0;
            if alive {
                std::thread::sleep(Duration::from_millis(20));
            }
            !alive
        });
        assert!(gone, "background process {pid} survived the time limit");
    }

    #[test]
    fn failure_to_start_is_temporary() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("hooks")).unwrap();
        let path = tmp.path().join(HOOK_PATH);
        std::fs::write(&path, "#!/nonexistent/interpreter\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let hook = PostDataHook::find(tmp.path(), DEFAULT_LIMIT).unwrap();
        assert_eq!(
            smol::block_on(hook.run(&env(), MESSAGE)),
            tempfail(TEMPFAIL_TEXT)
        );
    }

    #[test]
    fn find_needs_an_executable_file() {
        let tmp = config_with_hook("exit 0");
        let found = PostDataHook::find(tmp.path(), Duration::from_secs(7)).unwrap();
        assert_eq!(found.limit(), Duration::from_secs(7));
        assert!(found.path().is_absolute());

        let path = tmp.path().join(HOOK_PATH);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(
            PostDataHook::find(tmp.path(), DEFAULT_LIMIT),
            None,
            "not executable"
        );

        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            PostDataHook::find(tmp.path(), DEFAULT_LIMIT),
            None,
            "absent"
        );

        std::fs::create_dir(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(
            PostDataHook::find(tmp.path(), DEFAULT_LIMIT),
            None,
            "a directory"
        );

        assert_eq!(
            PostDataHook::find(&tmp.path().join("nope"), DEFAULT_LIMIT),
            None,
            "no config folder"
        );
    }

    /// `NAME=value` lines of `env` run by a hook (values here hold no newlines).
    fn recorded_env(e: &HookEnv) -> (tempfile::TempDir, BTreeMap<String, String>) {
        // Relative output path: the working directory must be the config folder.
        let tmp = config_with_hook("env > env.out");
        let hook = PostDataHook::find(tmp.path(), DEFAULT_LIMIT).unwrap();
        assert_eq!(smol::block_on(hook.run(e, MESSAGE)), accept(""));
        let text = std::fs::read_to_string(tmp.path().join("env.out")).unwrap();
        let vars = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        (tmp, vars)
    }

    #[test]
    fn environment_is_chasquids() {
        let (tmp, vars) = recorded_env(&env());
        let dir = std::path::absolute(tmp.path()).unwrap();
        let want = [
            ("REMOTE_ADDR", "192.0.2.7:40123"),
            ("EHLO_DOMAIN", "mail.sender.example"),
            ("EHLO_DOMAIN_RAW", "mail.sender.example"),
            ("MAIL_FROM", "bob@sender.example"),
            ("RCPT_TO", "alice@example.test carol@example.test"),
            ("AUTH_AS", ""),
            ("ON_TLS", "1"),
            ("FROM_LOCAL_DOMAIN", "0"),
            ("SPF_PASS", "1"),
            ("PWD", dir.to_str().unwrap()),
        ];
        for (k, v) in want {
            assert_eq!(vars.get(k).map(String::as_str), Some(v), "{k}");
        }
        assert!(vars.get("PATH").is_some_and(|p| !p.is_empty()));
        // Nothing else of ours leaks through (the shell may add a few of its own).
        let ours: Vec<&str> = want.iter().map(|(k, _)| *k).collect();
        let allowed = ["USER", "SHELL", "PATH", "SHLVL", "_", "OLDPWD"];
        for k in vars.keys() {
            assert!(
                ours.contains(&k.as_str()) || allowed.contains(&k.as_str()),
                "leaked {k}"
            );
        }
    }

    #[test]
    fn environment_of_an_authenticated_v6_client() {
        let e = HookEnv {
            remote_addr: "[2001:db8::1]:2525".parse().unwrap(),
            ehlo_domain: "[IPv6:2001:db8::1] $(rm -rf x);".into(),
            mail_from: String::new(),
            rcpt_to: vec!["x@remote.example".into()],
            auth_as: Some("alice@example.test".into()),
            on_tls: false,
            from_local_domain: true,
            spf_pass: false,
        };
        let (_tmp, vars) = recorded_env(&e);
        let get = |k: &str| {
            vars.get(k)
                .cloned()
                .unwrap_or_else(|| panic!("{k} missing"))
        };
        assert_eq!(get("REMOTE_ADDR"), "[2001:db8::1]:2525");
        assert_eq!(get("EHLO_DOMAIN"), "[IPv6:2001:db8::1]rm-rfx");
        assert_eq!(get("EHLO_DOMAIN_RAW"), "[IPv6:2001:db8::1] $(rm -rf x);");
        assert_eq!(get("MAIL_FROM"), "");
        assert_eq!(get("AUTH_AS"), "alice@example.test");
        assert_eq!(get("ON_TLS"), "0");
        assert_eq!(get("FROM_LOCAL_DOMAIN"), "1");
        assert_eq!(get("SPF_PASS"), "0");
    }

    #[test]
    fn header_output_parsing() {
        let ok: &[(&str, &str)] = &[
            ("", ""),
            ("A: b\n", "A: b\r\n"),
            ("A: b\r\n", "A: b\r\n"),
            ("A:b", "A:b\r\n"),
            ("A: b\n c\n\td\nE: f\n", "A: b\r\n c\r\n\td\r\nE: f\r\n"),
            ("Subject: caf\u{e9}\n", "Subject: caf\u{e9}\r\n"),
        ];
        for (input, want) in ok {
            let got = parse_headers(&Captured {
                bytes: input.as_bytes().to_vec(),
                truncated: false,
            });
            assert_eq!(got.as_deref(), Ok(*want), "{input:?}");
        }
        let long = format!("A: {}\n", "x".repeat(HEADER_LINE_MAX));
        let bad: &[(&[u8], BadOutput)] = &[
            (b"\n", BadOutput::EmptyLine(1)),
            (b"A: b\n\nbody\n", BadOutput::EmptyLine(2)),
            (b"A: b\n   \n", BadOutput::EmptyLine(2)),
            (b" folded first\n", BadOutput::LoneContinuation(1)),
            (b"no colon here\n", BadOutput::NotAField(1)),
            (b"Two words: value\n", BadOutput::NotAField(1)),
            (b": empty name\n", BadOutput::NotAField(1)),
            (
                "X-\u{dc}ber: non-ASCII name\n".as_bytes(),
                BadOutput::NotAField(1),
            ),
            (b"A: b\rC: d\n", BadOutput::ControlChar(1)),
            (b"A: b\x00\n", BadOutput::ControlChar(1)),
            (b"A: \xff\n", BadOutput::NotUtf8),
            (long.as_bytes(), BadOutput::LineTooLong(1)),
        ];
        for (input, want) in bad {
            let got = parse_headers(&Captured {
                bytes: input.to_vec(),
                truncated: false,
            });
            assert_eq!(
                got.as_ref(),
                Err(want),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        let truncated = Captured {
            bytes: b"A: b\n".to_vec(),
            truncated: true,
        };
        assert_eq!(parse_headers(&truncated), Err(BadOutput::TooLong));
    }

    #[test]
    fn reply_text_from_output() {
        let cases: &[(&[u8], Option<&str>)] = &[
            (b"", None),
            (b"\n\n  \n", None),
            (b"spam detected\n", Some("spam detected")),
            (b"a\nb", Some("b")),
            (b"one\r\ntwo\r\n", Some("two")),
            (b"5.7.1 go away\n", Some("go away")),
            (b"4.7.1  greylisted\n", Some("greylisted")),
            (b"5.7 not a code\n", Some("5.7 not a code")),
            (b"5.7.1\n", None),
            (b"caf\xc3\xa9 \x1b[31mred\ttab\n", Some("caf [31mred tab")),
        ];
        for (input, want) in cases {
            assert_eq!(
                reply_text(input).as_deref(),
                *want,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        let long = "y".repeat(1000);
        assert_eq!(reply_text(long.as_bytes()).unwrap().len(), REPLY_TEXT_MAX);
    }

    #[test]
    fn ehlo_domain_sanitising() {
        let cases = [
            ("mail.example.com", "mail.example.com"),
            ("[192.0.2.1]", "[192.0.2.1]"),
            ("[IPv6:2001:db8::1]", "[IPv6:2001:db8::1]"),
            ("a b;c`d`$e'f\"g", "abcdefg"),
            ("ñandú.example", "and.example"),
            ("", ""),
        ];
        for (input, want) in cases {
            assert_eq!(sanitize_ehlo_domain(input), want, "{input:?}");
        }
    }

    #[test]
    fn limit_parsing() {
        let cases = [
            (None, DEFAULT_LIMIT),
            (Some("3"), Duration::from_secs(3)),
            (Some(" 7 "), Duration::from_secs(7)),
            (Some("0"), DEFAULT_LIMIT),
            (Some("-1"), DEFAULT_LIMIT),
            (Some("1.5"), DEFAULT_LIMIT),
            (Some(""), DEFAULT_LIMIT),
        ];
        for (input, want) in cases {
            assert_eq!(parse_limit(input), want, "{input:?}");
        }
    }

    #[test]
    fn stderr_lines_are_bounded() {
        let mut lines = StderrLines::default();
        let mut got = Vec::new();
        lines.feed(b"one\ntw", |l| got.push(l.to_string()));
        lines.feed(b"o\n\n\x1bthree", |l| got.push(l.to_string()));
        lines.finish(|l| got.push(l.to_string()));
        assert_eq!(got, ["one", "two", "three"]);

        let mut lines = StderrLines::default();
        let mut got = Vec::new();
        let flood = "line\n".repeat(STDERR_LINES_LOGGED + 20);
        lines.feed(flood.as_bytes(), |l| got.push(l.to_string()));
        lines.feed(&vec![b'z'; 10 * STDERR_LINE_MAX], |l| {
            got.push(l.to_string())
        });
        lines.finish(|l| got.push(l.to_string()));
        assert_eq!(got.len(), STDERR_LINES_LOGGED + 1);
        assert_eq!(got.last().unwrap(), "(more stderr not logged)");
    }
}
