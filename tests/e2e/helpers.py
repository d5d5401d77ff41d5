"""Helpers for tambo's end-to-end tests: one server per test in its own config folder,
a raw SMTP client that reads replies exactly as the server sends them, and Maildir readers.

Only the standard library is used here; pytest is imported for `pytest.fail` so that a
failure carries the server's log.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
TAMBO_BIN = Path(os.environ.get("TAMBO_BIN") or REPO_ROOT / "target" / "release" / "tambo")

HOSTNAME = "mx.example.test"
PASSWORD = "correct horse battery"
TIMEOUT = 10.0  # every socket operation
START_DEADLINE = 15.0
DELIVERY_DEADLINE = 10.0
DEFAULT_SIZE = 50 * 1024 * 1024

# Every key of SPEC §3.
SPEC_KEYS = [
    "hostname", "smtp_listen", "submission_listen", "submission_tls_listen",
    "imap_listen", "imaps_listen", "pop3_listen", "pop3s_listen", "monitoring_listen",
    "data_dir", "max_message_size_mb", "max_recipients", "suffix_separators",
    "drop_characters", "local_delivery", "give_up_after", "dns_servers",
    "outbound_smtp_port", "inbound_policy", "srs_secret", "haproxy_incoming",
    "relay_networks", "outbound_bind", "arc_seal", "mailbox_quota_mb",
    "acme", "http_listen", "https_listen",
]


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on loopback (all bound at once so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def wait_until(pred, deadline: float = DELIVERY_DEADLINE, interval: float = 0.05):
    """Polls pred() until it returns something truthy; returns that value, or None."""
    end = time.monotonic() + deadline
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() >= end:
            return None
        time.sleep(interval)


def client_tls_context() -> ssl.SSLContext:
    # The server's certificate is self-signed: only the channel is under test here.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def need(program: str, package: str) -> str:
    """The path of `program` (a name on PATH or an absolute path), for a test that runs it as
    a real peer. When it is missing the test is skipped, naming the Debian package
    (tests/install-deps.sh lists them); with TAMBO_REQUIRE_PEERS=1 (tests/run.sh, which has
    installed them all) it fails instead, as src/testsupport.rs does for the unit tests."""
    path = shutil.which(program) or (program if os.access(program, os.X_OK) else None)
    if path:
        return path
    why = f"{program} not found: install the Debian package {package} (tests/install-deps.sh)"
    if os.environ.get("TAMBO_REQUIRE_PEERS") == "1":
        pytest.fail(why + "; TAMBO_REQUIRE_PEERS=1 says every peer is installed", pytrace=False)
    pytest.skip(why)


def stop_process(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL if it has not exited within 10 s; waits for it either way."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --------------------------------------------------------------------------------------------
# The server under test
# --------------------------------------------------------------------------------------------


class Tambo:
    """One config folder and (at most) one running `tambo serve` on it."""

    def __init__(self, root: Path):
        self.dir = root / "cfg"
        self.log_path = root / "tambo.log"
        self.smtp_port, self.submission_port, self.submission_tls_port = free_ports(3)
        self.settings: dict = {
            "hostname": HOSTNAME,
            "smtp_listen": [f"127.0.0.1:{self.smtp_port}"],
            "submission_listen": [f"127.0.0.1:{self.submission_port}"],
            "submission_tls_listen": [f"127.0.0.1:{self.submission_tls_port}"],
            "dns_servers": [failing_dns()],
        }
        self.proc: subprocess.Popen | None = None
        self.extra_env: dict[str, str] = {}  # added to the environment of `serve`
        self.died: list[str] = []  # unexpected exits noticed by stop()
        (self.dir / "conf").mkdir(parents=True)
        (self.dir / "domains").mkdir()
        self.write_config()

    # ---- config folder ---------------------------------------------------------------------

    @property
    def conf_path(self) -> Path:
        return self.dir / "conf" / "tambo.json"

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    @property
    def queue_dir(self) -> Path:
        return self.data_dir / "queue"

    def write_config(self, **extra) -> None:
        self.settings.update(extra)
        self.conf_path.write_text(json.dumps(self.settings, indent=2) + "\n")

    def add_domain(self, name: str) -> Path:
        d = self.dir / "domains" / name
        d.mkdir(parents=True, exist_ok=True)
        return d

    def users_path(self, domain: str = "example.test") -> Path:
        return self.dir / "domains" / domain / "users"

    def aliases_path(self, domain: str = "example.test") -> Path:
        return self.dir / "domains" / domain / "aliases"

    def write_aliases(self, text: str, domain: str = "example.test") -> None:
        self.add_domain(domain)
        self.aliases_path(domain).write_text(text)

    def cli(self, *args: str, input: str | None = None, env: dict | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess:
        self.require_binary()
        return subprocess.run(
            [str(TAMBO_BIN), "-C", str(self.dir), *args],
            input=input if input is not None else "",
            capture_output=True, text=True, timeout=timeout, env=env or self.env(),
        )

    def user_add(self, address: str, password: str = PASSWORD, receive_only: bool = False):
        args = ["util", "user-add", address]
        args += ["--receive-only"] if receive_only else ["--password", password]
        r = self.cli(*args)
        if r.returncode != 0:
            pytest.fail(f"user-add {address} failed: exit {r.returncode}\n"
                        f"stdout: {r.stdout}\nstderr: {r.stderr}")
        return r

    # ---- process ---------------------------------------------------------------------------

    @staticmethod
    def require_binary() -> None:
        if not TAMBO_BIN.is_file():
            pytest.fail(f"tambo binary not found at {TAMBO_BIN} (cargo build --release, or TAMBO_BIN)")

    @staticmethod
    def env(rust_log: str | None = "info") -> dict:
        env = dict(os.environ)
        env.pop("RUST_LOG", None)
        if rust_log is not None:
            env["RUST_LOG"] = rust_log
        return env

    @property
    def ports(self) -> list[int]:
        return [self.smtp_port, self.submission_port, self.submission_tls_port]

    def start(self) -> "Tambo":
        """Starts `tambo serve`; returns when all three ports accept TCP."""
        self.require_binary()
        assert self.proc is None or self.proc.poll() is not None, "already running"
        with open(self.log_path, "ab") as log:
            log.write(b"==== start ====\n")
            log.flush()
            self.proc = subprocess.Popen(
                [str(TAMBO_BIN), "-C", str(self.dir), "serve"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                # Not the config folder: data_dir must be relative to -C, not to the cwd.
                env={**self.env(), **self.extra_env}, cwd=str(self.dir.parent),
            )
        end = time.monotonic() + START_DEADLINE
        pending = list(self.ports)
        while pending:
            if self.proc.poll() is not None:
                pytest.fail(f"tambo serve exited with {self.proc.returncode} before listening; "
                            f"log:\n{self.log()}")
            pending = [p for p in pending if not port_open(p)]
            if not pending:
                break
            if time.monotonic() > end:
                pytest.fail(f"tambo serve: ports {pending} not open after {START_DEADLINE}s; "
                            f"log:\n{self.log()}")
            time.sleep(0.05)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """SIGTERM, 5 s grace, then SIGKILL. Notes an exit that happened before we asked."""
        if self.proc is None:
            return
        if self.proc.poll() is not None:
            if self.proc.returncode not in (0, -signal.SIGKILL, -signal.SIGTERM):
                self.died.append(f"server exited by itself with status {self.proc.returncode}")
            self.proc = None
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def restart(self) -> "Tambo":
        self.stop()
        return self.start()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"

    # ---- queue and mailboxes ---------------------------------------------------------------

    def queue_files(self) -> list[Path]:
        """Entries of data/queue other than its tmp/ (messages being received) and free/
        (emptied files kept for reuse) folders: the queued messages."""
        if not self.queue_dir.is_dir():
            return []
        return sorted(p for p in self.queue_dir.iterdir() if p.name not in ("tmp", "free"))

    def maildir(self, user: str = "alice", domain: str = "example.test") -> Path:
        return self.data_dir / "mail" / domain / user

    def messages(self, user: str = "alice", domain: str = "example.test") -> list[bytes]:
        return read_maildir_new(self.maildir(user, domain))

    def wait_messages(self, n: int, user: str = "alice", domain: str = "example.test",
                      deadline: float = DELIVERY_DEADLINE) -> list[bytes]:
        """Waits until the Maildir holds at least n messages in new/; fails with the log."""
        got = wait_until(lambda: (m := self.messages(user, domain)) and len(m) >= n and m,
                         deadline)
        if not got:
            have = len(self.messages(user, domain))
            pytest.fail(f"{user}@{domain}: expected {n} message(s) in {self.maildir(user, domain)}"
                        f"/new within {deadline}s, have {have}; queue: "
                        f"{[p.name for p in self.queue_files()]}\nlog:\n{self.log()}")
        return got

    def wait_log(self, pred, deadline: float = 5.0) -> str | None:
        """First log line satisfying pred, waiting for it to be written."""
        return wait_until(lambda: next((l for l in self.log().splitlines() if pred(l)), None),
                          deadline)


def read_maildir_new(path: Path) -> list[bytes]:
    new = path / "new"
    if not new.is_dir():
        return []
    out = []
    for f in sorted(new.iterdir()):
        if f.name.startswith(".") or not f.is_file():
            continue
        try:
            out.append(f.read_bytes())
        except FileNotFoundError:  # moved meanwhile
            pass
    return out


def header_block(msg: bytes) -> list[str]:
    """The unfolded header fields of a delivered message (up to the first empty line)."""
    text = msg.decode("utf-8", errors="replace")
    head = re.split(r"\r?\n\r?\n", text, maxsplit=1)[0]
    fields: list[str] = []
    for line in re.split(r"\r?\n", head):
        if line[:1] in (" ", "\t") and fields:
            fields[-1] += " " + line.strip()
        else:
            fields.append(line)
    return fields


def header_values(msg: bytes, name: str) -> list[str]:
    """The values of header field `name` (any case), unfolded, white space collapsed."""
    out = []
    for f in header_block(msg):
        n, _, v = f.partition(":")
        if n.strip().lower() == name.lower():
            out.append(" ".join(v.split()))
    return out


def count_with(messages: list[bytes], marker: str) -> int:
    m = marker.encode()
    return sum(1 for msg in messages if m in msg)


# --------------------------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------------------------


def make_message(subject: str | None = None, sender: str = "sender@remote.example",
                 to: str = "alice@example.test", body: str = "Hello.\r\n",
                 extra_headers: list[str] | None = None) -> tuple[bytes, str]:
    """An RFC 5322 message with CRLF line ends and a unique Message-ID; returns (bytes, id)."""
    token = uuid.uuid4().hex
    msgid = f"<{token}@client.example>"
    subject = subject or f"test {token}"
    headers = list(extra_headers or []) + [
        "X-Test-Marker: first-original-header",
        f"From: {sender}",
        f"To: {to}",
        f"Subject: {subject}",
        f"Message-ID: {msgid}",
        "Date: Mon, 1 Jan 2024 00:00:00 +0000",
    ]
    return ("\r\n".join(headers) + "\r\n\r\n" + body).encode("utf-8"), msgid


# --------------------------------------------------------------------------------------------
# A raw SMTP client
# --------------------------------------------------------------------------------------------


class Closed(Exception):
    """The server closed the connection."""


@dataclass
class Reply:
    code: int
    lines: list[str] = field(default_factory=list)  # text after "NNN-" / "NNN "

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    @property
    def enhanced(self) -> str:
        """The enhanced status code (RFC 3463) of the first line, or ''."""
        m = re.match(r"([245]\.\d{1,3}\.\d{1,3})\b", self.lines[0] if self.lines else "")
        return m.group(1) if m else ""

    def __str__(self) -> str:
        return " | ".join(f"{self.code} {l}" for l in self.lines)


def assert_reply(r: Reply, code: int, enhanced: str | None = None, what: str = "") -> None:
    ok = r.code == code and (enhanced is None or r.enhanced == enhanced)
    exp = f"{code} {enhanced or ''}".strip()
    assert ok, f"{what}: expected {exp}, got {r}"


class SmtpConn:
    """A line-exact SMTP client on a raw socket. Reads the greeting on connect."""

    def __init__(self, port: int, tls: bool = False, timeout: float = TIMEOUT,
                 source: str | None = None):
        """`source`: the client's own address (another of 127/8), as a client elsewhere."""
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                        source_address=(source, 0) if source else None)
        if tls:
            sock = client_tls_context().wrap_socket(sock)
        self.sock = sock
        self.buf = b""
        self.greeting = self.reply()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data: bytes | str) -> None:
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.sock.sendall(data)

    def _fill(self) -> None:
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError as e:
            raise Closed(f"connection reset ({e})") from e
        if not chunk:
            raise Closed("connection closed by server")
        self.buf += chunk

    def readline(self) -> bytes:
        while b"\n" not in self.buf:
            if len(self.buf) > 100_000:
                raise AssertionError(f"no line end in {len(self.buf)} bytes from the server")
            self._fill()
        line, self.buf = self.buf.split(b"\n", 1)
        return line

    def reply(self) -> Reply:
        lines: list[str] = []
        code = None
        while True:
            raw = self.readline()
            assert raw.endswith(b"\r"), f"reply line without CRLF: {raw!r}"
            line = raw[:-1].decode("utf-8", errors="replace")
            m = re.match(r"^(\d{3})([ -])(.*)$", line) or re.match(r"^(\d{3})()$", line)
            assert m, f"malformed reply line: {line!r} (after {lines})"
            this = int(m.group(1))
            assert code is None or this == code, f"code changed inside a reply: {line!r}"
            code = this
            lines.append(m.group(3) if m.lastindex and m.lastindex >= 3 else "")
            if m.group(2) != "-":
                return Reply(code, lines)

    def cmd(self, line: str | bytes) -> Reply:
        if isinstance(line, str):
            line = line.encode("utf-8")
        self.send(line + b"\r\n")
        return self.reply()

    def ehlo(self, name: str = "client.example") -> dict[str, str]:
        """EHLO; returns the extensions as {KEYWORD: params}."""
        r = self.cmd(f"EHLO {name}")
        assert_reply(r, 250, what="EHLO")
        return parse_ehlo(r)

    def starttls(self) -> None:
        assert_reply(self.cmd("STARTTLS"), 220, what="STARTTLS")
        assert not self.buf, f"server sent data after 220 to STARTTLS: {self.buf!r}"
        self.sock = client_tls_context().wrap_socket(self.sock)

    def auth_plain(self, user: str, password: str) -> Reply:
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        return self.cmd(f"AUTH PLAIN {token}")

    def auth_login(self, user: str, password: str) -> Reply:
        r = self.cmd("AUTH LOGIN")
        if r.code != 334:
            return r
        r = self.cmd(base64.b64encode(user.encode()).decode())
        if r.code != 334:
            return r
        return self.cmd(base64.b64encode(password.encode()).decode())

    def data(self, message: bytes) -> Reply:
        """DATA with dot-stuffing; returns the reply after the terminator."""
        r = self.cmd("DATA")
        assert_reply(r, 354, what="DATA")
        self.send(dot_stuff(message) + b".\r\n")
        return self.reply()

    def expect_closed(self, wait: float = 5.0) -> None:
        """Asserts the server closes the connection without sending anything more."""
        self.sock.settimeout(wait)
        try:
            self._fill()
        except Closed:
            return
        except (TimeoutError, socket.timeout):
            raise AssertionError(f"server did not close the connection within {wait}s")
        raise AssertionError(f"expected the connection to close, got more data: {self.buf!r}")


def parse_ehlo(r: Reply) -> dict[str, str]:
    exts = {}
    for line in r.lines[1:]:
        kw, _, params = line.partition(" ")
        exts[kw.upper()] = params
    return exts


def dot_stuff(message: bytes) -> bytes:
    """RFC 5321 §4.5.2 transparency; also ends the message with CRLF."""
    if not message.endswith(b"\r\n"):
        message += b"\r\n"
    lines = message.split(b"\r\n")
    return b"\r\n".join(b"." + l if l.startswith(b".") else l for l in lines)


QUEUED_RE = re.compile(r"^2\.0\.0 .*queued as (\S+)")


def queue_id(r: Reply) -> str:
    assert r.code == 250, f"expected 250 after DATA, got {r}"
    m = QUEUED_RE.match(r.lines[-1]) or QUEUED_RE.match(r.lines[0])
    assert m, f"250 reply does not say '2.0.0 ... queued as <id>': {r}"
    return m.group(1).strip("<>")


def send_raw(port: int, sender: str, rcpts: list[str], message: bytes, *, tls: bool = False,
             starttls: bool = False, login: tuple[str, str] | None = None,
             mail_params: str = "", helo: str = "client.example") -> Reply:
    """A whole transaction; asserts every step before DATA and returns the reply to DATA."""
    with SmtpConn(port, tls=tls) as c:
        c.ehlo(helo)
        if starttls:
            c.starttls()
            c.ehlo()
        if login:
            assert_reply(c.auth_plain(*login), 235, "2.7.0", what="AUTH PLAIN")
        assert_reply(c.cmd(f"MAIL FROM:<{sender}>{mail_params}"), 250, what=f"MAIL FROM:<{sender}>")
        for rcpt in rcpts:
            assert_reply(c.cmd(f"RCPT TO:<{rcpt}>"), 250, what=f"RCPT TO:<{rcpt}>")
        r = c.data(message)
        try:
            c.cmd("QUIT")
        except (Closed, OSError):
            pass
        return r


# ---- a DNS server that fails every query at once ----------------------------------------------

_failing_dns_addr: str | None = None


def failing_dns() -> str:
    """Address of a DNS server (a thread of this process, on loopback) that answers every
    query with SERVFAIL at once: "DNS is broken", a temporary failure for everything, without
    the resolver timeouts a dead port would cost every inbound check and delivery."""
    global _failing_dns_addr
    if _failing_dns_addr is None:
        import socket
        import threading

        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))

        def serve():
            while True:
                try:
                    query, peer = sock.recvfrom(4096)
                except OSError:
                    return
                if len(query) < 12:
                    continue
                # Same id and question; QR=1, RD copied, RA=1, RCODE=2 (SERVFAIL); no records
                # (the question's name is walked so that an EDNS OPT record is left out).
                end = 12
                while end < len(query) and query[end] != 0:
                    end += 1 + query[end]
                end += 5  # the root label, QTYPE, QCLASS
                flags = bytes([0x80 | (query[2] & 0x01), 0x82])
                answer = query[:2] + flags + b"\0\1" + b"\0" * 6 + query[12:end]
                try:
                    sock.sendto(answer, peer)
                except OSError:
                    pass

        threading.Thread(target=serve, name="failing-dns", daemon=True).start()
        _failing_dns_addr = f"127.0.0.1:{sock.getsockname()[1]}"
    return _failing_dns_addr
