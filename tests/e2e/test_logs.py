"""What `tambo serve` logs, read as an operator reads it: listeners by name, signals, TLS
failures in words, refusals in the mail log with what was refused (SPEC §11), and the keys of
the mailbox module that are set but not served."""

from __future__ import annotations

import re
import socket

from helpers import PASSWORD, SmtpConn, assert_reply, free_ports, port_open, wait_until

ALICE = "alice@example.test"


def no_debug_formatting(log: str) -> None:
    """Rust's Debug of an Option or of an enum variant, which a log line should never show."""
    for pattern in [r"Some\(", r"\bNone\b", r"\((Mx|Submission|SubmissionTls)\)", r"\bTerm\b",
                    r"InvalidContentType"]:
        found = [l for l in log.splitlines() if re.search(pattern, l)]
        assert not found, f"Debug formatting ({pattern}) in the log: {found}"


def test_listeners_signal_and_tls_failure_in_words(env):
    env.start()
    log = env.log()
    for port, name in [(env.smtp_port, "smtp"), (env.submission_port, "submission"),
                       (env.submission_tls_port, "submission_tls")]:
        assert f"listening on 127.0.0.1:{port} ({name})" in log, log
    # Plain text on the implicit-TLS port.
    with socket.create_connection(("127.0.0.1", env.submission_tls_port), timeout=5) as s:
        s.sendall(b"EHLO client.example\r\n")
        s.settimeout(5)
        try:
            s.recv(100)
        except OSError:
            pass
    line = env.wait_log(lambda l: "TLS handshake with 127.0.0.1:" in l
                        and "the client sent no TLS handshake" in l)
    assert line and line.endswith("failed: the client sent no TLS handshake "
                                  "(plain text on a TLS port?)"), env.log()
    # A client that connects and leaves (start()'s port probes did).
    assert env.wait_log(lambda l: re.search(r"TLS handshake with \S+ failed: the client "
                                            r"closed the connection$", l)), env.log()
    env.stop()
    log = env.log()
    assert "received SIGTERM, stopping" in log, log
    no_debug_formatting(log)


def test_refusals_name_the_recipient_and_the_login(server):
    with SmtpConn(server.smtp_port) as c:
        c.ehlo()
        assert_reply(c.cmd("MAIL FROM:<sender@remote.example>"), 250)
        assert_reply(c.cmd("RCPT TO:<No.Body+tag@example.test>"), 550, "5.1.1")
        assert_reply(c.cmd("RCPT TO:<someone@elsewhere.example>"), 554, "5.7.1")
    wrong = "not the password at all"
    with SmtpConn(server.submission_tls_port, tls=True) as c:
        c.ehlo()
        assert_reply(c.auth_plain(ALICE, wrong), 535, "5.7.8")
        assert_reply(c.auth_login("bob@example.test", wrong), 535, "5.7.8")

    def rejected(code: int, field: str) -> str | None:
        return server.wait_log(lambda l: "event=rejected" in l and f"code={code}" in l
                               and field in l)

    line = rejected(550, "to=<No.Body+tag@example.test>")
    assert line and "from=<sender@remote.example>" in line, server.log()
    assert rejected(554, "to=<someone@elsewhere.example>"), server.log()
    assert rejected(535, f'user="{ALICE}"'), server.log()
    assert rejected(535, 'user="bob@example.test"'), server.log()
    assert wrong not in server.log(), "a password tried is in the log"
    assert PASSWORD not in server.log()


def test_mailbox_listeners_are_served_and_logged(env):
    # Every mailbox listener set is served, and its log line says which it is.
    imap, pop3, pop3s = free_ports(3)
    env.write_config(imap_listen=[f"127.0.0.1:{imap}"], pop3_listen=[f"127.0.0.1:{pop3}"],
                     pop3s_listen=[f"127.0.0.1:{pop3s}"])
    env.start()
    assert wait_until(lambda: port_open(imap) and port_open(pop3) and port_open(pop3s), 5), \
        env.log()
    # The sockets are bound before the line is written, so a port may answer first.
    for port, kind in ((imap, "imap"), (pop3, "pop3"), (pop3s, "pop3s")):
        line = f"listening on 127.0.0.1:{port} ({kind})"
        assert env.wait_log(lambda l: line in l), env.log()
    assert "not served" not in env.log(), env.log()


def test_no_mailbox_warning_when_unset(server):
    assert "not served" not in server.log(), server.log()
