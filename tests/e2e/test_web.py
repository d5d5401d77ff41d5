"""The web endpoints' bounds (SPEC §12, issue 20): `https_listen` with the self-signed
certificate, a stranger's oversized request refused without being read whole, a redirect on
`http_listen`, unknown hosts and paths 404. test_acme.py covers the contents with real
certificates."""

from __future__ import annotations

import socket
import ssl

import pytest

from helpers import HOSTNAME, free_ports


@pytest.fixture
def web(env):
    env.https_port, env.http_port = free_ports(2)
    env.write_config(https_listen=[f"127.0.0.1:{env.https_port}"],
                     http_listen=[f"127.0.0.1:{env.http_port}"])
    return env.start()


def exchange(port: int, request: bytes, tls_name: str | None) -> bytes:
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    if tls_name is not None:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        raw = ctx.wrap_socket(raw, server_hostname=tls_name)
    with raw:
        try:
            raw.sendall(request)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            # The server answered and closed before reading everything (an oversized
            # request): its answer is read below.
            pass
        data = b""
        try:
            while chunk := raw.recv(65536):
                data += chunk
        except (ConnectionResetError, ssl.SSLError):
            pass
    return data


def status(data: bytes) -> int:
    return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0


def test_web_endpoints_route_and_refuse_oversized_requests(web):
    host = "autoconfig.example.test"
    ok = exchange(web.https_port, f"GET /mail/config-v1.1.xml HTTP/1.1\r\nHost: {host}\r\n"
                                  "Connection: close\r\n\r\n".encode(), host)
    assert status(ok) == 200 and b"<clientConfig version=\"1.1\">" in ok, ok
    for request in (f"GET /mail/config-v1.1.xml HTTP/1.1\r\nHost: autoconfig.other.test\r\n"
                    "Connection: close\r\n\r\n",
                    f"GET /nothing HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"):
        assert status(exchange(web.https_port, request.encode(), host)) == 404
    # Headers beyond 16 KiB: refused (431) or closed, never read on.
    big = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n"
    assert status(exchange(web.https_port, big, host)) in (0, 431)
    # A body beyond 16 KiB: 413.
    body = b"<a>" + b"b" * 40_000 + b"</a>"
    post = (f"POST /autodiscover/autodiscover.xml HTTP/1.1\r\nHost: {HOSTNAME}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body
    assert status(exchange(web.https_port, post, HOSTNAME)) == 413
    # http_listen: challenges only; the rest goes to https.
    r = exchange(web.http_port, f"GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: mta-sts.example.test"
                                f"\r\nConnection: close\r\n\r\n".encode(), None)
    assert status(r) == 301 and b"https://mta-sts.example.test/.well-known/mta-sts.txt" in r, r
    r = exchange(web.http_port, b"GET /.well-known/acme-challenge/unknown HTTP/1.1\r\nHost: x\r\n"
                                b"Connection: close\r\n\r\n", None)
    assert status(r) == 404
    assert web.alive()
