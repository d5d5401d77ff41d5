"""Caps on concurrent SMTP connections (issue 5): `max_connections` overall and
`max_connections_per_address` per client address (default 50; `relay_networks` exempt), both
answered `421 4.7.0` and closed. Under a 1,000-connection flood from one address, a client from
another address still gets its mail through."""

from __future__ import annotations

import smtplib
import socket
import threading
import time

import pytest

from helpers import TIMEOUT, SmtpConn, assert_reply, make_message, wait_until
from test_proxy import ProxiedConn, v1

ALICE = "alice@example.test"
SENDER = "sender@remote.example"
PER_ADDRESS = 50  # the default of max_connections_per_address
FLOOD = 1000
LEGIT_DEADLINE = 10.0  # seconds for the legitimate client's whole transaction


class ConnFrom(SmtpConn):
    """An SmtpConn from a chosen loopback source address; the greeting (or 421) is read."""

    def __init__(self, port: int, source: str, timeout: float = TIMEOUT):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                             source_address=(source, 0))
        self.buf = b""
        try:
            self.greeting = self.reply()
        except BaseException:
            self.sock.close()
            raise


def assert_refused(c: SmtpConn, what: str) -> None:
    assert_reply(c.greeting, 421, "4.7.0", what)
    c.expect_closed()


def admitted(port: int, source: str, deadline: float = 5.0) -> ConnFrom:
    """A connection that got its 220, retrying while the server still counts closed ones."""
    def attempt():
        c = ConnFrom(port, source)
        if c.greeting.code == 220:
            return c
        c.close()
        return None
    c = wait_until(attempt, deadline, interval=0.1)
    assert c, f"no 220 from {source} within {deadline}s"
    return c


def close_all(conns) -> None:
    for c in conns:
        c.close()


def first_line(sock: socket.socket) -> bytes:
    """What the server said first on a flood socket (b'' if it closed without a word)."""
    buf = b""
    try:
        while b"\n" not in buf:
            chunk = sock.recv(512)
            if not chunk:
                break
            buf += chunk
    except ConnectionResetError:
        pass
    return buf.split(b"\n", 1)[0]


def trickle(socks: list[socket.socket], stop: threading.Event) -> None:
    """Slow-loris: one byte of `NOOP\\r\\n` per socket every 0.2 s."""
    line = b"NOOP\r\n"
    i = 0
    while not stop.wait(0.2):
        for s in socks:
            try:
                s.send(line[i % len(line):i % len(line) + 1])
            except OSError:
                pass
        i += 1


def test_flood_from_one_address_leaves_others_served(env):
    env.start()
    flood: list[socket.socket] = []
    stop = threading.Event()
    trickler = None
    try:
        for _ in range(FLOOD):
            flood.append(socket.create_connection(("127.0.0.1", env.smtp_port), timeout=TIMEOUT,
                                                  source_address=("127.0.0.1", 0)))
        first = [first_line(s) for s in flood]
        held = [s for s, line in zip(flood, first) if line.startswith(b"220 ")]
        refused = [line for line in first if line.startswith(b"421 4.7.0 ")]
        # Tambo.start()'s own probes from 127.0.0.1 may not all be released yet.
        assert PER_ADDRESS - 5 <= len(held) <= PER_ADDRESS, f"{len(held)} admitted"
        assert len(held) + len(refused) == FLOOD, set(first) - {b""}
        trickler = threading.Thread(target=trickle, args=(held[:10], stop), daemon=True)
        trickler.start()

        msg, msgid = make_message(subject="through the flood")
        started = time.monotonic()
        with smtplib.SMTP("127.0.0.1", env.smtp_port, timeout=LEGIT_DEADLINE,
                          source_address=("127.0.0.2", 0)) as client:
            refused_rcpts = client.sendmail(SENDER, [ALICE], msg)
        took = time.monotonic() - started
        assert refused_rcpts == {}
        assert took < LEGIT_DEADLINE, f"legitimate transaction took {took:.1f}s"
        got = env.wait_messages(1)
        assert msgid.encode() in got[0]
        assert env.alive()
        assert env.wait_log(lambda l: "refusing connection from 127.0.0.1" in l)
    finally:
        stop.set()
        if trickler:
            trickler.join(5)
        close_all(flood)


def test_per_address_cap_is_421_from_the_51st_on_every_port(env):
    env.start()
    held: list[SmtpConn] = []
    try:
        for i in range(PER_ADDRESS):
            c = ConnFrom(env.smtp_port, "127.0.0.5")
            held.append(c)
            assert_reply(c.greeting, 220, what=f"connection {i + 1} of 127.0.0.5")
        with ConnFrom(env.smtp_port, "127.0.0.5") as c:
            assert_refused(c, f"connection {PER_ADDRESS + 1} on the MX port")
        # One count for all listeners.
        with ConnFrom(env.submission_port, "127.0.0.5") as c:
            assert_refused(c, "the same address on the submission port")
        # Implicit TLS: closed without a plaintext reply the TLS client could not read.
        raw = socket.create_connection(("127.0.0.1", env.submission_tls_port), timeout=TIMEOUT,
                                       source_address=("127.0.0.5", 0))
        with raw:
            assert first_line(raw) == b""
        # Another address is served meanwhile, and a freed slot can be taken again.
        with ConnFrom(env.smtp_port, "127.0.0.6") as c:
            assert_reply(c.greeting, 220, what="another address")
            c.ehlo()
        held.pop().close()
        admitted(env.smtp_port, "127.0.0.5").close()
    finally:
        close_all(held)


def test_relay_networks_are_exempt_from_the_per_address_cap(env):
    env.write_config(max_connections_per_address=2, relay_networks=["127.0.0.7/32"])
    env.start()
    held: list[SmtpConn] = []
    try:
        for i in range(5):
            held.append(ConnFrom(env.smtp_port, "127.0.0.7"))
            assert_reply(held[-1].greeting, 220, what=f"relay client, connection {i + 1}")
        for i in range(2):
            held.append(ConnFrom(env.smtp_port, "127.0.0.8"))
            assert_reply(held[-1].greeting, 220, what=f"outside client, connection {i + 1}")
        with ConnFrom(env.smtp_port, "127.0.0.8") as c:
            assert_refused(c, "third connection of an outside client")
    finally:
        close_all(held)


def test_overall_cap(env):
    env.write_config(max_connections=5)
    env.start()
    held: list[SmtpConn] = []
    try:
        for i in range(5):
            held.append(admitted(env.smtp_port, f"127.0.1.{i + 1}"))
        with ConnFrom(env.submission_port, "127.0.1.99") as c:
            assert_refused(c, "a sixth connection")
        held.pop(0).close()
        c = admitted(env.submission_port, "127.0.1.99")
        held.append(c)
        c.ehlo()
    finally:
        close_all(held)


def test_per_address_cap_counts_the_proxied_client(env):
    env.write_config(haproxy_incoming=True, max_connections_per_address=2)
    env.start()
    held: list[SmtpConn] = []
    try:
        for _ in range(2):
            held.append(ProxiedConn(env.smtp_port, v1("192.0.2.1")))
            assert_reply(held[-1].greeting, 220, what="proxied 192.0.2.1")
        c = ProxiedConn(env.smtp_port, v1("192.0.2.1"))
        held.append(c)
        assert_refused(c, "third connection of 192.0.2.1 through the proxy")
        # The proxy's own address (127.0.0.1) is not what is counted.
        held.append(ProxiedConn(env.smtp_port, v1("192.0.2.2")))
        assert_reply(held[-1].greeting, 220, what="proxied 192.0.2.2")
    finally:
        close_all(held)
