"""hooks/post-data (SPEC §9, issue 5 item 3), as chasquid runs it: the message on stdin, the
envelope in chasquid's environment variables, exit 0 adds the header lines it prints, exit 20
is a permanent rejection with its last output line as the text, anything else (or the time
limit) is temporary. Checked for each message: adding or removing the hook needs no restart.
chasquid's own example hook (Debian's /etc/chasquid/hooks/post-data) must run unchanged.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import smtplib
import time
from pathlib import Path

import pytest

from helpers import (client_tls_context, header_block, make_message, port_open, send_raw,
                     wait_until)
from peers import ZoneDns, running_spamd, wait_queue_empty

ALICE = "alice@example.test"
BOB = "bob@example.test"
# Authorised for 127.0.0.1 by SPF in the test zone; NOSPF has no record at all.
SENDER = "sender@spfpass.test"
NOSPF_SENDER = "someone@nospf.test"
HOOK_LIMIT_SECS = 2  # TAMBO_HOOK_TIMEOUT_SECS for every server here
CHASQUID_EXAMPLE = Path("/etc/chasquid/hooks/post-data")

# Every variable chasquid sets for the hook (internal/smtpsrv/conn.go, runPostDataHook).
ENVELOPE_VARS = ["REMOTE_ADDR", "EHLO_DOMAIN", "EHLO_DOMAIN_RAW", "MAIL_FROM", "RCPT_TO",
                 "AUTH_AS", "ON_TLS", "FROM_LOCAL_DOMAIN", "SPF_PASS"]
INHERITED_VARS = ["USER", "PWD", "SHELL", "PATH"]
# What a shell may add to the environment it prints.
SHELL_VARS = ["SHLVL", "_", "OLDPWD"]


@pytest.fixture(scope="module")
def hookdns(tmp_path_factory):
    dns = ZoneDns(tmp_path_factory.mktemp("hookdns"), [], [],
                  [("spfpass.test", "v=spf1 ip4:127.0.0.1 -all")], probe="spfpass.test")
    dns.start()
    yield dns
    dns.stop()


@pytest.fixture
def henv(env, hookdns):
    """A tambo (not started) with users alice and bob, working DNS and a short hook limit."""
    env.write_config(dns_servers=[hookdns.address])
    env.extra_env["TAMBO_HOOK_TIMEOUT_SECS"] = str(HOOK_LIMIT_SECS)
    env.user_add(BOB)
    return env


def install_hook(tambo, text: str, mode: int = 0o755) -> Path:
    path = tambo.dir / "hooks" / "post-data"
    path.parent.mkdir(exist_ok=True)
    # Written aside and renamed in: the server may be about to run the old one.
    tmp = path.with_name(".post-data.tmp")
    tmp.write_text(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
    return path


def sh(body: str) -> str:
    return "#!/bin/sh\n" + body + "\n"


def send(tambo, sender: str = SENDER, rcpts: list[str] | None = None,
         message: bytes | None = None):
    """One message over port 25; returns (reply, message)."""
    message = message or make_message(sender=sender)[0]
    return send_raw(tambo.smtp_port, sender, rcpts or [ALICE], message), message


def expect_refused(tambo, reply, code: int, text: str | None = None) -> None:
    assert reply.code == code, f"expected {code} after DATA, got {reply}\nlog:\n{tambo.log()}"
    if text is not None:
        assert text in reply.text, f"expected {text!r} in the reply, got {reply}"
    wait_queue_empty(tambo, deadline=2.0)
    assert tambo.messages() == [], "a refused message was delivered"


# --------------------------------------------------------------------------------------------
# Exit 0: accept, with the header lines it printed
# --------------------------------------------------------------------------------------------


def test_printed_headers_are_added(henv):
    install_hook(henv, sh("cat >/dev/null\n"
                          "echo 'X-Spam-Score: 1.0'\n"
                          "printf 'X-Folded: first\\r\\n\\tsecond\\n'"))
    henv.start()
    reply, message = send(henv)
    assert reply.code == 250, f"{reply}\nlog:\n{henv.log()}"
    [got] = henv.wait_messages(1)
    fields = header_block(got)
    assert "X-Spam-Score: 1.0" in fields, fields
    assert "X-Folded: first second" in fields, fields
    # Header lines, not the body; the original message follows untouched.
    head, _, body = got.partition(b"\n\n")
    assert b"X-Spam-Score: 1.0\n" in head and b"\r" not in head, head
    assert body == b"Hello.\n"
    assert b"X-Test-Marker: first-original-header" in head


def test_output_that_is_not_headers_is_ignored(henv):
    install_hook(henv, sh("cat >/dev/null; echo 'this is not a header'; echo; echo 'X-A: b'"))
    henv.start()
    reply, _ = send(henv)
    assert reply.code == 250, reply
    [got] = henv.wait_messages(1)
    assert b"this is not a header" not in got and b"X-A: b" not in got, got


def test_hook_is_looked_up_for_each_message(henv):
    henv.start()
    assert send(henv)[0].code == 250
    path = install_hook(henv, sh("cat >/dev/null; echo 'X-Hooked: yes'"))
    assert send(henv)[0].code == 250
    os.chmod(path, 0o644)  # not executable: skipped
    assert send(henv)[0].code == 250
    path.unlink()
    assert send(henv)[0].code == 250
    got = henv.wait_messages(4)
    hooked = [m for m in got if b"X-Hooked: yes" in m]
    assert len(hooked) == 1, [header_block(m) for m in got]


def test_hook_reads_the_message_and_may_ignore_it(henv, tmp_path):
    seen = tmp_path / "seen"
    install_hook(henv, sh(f"cat > '{seen}'"))
    henv.start()
    body = "".join(f"line {i} of a long message\r\n" for i in range(20000))  # ~570 KB
    message, msgid = make_message(sender=SENDER, body=body)
    reply, _ = send(henv, message=message)
    assert reply.code == 250, reply
    data = seen.read_bytes()
    # The whole message, with our trace headers on top (chasquid adds Received first).
    assert data.endswith(message), data[-200:]
    added = data[:len(data) - len(message)]
    assert added.startswith(b"Received:") or b"\r\nReceived:" in added, added

    # A hook that never reads its input must not hang the session.
    install_hook(henv, sh("echo 'X-Lazy: yes'"))
    start = time.monotonic()
    reply, _ = send(henv, message=make_message(sender=SENDER, body=body)[0])
    assert reply.code == 250, reply
    assert time.monotonic() - start < HOOK_LIMIT_SECS, "waited for the time limit"
    assert any(b"X-Lazy: yes" in m for m in henv.wait_messages(2))


# --------------------------------------------------------------------------------------------
# The environment
# --------------------------------------------------------------------------------------------


ENV_HOOK = """\
#!/bin/sh
f=$(mktemp '{dir}/call.XXXXXX')
env > "$f.env"
pwd -P > "$f.cwd"
cat > "$f.msg"
mv "$f" "$f.done"
"""


class Calls:
    """What the environment-recording hook saw, one entry per run."""

    def __init__(self, dir: Path):
        self.dir = dir
        dir.mkdir()

    def all(self) -> list[dict]:
        out = []
        for done in sorted(self.dir.glob("call.*.done")):
            base = str(done)[:-len(".done")]
            env = dict(line.split("=", 1) for line in Path(base + ".env").read_text().splitlines()
                       if "=" in line)
            out.append({"env": env, "cwd": Path(base + ".cwd").read_text().strip(),
                        "msg": Path(base + ".msg").read_bytes()})
        return out

    def one(self, marker: str, tambo) -> dict:
        got = wait_until(lambda: [c for c in self.all() if marker.encode() in c["msg"]], 5.0)
        assert got, f"the hook did not run for {marker}; log:\n{tambo.log()}"
        assert len(got) == 1, f"the hook ran {len(got)} times for one message"
        return got[0]


def smtplib_send(tambo, sender: str, rcpts: list[str], starttls: bool = False):
    """Sends with smtplib as client.hooks.example; returns (client port, message id)."""
    message, msgid = make_message(sender=sender)
    with smtplib.SMTP("127.0.0.1", tambo.smtp_port, local_hostname="client.hooks.example",
                      timeout=15) as s:
        port = s.sock.getsockname()[1]
        if starttls:
            s.starttls(context=client_tls_context())
        refused = s.sendmail(sender, rcpts, message)
        assert not refused, refused
    return port, msgid


def test_environment_is_chasquids(henv, tmp_path):
    calls = Calls(tmp_path / "calls")
    install_hook(henv, ENV_HOOK.format(dir=calls.dir))
    henv.start()

    port, msgid = smtplib_send(henv, SENDER, [ALICE, BOB])
    call = calls.one(msgid, henv)
    env = call["env"]
    want = {
        "REMOTE_ADDR": f"127.0.0.1:{port}",
        "EHLO_DOMAIN": "client.hooks.example",
        "EHLO_DOMAIN_RAW": "client.hooks.example",
        "MAIL_FROM": SENDER,
        "RCPT_TO": f"{ALICE} {BOB}",
        "AUTH_AS": "",
        "ON_TLS": "0",
        "FROM_LOCAL_DOMAIN": "0",
        "SPF_PASS": "1",
    }
    assert {k: env.get(k) for k in want} == want, env
    config_dir = henv.dir.resolve()
    assert call["cwd"] == str(config_dir)
    assert env.get("PWD") == str(config_dir)
    assert env.get("PATH"), env
    # The environment is chasquid's, not the server's (RUST_LOG, TAMBO_* are set there).
    extra = set(env) - set(ENVELOPE_VARS) - set(INHERITED_VARS) - set(SHELL_VARS)
    assert not extra, f"variables leaked to the hook: {sorted(extra)}"
    assert msgid.encode() in call["msg"]

    # Over TLS, from a domain without SPF.
    port, msgid = smtplib_send(henv, NOSPF_SENDER, [BOB], starttls=True)
    env = calls.one(msgid, henv)["env"]
    want.update({"REMOTE_ADDR": f"127.0.0.1:{port}", "MAIL_FROM": NOSPF_SENDER,
                 "RCPT_TO": BOB, "ON_TLS": "1", "SPF_PASS": "0"})
    assert {k: env.get(k) for k in want} == want, env

    henv.wait_messages(1, user="alice")
    henv.wait_messages(2, user="bob")


# --------------------------------------------------------------------------------------------
# Refusals
# --------------------------------------------------------------------------------------------


def test_exit_20_is_a_permanent_rejection_with_its_text(henv):
    install_hook(henv, sh("cat >/dev/null; echo 'checking...'; echo 'spam detected'; exit 20"))
    henv.start()
    reply, _ = send(henv)
    expect_refused(henv, reply, 554, "spam detected")
    assert reply.enhanced.startswith("5."), reply
    assert "checking" not in reply.text


def test_other_exits_are_temporary(henv):
    path = install_hook(henv, sh("cat >/dev/null; exit 1"))
    henv.start()
    reply, _ = send(henv)
    assert 400 <= reply.code < 500, reply
    expect_refused(henv, reply, reply.code)

    # chasquid's greylisting: exit 75 with a message for the client.
    install_hook(henv, sh("cat >/dev/null; echo 'greylisted, please try again'; exit 75"))
    reply, _ = send(henv)
    assert 400 <= reply.code < 500 and "greylisted, please try again" in reply.text, reply
    assert reply.enhanced.startswith("4."), reply

    # A hook that cannot be started.
    path.write_text("#!/nonexistent/interpreter\n")
    reply, _ = send(henv)
    assert 400 <= reply.code < 500, reply
    expect_refused(henv, reply, reply.code)


def test_time_limit_is_temporary_and_kills_the_hook(henv, tmp_path):
    pidfile = tmp_path / "bg.pid"
    install_hook(henv, sh(f"sleep 60 & echo $! > '{pidfile}'; sleep 60"))
    henv.start()
    start = time.monotonic()
    reply, _ = send(henv)
    took = time.monotonic() - start
    assert 400 <= reply.code < 500, reply
    assert HOOK_LIMIT_SECS - 0.5 <= took < HOOK_LIMIT_SECS + 5, f"took {took:.1f}s"
    expect_refused(henv, reply, reply.code)
    pid = int(pidfile.read_text())

    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # A zombie waiting for init is dead too.
        try:
            return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
        except (FileNotFoundError, IndexError):
            return True

    assert wait_until(gone, 5.0), f"the hook's background process {pid} outlived the limit"
    # The session is still usable after the time-out.
    install_hook(henv, sh("cat >/dev/null"))
    assert send(henv)[0].code == 250


# --------------------------------------------------------------------------------------------
# chasquid's example hook
# --------------------------------------------------------------------------------------------


SPAMD_DEFAULT_PORT = 783  # where spamc looks without options, as chasquid's hook calls it


def test_chasquid_example_hook_runs_unchanged(henv, tmp_path):
    if not CHASQUID_EXAMPLE.is_file():
        pytest.fail(f"{CHASQUID_EXAMPLE} missing: install Debian's chasquid package")
    install_hook(henv, CHASQUID_EXAMPLE.read_text())
    with contextlib.ExitStack() as stack:
        # The hook asks spamc when it is installed (tests/install-deps.sh installs it): then
        # a real spamd must answer where spamc looks, Debian's own service or ours.
        spamc = shutil.which("spamc") is not None
        if spamc and not port_open(SPAMD_DEFAULT_PORT):
            stack.enter_context(running_spamd(tmp_path, SPAMD_DEFAULT_PORT))
        henv.start()
        message, msgid = make_message(sender=NOSPF_SENDER)
        reply, _ = send(henv, sender=NOSPF_SENDER, rcpts=[ALICE, BOB], message=message)
    missing = [t for t in ("greylist", "spamc", "rspamc", "chasquid-rspamd", "clamdscan")
               if shutil.which(t) is None]
    assert reply.code == 250, f"{reply} (filters absent: {missing})\nlog:\n{henv.log()}"
    [got] = henv.wait_messages(1)
    assert msgid.encode() in got
    if spamc:
        assert b"X-Spam-Score: " in got, got[:600]
    henv.wait_messages(1, user="bob")
