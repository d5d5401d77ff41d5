"""CONDSTORE and QRESYNC (RFC 7162), SORT and THREAD (RFC 5256), issue 19: raw IMAP dialogs
over TLS. ENABLE QRESYNC answered; HIGHESTMODSEQ at SELECT, never lower after a restart,
above 0 on a Maildir Dovecot wrote; a flag change in another session found by CHANGEDSINCE;
an expunge in another session told by SELECT (QRESYNC ...) as VANISHED (EARLIER) of exactly
that UID; STORE UNCHANGEDSINCE refused with [MODIFIED]; SORT and THREAD answered as Dovecot
answers them on the same Maildir."""

from __future__ import annotations

import re
import smtplib
import socket
import time

import pytest

from helpers import PASSWORD, client_tls_context, make_message, port_open, wait_until
from test_imap_clients import DOVECOT_IMAP, Dovecot, need, shared  # noqa: F401 (fixture)

ALICE = "alice@example.test"
DEADLINE = 20.0


class Raw:
    """One IMAP session over implicit TLS; `cmd` sends a line and returns (untagged lines,
    tagged line) read within a deadline."""

    def __init__(self, port: int):
        sock = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
        self.sock = client_tls_context().wrap_socket(sock, server_hostname="localhost")
        self.buf = b""
        self.n = 0
        greeting = self.line()
        assert greeting.startswith(b"* OK"), greeting
        untagged, tagged = self.cmd(f'LOGIN "{ALICE}" "{PASSWORD}"')
        assert b" OK" in tagged, tagged

    def line(self) -> bytes:
        end = time.monotonic() + DEADLINE
        while b"\r\n" not in self.buf:
            if time.monotonic() > end:
                pytest.fail("no answer within the deadline", pytrace=False)
            chunk = self.sock.recv(65536)
            if not chunk:
                pytest.fail(f"connection closed; had {self.buf!r}", pytrace=False)
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def cmd(self, command: str) -> tuple[list[bytes], bytes]:
        self.n += 1
        tag = f"t{self.n}".encode()
        self.sock.sendall(tag + b" " + command.encode() + b"\r\n")
        untagged = []
        while True:
            line = self.line()
            if line.startswith(tag + b" "):
                return untagged, line
            untagged.append(line)

    def ok(self, command: str) -> list[bytes]:
        untagged, tagged = self.cmd(command)
        assert re.match(rb"t\d+ OK", tagged), (command, tagged, untagged)
        return untagged

    def close(self) -> None:
        try:
            self.cmd("LOGOUT")
        finally:
            self.sock.close()


def number(lines: list[bytes], pattern: bytes) -> int:
    for line in lines:
        m = re.search(pattern, line)
        if m:
            return int(m.group(1))
    raise AssertionError(f"{pattern!r} not in {lines}")


def fetched(lines: list[bytes]) -> dict[int, bytes]:
    """UID → the FETCH line, of the FETCH lines."""
    return {int(re.search(rb"UID (\d+)", line).group(1)): line
            for line in lines if re.match(rb"\* \d+ FETCH", line)}


def modseq(line: bytes) -> int:
    return int(re.search(rb"MODSEQ \((\d+)\)", line).group(1))


def deliver(env, subject: str) -> None:
    msg, _ = make_message(subject=subject)
    with smtplib.SMTP("127.0.0.1", env.smtp_port, local_hostname="client.example",
                      timeout=DEADLINE) as s:
        s.sendmail("sender@remote.example", [ALICE], msg)


def test_condstore_and_qresync_dialogs(imap):
    for s in ("one", "two", "three"):
        deliver(imap, s)
    a = Raw(imap.imaps_port)
    caps = b" ".join(a.ok("CAPABILITY"))
    for cap in (b"CONDSTORE", b"QRESYNC", b"SORT", b"THREAD=REFERENCES",
                b"THREAD=ORDEREDSUBJECT"):
        assert cap in caps.split(), caps
    # MailKit waits for this exact answer (MAILBOX.md).
    assert a.ok("ENABLE QRESYNC") == [b"* ENABLED QRESYNC"]
    selected = a.ok("SELECT INBOX")
    uidvalidity = number(selected, rb"UIDVALIDITY (\d+)")
    h0 = number(selected, rb"\[HIGHESTMODSEQ (\d+)\]")
    assert h0 > 0
    assert number(selected, rb"(\d+) EXISTS") == 3

    # Another session flags UID 2: CHANGEDSINCE finds it alone, with a higher MODSEQ.
    b = Raw(imap.imaps_port)
    b.ok("SELECT INBOX")
    b.ok("UID STORE 2 +FLAGS.SILENT (\\Flagged)")
    changed = fetched(a.ok(f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {h0})"))
    assert list(changed) == [2], changed
    assert b"\\Flagged" in changed[2] and modseq(changed[2]) > h0

    # Another session expunges UID 3; a fresh session resyncing from h0 hears of exactly
    # that, and of the flag change.
    b.ok("UID STORE 3 +FLAGS.SILENT (\\Deleted)")
    b.ok("EXPUNGE")
    b.close()
    a.close()
    c = Raw(imap.imaps_port)
    c.ok("ENABLE QRESYNC")
    resync = c.ok(f"SELECT INBOX (QRESYNC ({uidvalidity} {h0} 1:3))")
    assert [x for x in resync if x.startswith(b"* VANISHED")] == [b"* VANISHED (EARLIER) 3"]
    assert list(fetched(resync)) == [2], resync
    h1 = number(resync, rb"\[HIGHESTMODSEQ (\d+)\]")
    assert h1 > h0
    # Nothing changed since h1: nothing to tell.
    again = c.ok(f"SELECT INBOX (QRESYNC ({uidvalidity} {h1} 1:3))")
    assert not fetched(again) and not [x for x in again if b"VANISHED" in x], again

    # STORE UNCHANGEDSINCE: refused for a message changed since, done otherwise.
    m2 = modseq(fetched(c.ok("UID FETCH 2 (MODSEQ)"))[2])
    untagged, tagged = c.cmd(f"UID STORE 2 (UNCHANGEDSINCE {m2 - 1}) +FLAGS (\\Seen)")
    assert re.match(rb"t\d+ OK \[MODIFIED 2\]", tagged), (tagged, untagged)
    stored = fetched(c.ok(f"UID STORE 2 (UNCHANGEDSINCE {m2}) +FLAGS (\\Seen)"))
    assert b"\\Seen" in stored[2] and modseq(stored[2]) > m2
    # SEARCH MODSEQ and STATUS HIGHESTMODSEQ.
    found = c.ok(f"UID SEARCH MODSEQ {m2 + 1}")
    assert found == [f"* SEARCH 2 (MODSEQ {modseq(stored[2])})".encode()], found
    status = c.ok("STATUS Sent (HIGHESTMODSEQ)")
    assert number(status, rb"HIGHESTMODSEQ (\d+)") > 0
    # With QRESYNC on, an expunge is told as VANISHED.
    c.ok("UID STORE 1 +FLAGS.SILENT (\\Deleted)")
    assert c.ok("EXPUNGE") == [b"* VANISHED 1"]
    last = number(c.ok("STATUS INBOX (HIGHESTMODSEQ)"), rb"HIGHESTMODSEQ (\d+)")
    c.close()

    # A restart: never lower.
    imap.restart()
    assert wait_until(lambda: port_open(imap.imaps_port), 10), imap.log()
    d = Raw(imap.imaps_port)
    after = number(d.ok("SELECT INBOX (CONDSTORE)"), rb"\[HIGHESTMODSEQ (\d+)\]")
    assert after >= last
    assert fetched(d.ok(f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {last})")) == {}
    d.close()


# ---- a Maildir Dovecot wrote ------------------------------------------------------------------


def thread_message(n: int, subject: str, date: str, refs: list[int],
                   sender: str, to: str) -> bytes:
    headers = [f"From: {sender}", f"To: {to}", f"Subject: {subject}", f"Date: {date}",
               f"Message-ID: <m{n}@example.test>"]
    if refs:
        headers.append("References: " + " ".join(f"<m{r}@example.test>" for r in refs))
        headers.append(f"In-Reply-To: <m{refs[-1]}@example.test>")
    return ("\r\n".join(headers) + f"\r\n\r\nBody {n}{'.' * n * 7}\r\n").encode()


# (n, subject, date, references, from, to): chains, a branch, a missing parent, a reply
# without References, subjects with Re:/Fwd:/[list] and a tie on the date.
MESSAGES = [
    (1, "Plans", "Mon, 1 Jan 2024 10:00:00 +0000", [], "carol@x.test", "bob@x.test"),
    (2, "Re: Plans", "Mon, 1 Jan 2024 11:00:00 +0100", [1], "bob@x.test", "carol@x.test"),
    (3, "Re: Re: Plans", "Tue, 2 Jan 2024 09:00:00 +0000", [1, 2], "al@x.test", "zed@x.test"),
    (4, "Re: Plans", "Mon, 1 Jan 2024 12:30:00 +0000", [1], "dave@x.test", "al@x.test"),
    (5, "[list] Lunch", "Wed, 3 Jan 2024 08:00:00 -0500", [], "eve@x.test", "bob@x.test"),
    (6, "Fwd: Lunch", "Wed, 3 Jan 2024 08:00:00 -0500", [], "al@x.test", "carol@x.test"),
    (7, "Re: Orphans", "Thu, 4 Jan 2024 10:00:00 +0000", [99], "bob@x.test", "dave@x.test"),
    (8, "Re: Orphans", "Thu, 4 Jan 2024 11:00:00 +0000", [99], "carol@x.test", "eve@x.test"),
    (9, "Re: Plans", "Fri, 5 Jan 2024 10:00:00 +0000", [], "zed@x.test", "bob@x.test"),
    (10, "Zebra", "Sat, 30 Dec 2023 10:00:00 +0000", [], "Bob@x.test", "al@x.test"),
]

QUERIES = [
    "UID SORT (DATE) UTF-8 ALL",
    "UID SORT (REVERSE DATE) UTF-8 ALL",
    "UID SORT (SUBJECT DATE) UTF-8 ALL",
    "UID SORT (FROM REVERSE SIZE) UTF-8 ALL",
    "UID SORT (TO ARRIVAL) UTF-8 ALL",
    "UID SORT (SIZE) UTF-8 UID 2:8",
    "SORT (REVERSE ARRIVAL) UTF-8 ALL",
    "UID THREAD ORDEREDSUBJECT UTF-8 ALL",
    "UID THREAD REFERENCES UTF-8 ALL",
    "THREAD REFERENCES UTF-8 NOT UID 2",
]


def answers(lines: list[bytes]) -> list[bytes]:
    return [x.rstrip(b"\r\n") for x in lines if x.startswith((b"* SORT", b"* THREAD"))]


def test_dovecot_maildir_sort_thread_and_modseq(shared, tmp_path):
    env = shared
    need(DOVECOT_IMAP, "dovecot-imapd")
    maildir = (env.data_dir / "mail" / "example.test" / "alice").resolve()
    d = Dovecot(tmp_path, maildir)
    try:
        for n, subject, date, refs, sender, to in MESSAGES:
            d.cmd("APPEND INBOX () \"05-Jan-2024 10:00:00 +0000\"",
                  thread_message(n, subject, date, refs, sender, to))
        d.cmd("SELECT INBOX")
        expected = {q: answers(d.cmd(q)) for q in QUERIES}
    finally:
        d.close()
    for q, a in expected.items():
        assert len(a) == 1, (q, a)

    env.start()
    assert wait_until(lambda: port_open(env.imaps_port), 10), env.log()
    c = Raw(env.imaps_port)
    # Taken over from Dovecot: no record of tambo's, still a HIGHESTMODSEQ above 0.
    assert number(c.ok("SELECT INBOX (CONDSTORE)"), rb"\[HIGHESTMODSEQ (\d+)\]") > 0
    got = {q: answers(c.ok(q)) for q in QUERIES}
    c.close()
    assert got == expected
