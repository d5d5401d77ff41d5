"""POP3 (SPEC §10; RFC 1939, 2449, 2595, 5034) with Python's poplib, a raw client playing
Thunderbird's dialog, fetchmail, getmail6, and Dovecot's own POP3 server on the same Maildir:
STLS and implicit TLS, CAPA before and after TLS, USER/PASS and AUTH PLAIN, sizes and bytes
checked against the files, DELE only at QUIT, UIDLs as Dovecot gives them and stable across
sessions, the maildrop lock (freed when a client's network vanishes), and IMAP sessions in
IDLE told of POP3's removals.

Every client runs against a server on loopback with a configuration of the test's own; every
run has a deadline and every process started here is stopped here. A test whose client is not
installed is skipped, naming the Debian package (tests/install-deps.sh lists them).
"""

from __future__ import annotations

import base64
import imaplib
import os
import poplib
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from helpers import (PASSWORD, TAMBO_BIN, client_tls_context, free_ports, need, port_open,
                     stop_process, wait_until)

ALICE = "alice@example.test"
RUN_DEADLINE = 60.0  # one run of fetchmail or getmail
DOVECOT_POP3 = "/usr/lib/dovecot/pop3"
NOBODY = 65534


@pytest.fixture
def pop3(env):
    """`env` with POP3 on a STLS port (`pop3_port`) and a POP3S one (`pop3s_port`), and IMAPS
    (`imaps_port`) beside them, started."""
    env.pop3_port, env.pop3s_port, env.imaps_port = free_ports(3)
    env.write_config(pop3_listen=[f"127.0.0.1:{env.pop3_port}"],
                     pop3s_listen=[f"127.0.0.1:{env.pop3s_port}"],
                     imaps_listen=[f"127.0.0.1:{env.imaps_port}"])
    env.start()
    ports = (env.pop3_port, env.pop3s_port, env.imaps_port)
    assert wait_until(lambda: all(port_open(p) for p in ports), 10), env.log()
    return env


# ---- messages on disk ------------------------------------------------------------------------

def put_messages(env, messages: list[bytes]) -> list[Path]:
    """Drops messages into INBOX's new/ as another MDA would, in this order (file names sort
    as they were given, so UIDs follow it)."""
    inbox = env.maildir()
    for sub in ("new", "cur", "tmp"):
        (inbox / sub).mkdir(parents=True, exist_ok=True)
    paths = []
    for data in messages:
        # Unique, and in the order given (Maildir names sort by time, then microseconds).
        now = time.time_ns() // 1000
        path = inbox / "new" / f"{now // 10**6}.M{now % 10**6:06d}P{os.getpid()}.client.example"
        time.sleep(0.002)
        path.write_bytes(data)
        paths.append(path)
    return paths


def message(n: int, body: bytes = b"") -> bytes:
    return (f"From: sender@remote.example\nTo: {ALICE}\nSubject: message {n}\n"
            f"Message-ID: <m{n}@client.example>\n\n").encode() + (body or f"Body {n}.\n".encode())


# One with LF line ends, lines that need byte-stuffing, a CRLF one, one without a last line end.
ODD = [
    message(1, b"line one\n.hidden dot line\n..two dots\n.\nlast\n"),
    message(2).replace(b"\n", b"\r\n") + b".\r\nafter a dot\r\n",
    message(3, b"no line end at the end"),
]


def crlf(data: bytes) -> bytes:
    return re.sub(rb"(?<!\r)\n", b"\r\n", data)


def inbox_files(env) -> dict[str, bytes]:
    """Base name -> bytes of every message file in INBOX (new/ and cur/)."""
    out = {}
    for sub in ("new", "cur"):
        d = env.maildir() / sub
        if d.is_dir():
            for f in d.iterdir():
                out[f.name.split(":2,")[0]] = f.read_bytes()
    return out


def uidlist(env) -> tuple[int, dict[int, str]]:
    """UIDVALIDITY and base name per UID, from dovecot-uidlist."""
    lines = (env.maildir() / "dovecot-uidlist").read_text().splitlines()
    uidvalidity = int(re.search(r" V(\d+)", lines[0]).group(1))
    names = {}
    for line in lines[1:]:
        head, _, name = line.partition(" :")
        names[int(head.split()[0])] = name
    return uidvalidity, names


# ---- clients --------------------------------------------------------------------------------

def connect(env, tls: str = "stls") -> poplib.POP3:
    if tls == "implicit":
        return poplib.POP3_SSL("127.0.0.1", env.pop3s_port, context=client_tls_context(),
                               timeout=20)
    c = poplib.POP3("127.0.0.1", env.pop3_port, timeout=20)
    if tls == "stls":
        c.stls(context=client_tls_context())
    return c


def login(env, tls: str = "stls") -> poplib.POP3:
    c = connect(env, tls)
    c.user(ALICE)
    c.pass_(PASSWORD)
    return c


def try_login(env) -> poplib.POP3 | None:
    """A logged-in session, or None while another one holds the maildrop."""
    c = connect(env)
    c.user(ALICE)
    try:
        c.pass_(PASSWORD)
    except poplib.error_proto as e:
        assert b"[IN-USE]" in e.args[0], e
        c.quit()
        return None
    return c


class Raw:
    """A POP3 client over TLS that sends lines as given and reads replies as they come."""

    def __init__(self, env):
        sock = socket.create_connection(("127.0.0.1", env.pop3s_port), timeout=20)
        self.sock = client_tls_context().wrap_socket(sock)
        self.f = self.sock.makefile("rb")
        assert self.line().startswith(b"+OK"), "greeting"

    def line(self) -> bytes:
        line = self.f.readline()
        assert line.endswith(b"\r\n"), line
        return line[:-2]

    def send(self, line: str | bytes) -> None:
        self.sock.sendall((line.encode() if isinstance(line, str) else line) + b"\r\n")

    def cmd(self, line: str | bytes) -> bytes:
        self.send(line)
        return self.line()

    def multi(self, line: str) -> tuple[bytes, list[bytes]]:
        """A command with a multi-line answer: the first line and the others, unstuffed."""
        first = self.cmd(line)
        assert first.startswith(b"+OK"), (line, first)
        lines = []
        while (got := self.line()) != b".":
            lines.append(got[1:] if got.startswith(b"..") else got)
        return first, lines

    def close(self) -> None:
        self.sock.close()


def plain(user: str = ALICE, password: str = PASSWORD) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


# ---- capabilities and logins ----------------------------------------------------------------

def test_capa_before_and_after_tls(pop3):
    c = connect(pop3, tls=None)
    caps = c.capa()
    assert "STLS" in caps, caps
    assert "USER" not in caps and "SASL" not in caps, caps
    with pytest.raises(poplib.error_proto) as e:
        c.user(ALICE)  # no login in the clear
    assert b"[AUTH]" in e.value.args[0]
    c.stls(context=client_tls_context())
    caps = c.capa()
    for cap in ("USER", "TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"):
        assert cap in caps, (cap, caps)
    assert caps["SASL"] == ["PLAIN"], caps
    assert caps["IMPLEMENTATION"] == ["tambo"], caps
    assert "STLS" not in caps, caps
    c.user(ALICE)
    assert c.pass_(PASSWORD).startswith(b"+OK")
    c.quit()
    caps = connect(pop3, "implicit").capa()
    assert "USER" in caps and "STLS" not in caps, caps


def test_wrong_password_is_refused_slowly_and_logged(pop3):
    c = connect(pop3, "implicit")
    c.user(ALICE)
    start = time.monotonic()
    with pytest.raises(poplib.error_proto) as e:
        c.pass_("wrong password")
    assert time.monotonic() - start >= 0.9
    assert e.value.args[0].startswith(b"-ERR [AUTH] "), e.value
    c.quit()
    assert pop3.wait_log(lambda l: "event=login_failed protocol=pop3" in l and "127.0.0.1" in l)
    login(pop3).quit()
    assert pop3.wait_log(lambda l: "event=login protocol=pop3" in l and f'user="{ALICE}"' in l)
    assert "wrong password" not in pop3.log()


def test_stat_list_retr_top_match_the_files(pop3):
    paths = put_messages(pop3, ODD)
    for tls in ("stls", "implicit"):
        c = login(pop3, tls)
        count, size = c.stat()
        assert count == 3 and size == sum(len(crlf(m)) for m in ODD), (count, size)
        _, listing, _ = c.list()
        assert [int(l.split()[1]) for l in listing] == [len(crlf(m)) for m in ODD], listing
        for n, data in enumerate(ODD, 1):
            first, lines, _ = c.retr(n)
            assert first == f"+OK {len(crlf(data))} octets".encode(), first
            # poplib undoes the byte-stuffing and the line ends.
            assert b"\r\n".join(lines) + b"\r\n" == crlf(data).rstrip(b"\r\n") + b"\r\n"
            # TOP n 99999999 (fetchmail) is the whole message; TOP n 0 the header section.
            assert c.top(n, 99999999)[1] == lines
            head = lines[:lines.index(b"") + 1]
            assert c.top(n, 0)[1] == head
            assert c.top(n, 1)[1] == lines[:len(head) + 1]
        with pytest.raises(poplib.error_proto):
            c.retr(4)
        c.quit()
    # The files moved to cur/ (as Dovecot does), unchanged.
    assert sorted(inbox_files(pop3).values()) == sorted(ODD)
    assert not any(p.exists() for p in paths)


def test_raw_wire_is_byte_stuffed_crlf(pop3):
    put_messages(pop3, ODD[:1])
    r = Raw(pop3)
    assert r.cmd(f"AUTH PLAIN {plain()}") == b"+OK Logged in"
    r.send("RETR 1")
    assert r.line() == f"+OK {len(crlf(ODD[0]))} octets".encode()
    got = b""
    while not got.endswith(b"\r\n.\r\n"):
        got += r.f.readline()
    want = crlf(ODD[0]).replace(b"\r\n.", b"\r\n..") + b".\r\n"
    assert got == want
    r.cmd("QUIT")
    r.close()


def test_thunderbird_dialog_auth_plain_without_initial_response(pop3):
    put_messages(pop3, [message(n) for n in range(1, 4)])
    r = Raw(pop3)
    first, caps = r.multi("CAPA")
    assert b"SASL PLAIN" in caps and b"USER" in caps, caps
    assert r.cmd("AUTH PLAIN") == b"+ "
    assert r.cmd("*").startswith(b"-ERR"), "cancelled"
    assert r.cmd("AUTH PLAIN") == b"+ "
    assert r.cmd(plain()) == b"+OK Logged in"
    assert r.cmd("STAT") == b"+OK 3 " + str(sum(len(crlf(message(n))) for n in (1, 2, 3))).encode()
    _, listing = r.multi("LIST")
    assert len(listing) == 3
    _, uidls = r.multi("UIDL")
    assert [u.split()[0] for u in uidls] == [b"1", b"2", b"3"]
    _, top = r.multi("TOP 1 0")
    assert top[-1] == b"" and b"Subject: message 1" in top
    _, body = r.multi("RETR 1")
    assert body[-1] == b"Body 1."
    assert r.cmd("DELE 1") == b"+OK Marked to be deleted"
    assert r.cmd("QUIT") == b"+OK Logging out, 1 messages deleted"
    r.close()
    left = inbox_files(pop3).values()
    assert sorted(left) == [message(2), message(3)], left


def test_auth_plain_with_initial_response_and_pipelining(pop3):
    put_messages(pop3, [message(1), message(2)])
    r = Raw(pop3)
    # Everything at once (RFC 2449 PIPELINING): answered in order.
    r.send(f"AUTH PLAIN {plain()}\r\nSTAT\r\nUIDL 2\r\nDELE 2\r\nLIST\r\nQUIT".encode())
    assert r.line() == b"+OK Logged in"
    assert r.line().startswith(b"+OK 2 ")
    assert re.fullmatch(rb"\+OK 2 [0-9a-f]{16}", r.line())
    assert r.line() == b"+OK Marked to be deleted"
    assert r.line().startswith(b"+OK 1 messages")
    assert r.line().startswith(b"1 ")
    assert r.line() == b"."
    assert r.line() == b"+OK Logging out, 1 messages deleted"
    r.close()
    assert list(inbox_files(pop3).values()) == [message(1)]


def test_dele_rset_and_dropped_connections_delete_nothing(pop3):
    put_messages(pop3, [message(n) for n in range(1, 4)])
    c = login(pop3)
    c.dele(1)
    c.dele(2)
    assert c.stat()[0] == 1
    c.rset()
    assert c.stat()[0] == 3
    c.dele(3)
    c.quit()
    assert len(inbox_files(pop3)) == 2
    # DELE, then the connection drops: the marks are forgotten (RFC 1939 §6).
    c = login(pop3)
    c.dele(1)
    c.dele(2)
    c.sock.shutdown(socket.SHUT_RDWR)  # no QUIT
    c.sock.close()
    # The lock is freed when the server notices the drop; the next login waits for that.
    c = wait_until(lambda: try_login(pop3), 5)
    assert c, pop3.log()
    assert c.stat()[0] == 2
    c.quit()
    assert len(inbox_files(pop3)) == 2


def test_uidls_are_dovecots_and_stable_across_sessions(pop3):
    put_messages(pop3, [message(n) for n in range(1, 4)])
    c = login(pop3)
    first = c.uidl()[1]
    c.quit()
    uidvalidity, names = uidlist(pop3)
    assert sorted(names) == [1, 2, 3]
    want = [f"{n} {uid:08x}{uidvalidity:08x}".encode() for n, uid in enumerate(names, 1)]
    assert first == want
    # Another message; a removal; the old ones keep their UIDLs.
    put_messages(pop3, [message(4)])
    c = login(pop3, "implicit")
    again = c.uidl()[1]
    assert again[:3] == want and len(again) == 4
    assert c.uidl(4) == b"+OK " + again[3]
    c.dele(1)
    c.quit()
    c = login(pop3)
    assert [l.split()[1] for l in c.uidl()[1]] == [l.split()[1] for l in again[1:]]
    c.quit()
    uids = [l.split()[1] for l in again]
    assert len(set(uids)) == len(uids)


def test_second_pop3_session_is_refused_but_imap_goes_on(pop3):
    put_messages(pop3, [message(1)])
    first = login(pop3)
    second = connect(pop3, "implicit")
    second.user(ALICE)
    with pytest.raises(poplib.error_proto) as e:
        second.pass_(PASSWORD)
    assert e.value.args[0].startswith(b"-ERR [IN-USE] "), e.value
    imap = imaplib.IMAP4_SSL("127.0.0.1", pop3.imaps_port, ssl_context=client_tls_context(),
                             timeout=20)
    imap.login(ALICE, PASSWORD)
    assert imap.select("INBOX")[1] == [b"1"]
    imap.logout()
    first.quit()
    second = login(pop3, "implicit")
    assert second.stat()[0] == 1
    second.quit()


def test_imap_idle_hears_of_the_removal_at_quit(pop3):
    put_messages(pop3, [message(1), message(2)])
    imap = imaplib.IMAP4_SSL("127.0.0.1", pop3.imaps_port, ssl_context=client_tls_context(),
                             timeout=20)
    imap.login(ALICE, PASSWORD)
    imap.select("INBOX")
    # Python 3.11's imaplib has no idle(): by hand.
    imap.send(b"i1 IDLE\r\n")
    assert imap.readline().startswith(b"+")
    c = login(pop3)
    c.dele(1)
    c.quit()
    imap.sock.settimeout(10)
    heard = imap.readline()
    assert heard == b"* 1 EXPUNGE\r\n", heard
    imap.send(b"DONE\r\n")
    while not (line := imap.readline()).startswith(b"i1 "):
        assert line.startswith(b"* "), line  # "* 1 EXISTS" may come first
    assert line.startswith(b"i1 OK"), line
    imap.logout()


def test_metrics_count_pop3_connections_and_logins(env):
    env.pop3s_port, monitoring = free_ports(2)
    env.write_config(pop3s_listen=[f"127.0.0.1:{env.pop3s_port}"],
                     monitoring_listen=f"127.0.0.1:{monitoring}")
    env.start()
    assert wait_until(lambda: port_open(env.pop3s_port) and port_open(monitoring), 10)
    login(env, "implicit").quit()
    c = connect(env, "implicit")
    c.user(ALICE)
    with pytest.raises(poplib.error_proto):
        c.pass_("wrong password")
    c.quit()

    def value(text: str, sample: str) -> float:
        m = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.M)
        assert m, (sample, text)
        return float(m.group(1))

    with urllib.request.urlopen(f"http://127.0.0.1:{monitoring}/metrics", timeout=10) as r:
        text = r.read().decode()
    assert value(text, 'tambo_logins_total{protocol="pop3",result="ok"}') == 1
    assert value(text, 'tambo_logins_total{protocol="pop3",result="password"}') == 1
    assert value(text, 'tambo_connections_total{listener="pop3s"}') >= 2
    assert value(text, 'tambo_connections_total{listener="pop3"}') == 0


# ---- real clients ---------------------------------------------------------------------------

def run(argv: list[str], what: str, env: dict | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=RUN_DEADLINE,
                              stdin=subprocess.DEVNULL, env=env)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{what} did not finish within {RUN_DEADLINE}s\nstdout: {e.stdout}\n"
                    f"stderr: {e.stderr}", pytrace=False)


def fetchmail(env, tmp: Path, keep: bool, tls: str) -> tuple[int, str, list[bytes]]:
    """One fetchmail run to an MDA that writes one file per message into tmp/out; returns
    its status, its output, and the messages delivered by this run."""
    program = need("fetchmail", "fetchmail")
    out = tmp / "out"
    out.mkdir(exist_ok=True)
    before = set(out.iterdir())
    port = env.pop3s_port if tls == "ssl" else env.pop3_port
    # "ssl" is 995; on 110 an sslproto makes fetchmail insist on STLS (it asks CAPA first).
    ssl_opt = "ssl" if tls == "ssl" else "sslproto 'tls1.2+'"
    rc = tmp / "fetchmailrc"
    rc.write_text(
        f"set no syslog\nset logfile {tmp}/fetchmail.log\n"
        f"poll 127.0.0.1 protocol pop3 port {port} uidl\n"
        f"  user '{ALICE}' there with password '{PASSWORD}' is 'root' here\n"
        f"  {ssl_opt} no sslcertck {'keep' if keep else 'nokeep'}\n"
        f"  mda \"/bin/sh -c 'cat > {out}/msg.$$'\"\n")
    rc.chmod(0o600)
    environ = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp),
               "FETCHMAILHOME": str(tmp)}
    p = run([program, "-f", str(rc), "--pidfile", str(tmp / "fetchmail.pid"), "-v"],
            "fetchmail", env=environ)
    new = sorted(f.read_bytes() for f in set(out.iterdir()) - before)
    return p.returncode, p.stdout + p.stderr, new


@pytest.mark.parametrize("tls", ["stls", "ssl"])
def test_fetchmail_keep_fetches_once(pop3, tmp_path, tls):
    msgs = [message(n) for n in range(1, 4)]
    put_messages(pop3, msgs)
    code, out, got = fetchmail(pop3, tmp_path, keep=True, tls=tls)
    assert code == 0, out
    assert "STLS" in out or tls == "ssl", out
    assert len(got) == 3 and all(any(crlf(m).rstrip() in crlf(g) for g in got) for m in msgs), \
        (out, got)
    assert len(inbox_files(pop3)) == 3, "kept"
    # Second run: the UIDLs are known, nothing is fetched (status 1: no mail).
    code, out, got = fetchmail(pop3, tmp_path, keep=True, tls=tls)
    assert code == 1 and got == [], out
    put_messages(pop3, [message(4)])
    code, out, got = fetchmail(pop3, tmp_path, keep=True, tls=tls)
    assert code == 0 and len(got) == 1 and b"Subject: message 4" in got[0], out


def test_fetchmail_without_keep_empties_the_maildrop(pop3, tmp_path):
    put_messages(pop3, [message(n) for n in range(1, 4)])
    code, out, got = fetchmail(pop3, tmp_path, keep=False, tls="stls")
    assert code == 0 and len(got) == 3, out
    assert inbox_files(pop3) == {}, out
    code, out, got = fetchmail(pop3, tmp_path, keep=False, tls="stls")
    assert code == 1 and got == [], out


def test_getmail_twice_gets_nothing_new(pop3, tmp_path):
    program = need("getmail", "getmail6")
    msgs = [message(n) for n in range(1, 4)]
    put_messages(pop3, msgs)
    # getmail delivers to a Maildir as no root: as root, it delivers as nobody, who must
    # reach the destination (pytest's temp folders are root's alone).
    home = Path(tempfile.mkdtemp(prefix="tambo-getmail-"))
    try:
        os.chmod(home, 0o711)
        dest = home / "dest"
        for sub in ("cur", "new", "tmp"):
            (dest / sub).mkdir(parents=True)
        user = ""
        if os.getuid() == 0:
            for path in [dest, *dest.iterdir()]:
                os.chown(path, NOBODY, NOBODY)
            user = "user = nobody\n"
        rc = tmp_path / "getmailrc"
        rc.write_text(
            "[retriever]\ntype = SimplePOP3SSLRetriever\nserver = 127.0.0.1\n"
            f"port = {pop3.pop3s_port}\nusername = {ALICE}\npassword = {PASSWORD}\n\n"
            f"[destination]\ntype = Maildir\npath = {dest}/\n{user}\n"
            "[options]\nread_all = false\ndelete = false\nverbose = 2\n")
        argv = [program, "--rcfile", str(rc), "--getmaildir", str(tmp_path)]
        p = run(argv, "getmail")
        assert p.returncode == 0, p.stdout + p.stderr
        got = sorted((dest / "new").iterdir())
        assert len(got) == 3, p.stdout + p.stderr
        for n in (1, 2, 3):
            assert any(b"Subject: message %d" % n in f.read_bytes() for f in got), n
        # Second run: every UIDL is known (getmail's oldmail file), nothing is retrieved.
        p = run(argv, "getmail")
        assert p.returncode == 0, p.stdout + p.stderr
        assert "0 messages" in p.stdout + p.stderr, p.stdout + p.stderr
        assert len(list((dest / "new").iterdir())) == 3
        assert len(inbox_files(pop3)) == 3, "kept on the server"
    finally:
        shutil.rmtree(home, ignore_errors=True)


# ---- Dovecot on the same Maildir ------------------------------------------------------------

def dovecot_pop3(home: Path, maildir: Path, commands: list[str]) -> list[str]:
    """Dovecot's POP3 server preauthenticated on the Maildir, fed `commands`; its output."""
    program = need(DOVECOT_POP3, "dovecot-pop3d")
    uid, gid = os.getuid(), os.getgid()
    if uid == 0:  # Dovecot runs mail processes as no system user: as nobody
        uid = gid = NOBODY
    conf = home / "dovecot.conf"
    conf.write_text(
        f"base_dir = {home}/run\nstate_dir = {home}/state\nlog_path = /dev/stderr\n"
        f"mail_location = maildir:{maildir}\nssl = no\nprotocols = pop3\nlisten =\n"
        f"mail_uid = {uid}\nmail_gid = {gid}\nfirst_valid_uid = 1\nfirst_valid_gid = 1\n")
    data = "".join(f"{c}\r\n" for c in commands + ["QUIT"])
    try:
        p = subprocess.run([program, "-c", str(conf)], input=data.encode(), capture_output=True,
                           timeout=RUN_DEADLINE, env={"USER": "alice", "HOME": str(home)})
    except subprocess.TimeoutExpired:
        pytest.fail("Dovecot's pop3 did not finish", pytrace=False)
    assert p.returncode == 0, p.stderr
    return p.stdout.decode().split("\r\n")


def multiline(lines: list[str], after: str) -> list[str]:
    """The lines of the multi-line answer that follows the line `after` starts."""
    i = next(n for n, l in enumerate(lines) if l.startswith(after))
    return lines[i + 1:lines.index(".", i)]


@pytest.fixture
def shared(env):
    """`env` not started, its data_dir in a temp folder that Dovecot's user can reach."""
    data = Path(tempfile.mkdtemp(prefix="tambo-dovecot-pop3-"))
    os.chmod(data, 0o711)
    os.symlink(data, env.data_dir)
    env.pop3_port, env.pop3s_port, env.imaps_port = free_ports(3)
    env.write_config(pop3s_listen=[f"127.0.0.1:{env.pop3s_port}"])
    yield env
    env.stop()
    shutil.rmtree(data, ignore_errors=True)


def test_dovecot_and_tambo_give_the_same_uidls(shared):
    env = shared
    maildir = env.maildir().resolve()
    home = env.data_dir.resolve() / "dovecot-home"  # reachable by Dovecot's user
    home.mkdir()
    put_messages(env, [message(n) for n in range(1, 6)] + ODD)
    if os.getuid() == 0:
        os.chown(home, NOBODY, NOBODY)
        for path in [maildir.parent, maildir, *maildir.rglob("*")]:
            os.chown(path, NOBODY, NOBODY)
    # 1. Dovecot serves the Maildir first (it writes dovecot-uidlist, moves new/ to cur/).
    dovecot_pop3(home, maildir, ["UIDL"])
    # 2. Message 3 came from another server before Dovecot: the uidlist carries its old UIDL.
    path = maildir / "dovecot-uidlist"
    lines = path.read_text().splitlines()
    lines[3] = re.sub(r"^(\d+) ", r"\1 Pold-server-uidl-3 ", lines[3])
    path.write_text("\n".join(lines) + "\n")
    for index in maildir.glob("dovecot.index*"):
        index.unlink()  # Dovecot's caches: it reads the uidlist again
    said = dovecot_pop3(home, maildir, ["UIDL", "LIST"])
    dovecot_uidl = multiline(said, "+OK")
    dovecot_list = multiline(said[said.index(".") + 1:], "+OK")
    assert "3 old-server-uidl-3" in dovecot_uidl, said
    # 3. tambo on the same files gives the same listing.
    env.start()
    assert wait_until(lambda: port_open(env.pop3s_port), 10), env.log()
    c = login(env, "implicit")
    assert [l.decode() for l in c.uidl()[1]] == dovecot_uidl
    assert [l.decode() for l in c.list()[1]] == dovecot_list
    c.quit()


def test_a_silent_client_is_probed_on_pop3_and_imap_not_smtp(pop3):
    """A client whose network went away would hold the maildrop lock until the autologout:
    POP3 and IMAP connections have TCP keepalive armed (probes after 2 minutes of quiet), SMTP
    connections keep their command timeouts alone. Seen from the kernel's side (`ss -o`)."""
    ss = need("ss", "iproute2")
    ports = {"pop3": pop3.pop3_port, "pop3s": pop3.pop3s_port, "imaps": pop3.imaps_port,
             "smtp": pop3.smtp_port}
    clients = [socket.create_connection(("127.0.0.1", p), timeout=10) for p in ports.values()]
    try:
        def timers(port: int) -> str:
            out = subprocess.run([ss, "-tnoH", "state", "established", f"( sport = :{port} )"],
                                 capture_output=True, text=True, timeout=10, check=True).stdout
            return out

        assert wait_until(lambda: all(timers(p).strip() for p in ports.values()), 10)
        for name, port in ports.items():
            line = timers(port)
            if name == "smtp":
                assert "keepalive" not in line, line
            else:
                assert re.search(r"timer:\(keepalive,(1min\d+|2min)", line), (name, line)
    finally:
        for c in clients:
            c.close()


# A client in a network namespace of its own, reached over a veth pair: it logs in (taking the
# maildrop lock), its link goes down for longer than the server's keepalive gives it, the link
# comes back, and it logs in again. The first socket stays open all along (closing it would
# tell the server), so only the server's probes can free the lock.
VANISHING_CLIENT = """
import poplib, ssl, subprocess, sys, time
host, port, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
gone_for, deadline = float(sys.argv[5]), float(sys.argv[6])
tls = ssl.create_default_context()
tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE

def login():
    c = poplib.POP3(host, port, timeout=5)
    c.stls(context=tls)
    c.user(user)
    c.pass_(password)
    return c

first = login()
subprocess.run(["ip", "link", "set", "va", "down"], check=True, timeout=5)
time.sleep(gone_for)
subprocess.run(["ip", "link", "set", "va", "up"], check=True, timeout=5)
start = time.monotonic()
while True:
    try:
        login().quit()
        print(f"in again {time.monotonic() - start:.1f}s after the link came back")
        break
    except (poplib.error_proto, OSError) as e:
        if time.monotonic() - start > deadline:
            print(f"refused: {e}")
            break
        time.sleep(0.5)
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces and a veth pair")
@pytest.mark.skipif(not (shutil.which("unshare") and shutil.which("nsenter") and
                         shutil.which("ip")), reason="needs unshare, nsenter and ip (util-linux, "
                                                     "iproute2)")
def test_a_vanished_client_frees_the_maildrop(env):
    """A client whose network went away without a word (a phone changing networks) no longer
    holds the maildrop lock until the 10-minute autologout: the server's keepalive gives up on
    it, its session ends, and the same user can log in again. TAMBO_KEEPALIVE_SECS=6 shortens
    the 2 minutes of quiet to 6 s, so the server gives up 9 s after the client's last word."""
    server_addr, client_addr, port = "198.51.100.1", "198.51.100.2", 110
    holders = [subprocess.Popen(["unshare", "--net", "--", "sleep", "300"]) for _ in range(2)]
    tambo = None
    try:
        server_ns, client_ns = (f"/proc/{h.pid}/ns/net" for h in holders)
        own = os.readlink("/proc/self/ns/net")
        assert wait_until(lambda: all(os.readlink(f"/proc/{h.pid}/ns/net") != own
                                      for h in holders), 5), "unshare did not make a namespace"

        def inside(ns: str, *argv: str) -> None:
            subprocess.run(["nsenter", f"--net={ns}", "--", *argv], check=True, timeout=10)

        pair = subprocess.run(["ip", "link", "add", "va", "netns", str(holders[1].pid), "type",
                               "veth", "peer", "name", "vb", "netns", str(holders[0].pid)],
                              capture_output=True, text=True, timeout=10)
        if "Unknown device type" in pair.stderr:
            pytest.skip(f"the kernel has no veth: {pair.stderr.strip()}")
        assert pair.returncode == 0, pair.stderr
        inside(server_ns, "ip", "link", "set", "lo", "up")
        inside(server_ns, "ip", "addr", "add", f"{server_addr}/24", "dev", "vb")
        inside(server_ns, "ip", "link", "set", "vb", "up")
        inside(client_ns, "ip", "addr", "add", f"{client_addr}/24", "dev", "va")
        inside(client_ns, "ip", "link", "set", "va", "up")

        env.write_config(pop3_listen=[f"{server_addr}:{port}"])
        env.extra_env["TAMBO_KEEPALIVE_SECS"] = "6"
        with open(env.log_path, "ab") as log:
            tambo = subprocess.Popen(["nsenter", f"--net={server_ns}", "--", str(TAMBO_BIN),
                                      "-C", str(env.dir), "serve"],
                                     stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env={**env.env(), **env.extra_env},
                                     cwd=str(env.dir.parent))
        assert env.wait_log(lambda l: f"listening on {server_addr}:{port} (pop3)" in l, 10), \
            env.log()
        # Gone for 12 s, 3 more than the server gives it; back in within 10 s more.
        run = subprocess.run(["nsenter", f"--net={client_ns}", "--", sys.executable, "-c",
                              VANISHING_CLIENT, server_addr, str(port), ALICE, PASSWORD, "12",
                              "10"], capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        assert run.stdout.startswith("in again"), f"{run.stdout}\nlog:\n{env.log()}"
        # The log says why the first session ended (with the error the last probe met: here
        # "No route to host", as the link down left the address unresolved).
        gone = f"pop3: {client_addr}:"
        assert env.wait_log(lambda l: gone in l and "stopped answering" in l), env.log()
    finally:
        if tambo is not None:
            stop_process(tambo)
        for h in holders:
            stop_process(h)
