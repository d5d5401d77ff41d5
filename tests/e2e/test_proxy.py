"""PROXY protocol on the MX port (SPEC §3 `haproxy_incoming`): the client address is taken
from the header for every check and log line; a connection without a valid header is
dropped; v1 and v2 both work."""

from __future__ import annotations

import ipaddress
import socket
import struct

from helpers import SmtpConn, TIMEOUT, assert_reply, make_message, queue_id

ALICE = "alice@example.test"
SENDER = "sender@remote.example"


class ProxiedConn(SmtpConn):
    """An SmtpConn whose connection starts with a PROXY header, as HAProxy sends it."""

    def __init__(self, port: int, header: bytes):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.sock.sendall(header)
        self.buf = b""
        self.greeting = self.reply()


def v1(src: str, dst: str = "127.0.0.1", sport: int = 40000, dport: int = 25) -> bytes:
    family = "TCP6" if ":" in src else "TCP4"
    return f"PROXY {family} {src} {dst} {sport} {dport}\r\n".encode()


def v2(src: str, dst: str = "127.0.0.1", sport: int = 40000, dport: int = 25) -> bytes:
    sig = b"\r\n\r\n\x00\r\nQUIT\n"
    addrs = ipaddress.ip_address(src).packed + ipaddress.ip_address(dst).packed
    body = addrs + struct.pack("!HH", sport, dport)
    return sig + bytes([0x21, 0x11]) + struct.pack("!H", len(body)) + body


def send_one(c: SmtpConn, subject: str) -> str:
    c.ehlo()
    assert_reply(c.cmd(f"MAIL FROM:<{SENDER}>"), 250)
    assert_reply(c.cmd(f"RCPT TO:<{ALICE}>"), 250)
    msg, _ = make_message(subject=subject)
    return queue_id(c.data(msg))


def test_client_address_comes_from_the_header_v1_and_v2(env):
    env.write_config(haproxy_incoming=True)
    env.start()
    for header, client in [(v1("203.0.113.7"), "203.0.113.7"),
                           (v2("198.51.100.9"), "198.51.100.9"),
                           (v1("2001:db8::5", "::1"), "2001:db8::5")]:
        with ProxiedConn(env.smtp_port, header) as c:
            assert c.greeting.code == 220, c.greeting
            qid = send_one(c, f"via {client}")
        line = env.wait_log(lambda log: next(
            (l for l in log.splitlines() if f"id={qid}" in l and "event=received" in l), None))
        assert line and f"client=[{client}]" in line, line
    msgs = env.wait_messages(3)
    assert any(b"[203.0.113.7]" in m for m in msgs), "Received header names the proxied client"


def test_connection_without_a_valid_header_is_dropped(env):
    env.write_config(haproxy_incoming=True)
    env.start()
    with socket.create_connection(("127.0.0.1", env.smtp_port), timeout=TIMEOUT) as s:
        s.sendall(b"EHLO direct.example\r\n")
        s.settimeout(5)
        assert s.recv(100) == b"", "a client without a PROXY header got an SMTP answer"
    # Submission ports are not behind the proxy.
    with SmtpConn(env.submission_port) as c:
        assert c.greeting.code == 220


def test_access_rules_see_the_proxied_address(env):
    env.write_config(haproxy_incoming=True)
    (env.dir / "conf" / "access").write_text("Connect:203.0.113.0/24 REJECT no thanks\n")
    env.start()
    with socket.create_connection(("127.0.0.1", env.smtp_port), timeout=TIMEOUT) as s:
        s.sendall(v1("203.0.113.50"))
        s.settimeout(5)
        greeting = s.recv(200)
    assert greeting.startswith(b"554 5.7.1 no thanks"), greeting
    with ProxiedConn(env.smtp_port, v1("192.0.2.1")) as c:
        assert c.greeting.code == 220
