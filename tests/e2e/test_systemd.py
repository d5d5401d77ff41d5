"""systemd socket activation (sd_listen_fds(3)), as contrib/systemd's socket units use it:
`serve` takes the sockets passed in LISTEN_FDS instead of binding, each matched to a listener
by its FileDescriptorName (`smtp`, `submission`, `submission_tls`, as chasquid's units) or
else by its port; a socket that matches none stops the start with exit 2.

systemd-socket-activate (Debian package systemd) plays systemd: it listens, and on the first
connection execs tambo with the sockets and the LISTEN_* variables."""

from __future__ import annotations

import shutil
import smtplib
import subprocess

import pytest

from helpers import TAMBO_BIN, SmtpConn, assert_reply, free_ports, make_message, port_open, \
    wait_until

SOCKET_ACTIVATE = shutil.which("systemd-socket-activate") or "/usr/bin/systemd-socket-activate"
ALICE = "alice@example.test"
START_DEADLINE = 15.0

pytestmark = pytest.mark.skipif(not shutil.which(SOCKET_ACTIVATE),
                                reason="systemd-socket-activate not installed")


def activate(env, sockets: list[tuple[int, str]]) -> None:
    """Runs `tambo serve` under systemd-socket-activate with (port, fdname) sockets; the
    `env` fixture stops it (SIGTERM to the same pid: the activator execs tambo)."""
    env.require_binary()
    argv = [SOCKET_ACTIVATE]
    for port, _ in sockets:
        argv += ["-l", f"127.0.0.1:{port}"]
    argv += ["--fdname=" + ":".join(name for _, name in sockets)]
    argv += [str(TAMBO_BIN), "-C", str(env.dir), "serve"]
    log = open(env.log_path, "ab")
    with log:
        env.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=env.env(),
                                    cwd=str(env.dir.parent))
    listening = wait_until(lambda: all(f"127.0.0.1:{p}" in env.log() for p, _ in sockets),
                           START_DEADLINE)
    assert listening, f"systemd-socket-activate did not listen; log:\n{env.log()}"


def test_serves_the_passed_sockets_instead_of_binding(env):
    (smtp_port,) = free_ports(1)
    # The MX socket by name on a port tambo.json does not know; the submission socket
    # unnamed ("unknown", as systemd says), matched by its configured port.
    activate(env, [(smtp_port, "smtp"), (env.submission_port, "unknown")])
    msg, msgid = make_message(subject="socket activated")
    # The first connection makes the activator exec tambo, which then accepts it.
    with smtplib.SMTP("127.0.0.1", smtp_port, timeout=START_DEADLINE) as client:
        assert client.sendmail("sender@remote.example", [ALICE], msg) == {}
    got = env.wait_messages(1)
    assert msgid.encode() in got[0]

    with SmtpConn(env.submission_port) as c:
        assert_reply(c.greeting, 220, what="submission through the passed socket")
        assert "STARTTLS" in c.ehlo()
        # Submission, not MX: mail for a local user still needs AUTH here.
        r = c.cmd("MAIL FROM:<alice@example.test>")
        assert r.code >= 500, f"MAIL without AUTH on submission: {r}"
    log = env.log()
    assert f"using the socket systemd passed for smtp (127.0.0.1:{smtp_port})" in log, log
    assert ("using the socket systemd passed for submission "
            f"(127.0.0.1:{env.submission_port})") in log, log
    assert "passed no socket for submission_tls: not listening for it" in log, log
    # Nothing was bound from tambo.json.
    assert not port_open(env.smtp_port)
    assert not port_open(env.submission_tls_port)


def test_a_socket_matching_no_listener_stops_the_start(env):
    (stray,) = free_ports(1)
    # No listener kind is named "nntp": the socket matches none.
    activate(env, [(stray, "nntp")])
    port_open(stray)  # a first connection makes the activator exec tambo
    proc = env.proc
    try:
        code = proc.wait(START_DEADLINE)
    except subprocess.TimeoutExpired:
        pytest.fail(f"tambo kept running with a stray socket; log:\n{env.log()}")
    env.proc = None
    assert code == 2, env.log()
    log = env.log()
    assert "fd 3 (nntp, 127.0.0.1:" in log and "matches no listener" in log, log
