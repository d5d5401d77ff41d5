"""Local delivery other than the built-in Maildir (issue 4 §4, SPEC §3 `local_delivery`, §6
pipes): an MDA command, LMTP to Dovecot's real server (TCP and unix socket), pipe aliases;
exit 75 is temporary (retried, here forced by a restart), other failures bounce.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from helpers import make_message, wait_until
from peers import (ALICE, BOB_OUTSIDE, Dovecot, parse_dsn, send_mx, wait_log_lines,
                   wait_queue_empty)

RECORDER = """\
#!/usr/bin/python3
# Records one call (argv and stdin) in its own folder; exits with the code in ./exitcode.
import json, os, sys
base = {base!r}
data = sys.stdin.buffer.read()
n = 0
while True:
    try:
        os.mkdir(os.path.join(base, "calls", "%04d" % n))
        break
    except FileExistsError:
        n += 1
call = os.path.join(base, "calls", "%04d" % n)
try:
    code = int(open(os.path.join(base, "exitcode")).read().strip() or 0)
except FileNotFoundError:
    code = 0
with open(os.path.join(call, "stdin"), "wb") as f:
    f.write(data)
with open(os.path.join(call, "argv.json"), "w") as f:
    json.dump({{"argv": sys.argv[1:], "exit": code}}, f)
sys.exit(code)
"""


class Recorder:
    """An executable that records each call; `exit_code` sets what the next calls return."""

    def __init__(self, base: Path):
        self.base = base
        (base / "calls").mkdir(parents=True)
        self.path = base / "record.py"
        self.path.write_text(RECORDER.format(base=str(base)))
        os.chmod(self.path, 0o755)

    def set_exit(self, code: int) -> None:
        (self.base / "exitcode").write_text(str(code))

    def calls(self, marker: str | None = None) -> list[dict]:
        out = []
        for d in sorted((self.base / "calls").iterdir()):
            try:
                meta = json.loads((d / "argv.json").read_text())
                meta["stdin"] = (d / "stdin").read_bytes()
            except (FileNotFoundError, json.JSONDecodeError):
                continue  # still being written
            if marker is None or marker.encode() in meta["stdin"]:
                out.append(meta)
        return out

    def wait(self, n: int, marker: str, tambo, deadline: float = 10.0) -> list[dict]:
        got = wait_until(lambda: len(self.calls(marker)) >= n and self.calls(marker), deadline)
        if not got:
            pytest.fail(f"{self.path}: expected {n} call(s) with {marker!r} within {deadline}s, "
                        f"have {len(self.calls(marker))}\nlog:\n{tambo.log()}", pytrace=False)
        return got


@pytest.fixture
def recorder(tmp_path):
    return Recorder(tmp_path / "recorder")


@pytest.fixture(scope="module")
def dovecot():
    d = Dovecot()
    try:
        d.start()
        yield d
    finally:
        d.cleanup()


def body_of(msg: bytes) -> bytes:
    return msg.split(b"\r\n\r\n", 1)[1]


def normalised(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n")


# --------------------------------------------------------------------------------------------
# MDA
# --------------------------------------------------------------------------------------------


MDA_ARGS = ["-f", "%from%", "-t", "%to%", "-u", "%to_user%", "-d", "%to_domain%"]


@pytest.fixture
def mda_env(renv, recorder):
    renv.write_config(local_delivery={"mda": [str(recorder.path), *MDA_ARGS]})
    renv.user_add("bob@example.test")
    return renv


def test_mda_gets_expanded_argv_and_message(mda_env, recorder):
    mda_env.start()
    msg, msgid = make_message(sender=BOB_OUTSIDE, body="Body line.\r\n.dot\r\n")
    qid = send_mx(mda_env, BOB_OUTSIDE, [ALICE, "bob@example.test"], msg)
    calls = recorder.wait(2, msgid, mda_env)
    argvs = sorted(c["argv"] for c in calls)
    assert argvs == [
        ["-f", BOB_OUTSIDE, "-t", ALICE, "-u", "alice", "-d", "example.test"],
        ["-f", BOB_OUTSIDE, "-t", "bob@example.test", "-u", "bob", "-d", "example.test"],
    ], f"MDA argv: {argvs}"
    for c in calls:
        assert b"X-Test-Marker: first-original-header" in c["stdin"]
        assert normalised(c["stdin"]).endswith(normalised(body_of(msg))), c["stdin"][-200:]
    for rcpt in [ALICE, "bob@example.test"]:
        wait_log_lines(mda_env, "event=delivered", f"id={qid}", f"to=<{rcpt}>")
    wait_queue_empty(mda_env)
    assert mda_env.messages() == [], "delivered into tambo's own Maildir although an MDA is set"
    time.sleep(0.5)
    assert len(recorder.calls(msgid)) == 2


def test_mda_exit_75_retried(mda_env, recorder):
    recorder.set_exit(75)
    mda_env.start()
    msg, msgid = make_message(sender=BOB_OUTSIDE)
    qid = send_mx(mda_env, BOB_OUTSIDE, [ALICE], msg)
    recorder.wait(1, msgid, mda_env)
    wait_log_lines(mda_env, "event=deferred", f"id={qid}", f"to=<{ALICE}>")
    assert qid in [p.name for p in mda_env.queue_files()]
    recorder.set_exit(0)
    mda_env.restart()
    wait_log_lines(mda_env, "event=delivered", f"id={qid}", f"to=<{ALICE}>")
    wait_queue_empty(mda_env)
    mda_env.restart()
    time.sleep(1.0)
    ok = [c for c in recorder.calls(msgid) if c["exit"] == 0]
    assert len(ok) == 1, f"{len(ok)} successful MDA runs: {[c['exit'] for c in recorder.calls(msgid)]}"


def test_mda_permanent_failure_bounces(mda_env, recorder, net):
    recorder.set_exit(67)  # EX_NOUSER
    mda_env.start()
    msg, msgid = make_message(sender=BOB_OUTSIDE)
    qid = send_mx(mda_env, BOB_OUTSIDE, [ALICE], msg)
    [t] = net.sink("sender").wait(1, msgid, deadline=15, tambo=mda_env)
    assert t.mail_from == "" and t.rcpt_tos == [BOB_OUTSIDE], (t.mail_from, t.rcpt_tos)
    dsn = parse_dsn(t.data)
    block = dsn.recipient(ALICE)
    assert block is not None, f"DSN lacks {ALICE}: {[dict(b) for b in dsn.per_recipient]}"
    assert (block.get("Action") or "").strip().lower() == "failed"
    assert dsn.headers_part and msgid in dsn.headers_part
    wait_log_lines(mda_env, "event=bounced", f"id={qid}", BOB_OUTSIDE)
    wait_queue_empty(mda_env)
    assert len(recorder.calls(msgid)) == 1, "a permanent MDA failure was retried"


# --------------------------------------------------------------------------------------------
# LMTP (Dovecot)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_lmtp_two_users_one_message(renv, dovecot, transport):
    target = dovecot.address if transport == "tcp" else f"unix:{dovecot.unix_socket}"
    renv.write_config(local_delivery={"lmtp": target})
    renv.user_add("bob@example.test")
    renv.start()
    msg, msgid = make_message(sender=BOB_OUTSIDE, body="Via LMTP.\r\n")
    qid = send_mx(renv, BOB_OUTSIDE, [ALICE, "bob@example.test"], msg)
    for rcpt in [ALICE, "bob@example.test"]:
        got = wait_until(lambda: [m for m in dovecot.maildir_new(rcpt) if msgid.encode() in m], 10)
        assert got, f"{rcpt}: not in Dovecot's Maildir\ntambo log:\n{renv.log()}\n" \
                    f"dovecot log:\n{dovecot.log()[-3000:]}"
        assert len(got) == 1, f"{rcpt}: {len(got)} copies"
        assert normalised(got[0]).endswith(normalised(body_of(msg)))
        wait_log_lines(renv, "event=delivered", f"id={qid}", f"to=<{rcpt}>")
    wait_queue_empty(renv)
    assert renv.messages() == [], "delivered into tambo's own Maildir although LMTP is set"


# --------------------------------------------------------------------------------------------
# Pipe aliases
# --------------------------------------------------------------------------------------------


def test_pipe_alias_gets_message_on_stdin(renv, recorder):
    # No shell: "$HOME" and ";" reach the command as they are.
    renv.write_aliases(f"tickets: | {recorder.path} --queue support $HOME ;\n")
    renv.start()
    msg, msgid = make_message(sender=BOB_OUTSIDE, to="tickets@example.test")
    qid = send_mx(renv, BOB_OUTSIDE, ["tickets@example.test"], msg)
    [call] = recorder.wait(1, msgid, renv)
    assert call["argv"] == ["--queue", "support", "$HOME", ";"], call["argv"]
    assert b"X-Test-Marker: first-original-header" in call["stdin"]
    assert normalised(call["stdin"]).endswith(normalised(body_of(msg)))
    wait_log_lines(renv, "event=delivered", f"id={qid}")
    wait_queue_empty(renv)


def test_pipe_exit_75_retried(renv, recorder):
    recorder.set_exit(75)
    renv.write_aliases(f"tickets: | {recorder.path}\n")
    renv.start()
    msg, msgid = make_message(sender=BOB_OUTSIDE, to="tickets@example.test")
    qid = send_mx(renv, BOB_OUTSIDE, ["tickets@example.test"], msg)
    recorder.wait(1, msgid, renv)
    wait_log_lines(renv, "event=deferred", f"id={qid}")
    assert qid in [p.name for p in renv.queue_files()]
    recorder.set_exit(0)
    renv.restart()
    wait_log_lines(renv, "event=delivered", f"id={qid}")
    wait_queue_empty(renv)
    ok = [c for c in recorder.calls(msgid) if c["exit"] == 0]
    assert len(ok) == 1, [c["exit"] for c in recorder.calls(msgid)]


def test_pipe_failure_bounces(renv, recorder, net):
    recorder.set_exit(1)
    renv.write_aliases(f"tickets: | {recorder.path}\n")
    renv.start()
    msg, msgid = make_message(sender=BOB_OUTSIDE, to="tickets@example.test")
    qid = send_mx(renv, BOB_OUTSIDE, ["tickets@example.test"], msg)
    [t] = net.sink("sender").wait(1, msgid, deadline=15, tambo=renv)
    assert t.mail_from == "" and t.rcpt_tos == [BOB_OUTSIDE], (t.mail_from, t.rcpt_tos)
    dsn = parse_dsn(t.data)
    assert any((b.get("Action") or "").strip().lower() == "failed" for b in dsn.per_recipient)
    wait_log_lines(renv, "event=bounced", f"id={qid}")
    wait_queue_empty(renv)
    assert len(recorder.calls(msgid)) == 1, "a permanent pipe failure was retried"
