"""A running server picks up changes to users and aliases by itself, without SIGHUP: a user
added by `util user-add` logs in at once, an edited aliases file or a new domain takes effect
within a few seconds, a broken file keeps the old configuration and is logged once."""

from __future__ import annotations

import os
import re
import time

from helpers import PASSWORD, SmtpConn, assert_reply, wait_until

SENDER = "sender@remote.example"
# The server looks every 2 s; a loaded machine gets some slack.
WATCH_DEADLINE = 6.0


def write_aliases(env, text: str) -> None:
    """As an editor that saves atomically does, so that the server never reads half of it."""
    path = env.aliases_path()
    tmp = path.with_name(".aliases.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def rcpt_code(env, rcpt: str) -> int | None:
    try:
        with SmtpConn(env.smtp_port) as c:
            c.ehlo()
            c.cmd(f"MAIL FROM:<{SENDER}>")
            return c.cmd(f"RCPT TO:<{rcpt}>").code
    except OSError:
        return None


def test_user_add_then_auth_at_once(server):
    r = server.cli("util", "user-add", "bob@example.test", "--password", PASSWORD)
    assert r.returncode == 0, r.stderr
    assert "picks the change up by itself" in r.stdout, r.stdout
    # No wait and no SIGHUP: AUTH itself notices the users file changed.
    with SmtpConn(server.submission_tls_port, tls=True) as c:
        c.ehlo()
        assert_reply(c.auth_plain("bob@example.test", PASSWORD), 235, "2.7.0",
                     what="AUTH right after user-add")
    # The watcher may have swapped the users in first and write its line a moment later.
    assert server.wait_log(lambda l: "example.test/users changed: reloaded users and aliases"
                           in l), server.log()

    # A password changed the same way: the old one stops working at once.
    new_password = "a different long passphrase"
    r = server.cli("util", "user-add", "bob@example.test", "--password", new_password)
    assert r.returncode == 0, r.stderr
    with SmtpConn(server.submission_tls_port, tls=True) as c:
        c.ehlo()
        assert_reply(c.auth_plain("bob@example.test", PASSWORD), 535, "5.7.8",
                     what="AUTH with the old password")
        assert_reply(c.auth_plain("bob@example.test", new_password), 235, "2.7.0",
                     what="AUTH with the new password")


def test_aliases_and_domains_take_effect_within_seconds(server):
    assert rcpt_code(server, "team@example.test") == 550
    write_aliases(server, "team: alice\n")
    started = time.monotonic()
    assert wait_until(lambda: rcpt_code(server, "team@example.test") == 250, WATCH_DEADLINE,
                      0.2), f"alias not in force within {WATCH_DEADLINE}s:\n{server.log()}"
    assert time.monotonic() - started < WATCH_DEADLINE
    line = server.wait_log(lambda l: "example.test/aliases changed: reloaded" in l)
    assert line, server.log()

    # A new domain folder with a user.
    server.add_domain("new.test")
    server.user_add("carol@new.test")
    assert wait_until(lambda: rcpt_code(server, "carol@new.test") == 250, WATCH_DEADLINE,
                      0.2), f"new domain not in force within {WATCH_DEADLINE}s:\n{server.log()}"


def test_broken_file_keeps_old_config_and_is_logged_once(server):
    write_aliases(server, "team: alice\n")
    assert wait_until(lambda: rcpt_code(server, "team@example.test") == 250, WATCH_DEADLINE, 0.2)
    write_aliases(server, "team: alice\nthis line is broken\n")
    line = server.wait_log(lambda l: "reload failed" in l, WATCH_DEADLINE)
    assert line and "example.test/aliases" in line, line or server.log()
    assert re.search(r"(:2\b|line 2\b)", line), f"no line number in {line!r}"
    assert rcpt_code(server, "team@example.test") == 250, "old aliases lost after a failed reload"
    time.sleep(4.5)  # two more looks of the watcher: the same error is not logged again
    failures = [l for l in server.log().splitlines() if "reload failed" in l]
    assert len(failures) == 1, failures
    assert server.alive()
    # Fixed: loaded again.
    write_aliases(server, "team: alice\nsales: alice\n")
    assert wait_until(lambda: rcpt_code(server, "sales@example.test") == 250, WATCH_DEADLINE, 0.2)
