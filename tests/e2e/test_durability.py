"""A 250 after DATA survives kill -9; nothing is delivered twice (SPEC §7, §8, §11)."""

from __future__ import annotations

import random
import smtplib
import threading
import time

import pytest

from helpers import DELIVERY_DEADLINE, Closed, make_message, mode, wait_until

SENDER = "sender@remote.example"
ALICE = "alice@example.test"


def test_kill_9_right_after_250(env):
    # "ext" forwards outside only: remote delivery cannot happen here, so its part stays queued.
    env.write_aliases("ext: someone@remote.example\n")
    env.start()
    msg, msgid = make_message(to="ext@example.test")
    with smtplib.SMTP("127.0.0.1", env.smtp_port, local_hostname="client.example", timeout=10) as s:
        s.ehlo()
        assert s.mail(SENDER)[0] == 250
        assert s.rcpt("ext@example.test")[0] == 250
        assert s.rcpt(ALICE)[0] == 250
        code, text = s.data(msg)
        assert code == 250, text
        env.kill9()
    queued = env.queue_files()
    already = sum(msgid.encode() in m for m in env.messages())
    assert len(queued) == 1 or already == 1, \
        f"after kill -9: queue holds {[p.name for p in queued]}, alice has {already} copies"
    for p in queued:
        assert p.is_file(), f"{p} is not a file"
        assert mode(p) == 0o600, f"queue file {p} has mode {mode(p):o}"
    assert mode(env.queue_dir) == 0o700, f"queue folder mode {mode(env.queue_dir):o}"

    env.start()
    env.wait_messages(1)
    time.sleep(1.5)  # a second delivery, if any, would land now
    copies = sum(msgid.encode() in m for m in env.messages())
    assert copies == 1, f"alice has {copies} copies after the restart"
    queued = env.queue_files()
    assert len(queued) == 1, f"the queue file for the remote recipient is gone: {queued}"

    # And again: a further restart must neither redeliver to alice nor drop the remote part.
    env.restart()
    time.sleep(1.5)
    copies = sum(msgid.encode() in m for m in env.messages())
    assert copies == 1, f"alice has {copies} copies after a second restart"
    assert len(env.queue_files()) == 1


def test_kill_9_loop_while_sending(env):
    env.start()
    attempts: list[tuple[str, bool, str]] = []  # (message id, got 250, what happened)
    done = threading.Event()
    lock = threading.Lock()

    def client():
        try:
            for i in range(20):
                for _try in range(8):
                    msg, msgid = make_message(subject=f"durability {i} try {_try}")
                    ok, what = False, ""
                    try:
                        with smtplib.SMTP("127.0.0.1", env.smtp_port,
                                          local_hostname="client.example", timeout=10) as s:
                            s.ehlo()
                            if s.mail(SENDER)[0] == 250 and s.rcpt(ALICE)[0] == 250:
                                code, text = s.data(msg)
                                ok = code == 250
                                what = f"{code} {text!r}"
                    except (OSError, smtplib.SMTPException) as e:
                        what = repr(e)
                    with lock:
                        attempts.append((msgid, ok, what))
                    time.sleep(0.15)  # pace the messages so that kills land between and inside them
                    if ok:
                        break
        finally:
            done.set()

    t = threading.Thread(target=client, daemon=True)
    t.start()
    rng = random.Random(1234)
    kills = 0
    deadline = time.monotonic() + 60
    while not done.is_set() and time.monotonic() < deadline:
        done.wait(rng.uniform(0.05, 0.4))
        if done.is_set():
            break
        env.kill9()
        kills += 1
        env.start()
    t.join(15)
    assert done.is_set(), "client did not finish"
    assert kills >= 3, f"only {kills} kills happened while sending: the test exercised nothing"

    env.restart()
    acked = [mid for mid, ok, _ in attempts if ok]
    assert len(acked) == 20, f"only {len(acked)} of 20 messages got a 250 despite retries: {attempts}"

    def all_there():
        msgs = env.messages()
        return all(sum(mid.encode() in m for m in msgs) >= 1 for mid in acked)

    ok = wait_until(all_there, DELIVERY_DEADLINE)
    time.sleep(1.0)
    msgs = env.messages()
    lost = [mid for mid in acked if not any(mid.encode() in m for m in msgs)]
    dups = {mid: n for mid, _, _ in attempts if (n := sum(mid.encode() in m for m in msgs)) > 1}
    assert ok and not lost, (f"{len(lost)} acknowledged messages lost after {kills} kills: {lost}; "
                             f"queue: {[p.name for p in env.queue_files()]}\nlog:\n{env.log()[-5000:]}")
    assert not dups, f"delivered more than once ({kills} kills): {dups}"
    wait_until(lambda: env.queue_files() == [], 5.0)
    assert env.queue_files() == [], f"queue not empty at the end: {env.queue_files()}"


def test_sigterm_lets_open_session_finish(env):
    from helpers import SmtpConn, assert_reply, port_open, queue_id
    import signal
    env.start()
    msg, msgid = make_message()
    with SmtpConn(env.smtp_port) as c:
        c.ehlo()
        assert_reply(c.cmd(f"MAIL FROM:<{SENDER}>"), 250)
        assert_reply(c.cmd(f"RCPT TO:<{ALICE}>"), 250)
        env.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert not port_open(env.smtp_port), "still accepting connections after SIGTERM"
        try:
            r = c.data(msg)
        except (Closed, OSError) as e:
            pytest.fail(f"open session dropped after SIGTERM instead of finishing: {e}; "
                        f"server exit status {env.proc.poll()}")
        queue_id(r)
    proc = env.proc
    try:
        proc.wait(10)
    except Exception:
        pass
    assert proc.poll() is not None, "server did not exit within 10 s of SIGTERM"
    env.proc = None
    env.start()
    msgs = env.wait_messages(1)
    time.sleep(0.5)
    assert sum(msgid.encode() in m for m in env.messages()) == 1, msgs


def test_sighup_reloads_users_and_aliases(env):
    import signal
    from helpers import SmtpConn
    env.start()
    env.user_add("bob@example.test")
    env.write_aliases("team: bob\n")
    env.proc.send_signal(signal.SIGHUP)

    def accepted():
        try:
            with SmtpConn(env.smtp_port) as c:
                c.ehlo()
                c.cmd(f"MAIL FROM:<{SENDER}>")
                return c.cmd("RCPT TO:<bob@example.test>").code == 250 and \
                    c.cmd("RCPT TO:<team@example.test>").code == 250
        except OSError:
            return False
    ok = wait_until(accepted, 5.0, 0.2)
    assert env.alive(), f"server died on SIGHUP (exit status {env.proc.returncode})"
    assert ok, "new user/alias not accepted within 5 s of SIGHUP"


def test_failed_reload_keeps_old_config(env):
    import signal
    from helpers import SmtpConn
    env.write_aliases("team: alice\n")
    env.start()
    env.write_aliases("team: alice\nthis line is broken\n")
    env.proc.send_signal(signal.SIGHUP)
    time.sleep(1.0)
    assert env.alive(), f"server exited on a bad reload (exit status {env.proc.returncode})"
    with SmtpConn(env.smtp_port) as c:
        c.ehlo()
        c.cmd(f"MAIL FROM:<{SENDER}>")
        r = c.cmd("RCPT TO:<team@example.test>")
        assert r.code == 250, f"old aliases lost after a failed reload: {r}"
    assert env.wait_log(lambda l: "example.test/aliases" in l), \
        "the failed reload was not logged with the file"
