"""A minimal IMAPS client that times commands: raw socket, Python's ssl, no parsing beyond
what finding the end of a response needs (lines, and literals skipped by their length).

A command's time runs from just before its bytes are written to the moment the tagged
response line has arrived; the untagged data in between is kept as raw bytes, to be looked at
after the clock has stopped.
"""

import calendar
import datetime
import re
import socket
import ssl
import time

LITERAL = re.compile(rb"\{(\d+)\+?\}$")


def client_context():
    """TLS as a mail client on loopback: no certificate check (the certificate is
    self-signed), TLS 1.2 or 1.3 as the server prefers, the default ciphers."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


CONTEXT = client_context()


class ImapError(Exception):
    pass


class Imap:
    """One IMAPS session. `source` binds the client end to another loopback address, so that
    many sessions of one user do not meet the servers' per-address caps."""

    def __init__(self, port, source=None, timeout=120):
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                       source_address=(source, 0) if source else None)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            self.sock = CONTEXT.wrap_socket(raw, server_hostname="mx.bench.test")
        except Exception:
            raw.close()
            raise
        self.buf = bytearray()
        self.next_tag = 1
        self.greeting = self._line()
        if not self.greeting.startswith(b"* OK"):
            raise ImapError(f"greeting: {self.greeting[:200]!r}")

    def tls(self):
        return f"{self.sock.version()} {self.sock.cipher()[0]}"

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _fill(self):
        chunk = self.sock.recv(1 << 18)
        if not chunk:
            raise ImapError("connection closed by the server")
        self.buf += chunk

    def _line(self):
        """One line without its CRLF (used for the greeting only)."""
        while True:
            end = self.buf.find(b"\r\n")
            if end >= 0:
                line = bytes(self.buf[:end])
                del self.buf[:end + 2]
                return line
            self._fill()

    def command(self, text, ok=True):
        """Sends `<tag> <text>`; returns (seconds until the tagged line, the tagged line, the
        untagged bytes before it). With `ok`, anything but a tagged OK raises."""
        tag = b"A%04d" % self.next_tag
        self.next_tag += 1
        wire = tag + b" " + text.encode() + b"\r\n"
        start = time.perf_counter()
        self.sock.sendall(wire)
        done, tagged, data = self._response(tag + b" ")
        elapsed = done - start
        if ok and not tagged[len(tag) + 1:].startswith(b"OK"):
            raise ImapError(f"{text[:60]}: {tagged[:300]!r}")
        return elapsed, tagged, data

    def _response(self, prefix):
        """Reads up to and including the line that starts with `prefix` (outside literals);
        returns the moment that line was complete, the line, and the bytes before it."""
        pos = 0  # start of the line being read
        segment = 0  # start of its part after the last literal
        scan = 0  # where the search for the next CRLF goes on
        while True:
            end = self.buf.find(b"\r\n", scan)
            if end < 0:
                scan = max(segment, len(self.buf) - 1)
                self._fill()
                continue
            m = LITERAL.search(self.buf, max(segment, end - 12), end)
            if m:
                # The line goes on after `{n}` CRLF and n octets (RFC 3501 §4.3).
                segment = scan = end + 2 + int(m.group(1))
                while len(self.buf) < segment:
                    self._fill()
                continue
            if self.buf.startswith(prefix, pos):
                done = time.perf_counter()
                tagged = bytes(self.buf[pos:end])
                data = bytes(self.buf[:pos])
                del self.buf[:end + 2]
                return done, tagged, data
            pos = segment = scan = end + 2

    def login(self, user, password):
        return self.command(f"LOGIN {quote(user)} {quote(password)}")

    def logout(self):
        try:
            self.command("LOGOUT", ok=False)
        except (OSError, ImapError):
            pass
        self.close()


def quote(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


FETCH_START = re.compile(rb"\* \d+ FETCH \(")
FETCH_UID = re.compile(rb"[( ]UID (\d+)")
INTERNALDATE = re.compile(rb'INTERNALDATE "([^"]+)"')
SEARCH = re.compile(rb"^\* SEARCH(.*)$", re.M)


def uids_by_internaldate(data):
    """From the untagged data of a `FETCH (UID ... INTERNALDATE ...)`: {epoch seconds: UID}.
    Each FETCH response runs to the next one (its ENVELOPE may hold literals, CRLF and all)."""
    starts = [m.start() for m in FETCH_START.finditer(data)] + [len(data)]
    out = {}
    for a, b in zip(starts, starts[1:]):
        u, d = FETCH_UID.search(data, a, b), INTERNALDATE.search(data, a, b)
        if u and d:
            out[epoch(d.group(1).decode())] = int(u.group(1))
    return out


def epoch(date_time):
    """An IMAP date-time (`05-Jan-2026 08:05:35 +0000`) as seconds since the epoch."""
    t = datetime.datetime.strptime(date_time.strip(), "%d-%b-%Y %H:%M:%S %z")
    return calendar.timegm(t.utctimetuple())


def fetch_count(data):
    return data.count(b" FETCH (")


def search_hits(data):
    m = SEARCH.search(data)
    return len(m.group(1).split()) if m else 0


BODY_LITERAL = re.compile(rb"BODY\[\] \{(\d+)\}\r\n")


def body_octets(data):
    """(messages, octets) of the `BODY[] {n}` literals in a FETCH response."""
    count = octets = pos = 0
    while m := BODY_LITERAL.search(data, pos):
        n = int(m.group(1))
        count, octets, pos = count + 1, octets + n, m.end() + n
    return count, octets
