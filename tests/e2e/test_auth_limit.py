"""Failed AUTH attempts are slowed down and then limited per client address (SPEC §11):
after 10 failures even the right password is refused (454 4.7.0) from that address, while
another address logs in normally."""

from __future__ import annotations

import socket
import ssl

from helpers import PASSWORD, SmtpConn, TIMEOUT, client_tls_context

ALICE = "alice@example.test"


class TlsConnFrom(SmtpConn):
    """SmtpConn on the implicit-TLS port from a chosen loopback source address."""

    def __init__(self, port: int, source: str):
        raw = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT,
                                       source_address=(source, 0))
        self.sock = client_tls_context().wrap_socket(raw)
        self.buf = b""
        self.greeting = self.reply()


def test_brute_force_is_limited_per_address(env):
    env.start()
    failures = 0
    while failures < 10:
        with TlsConnFrom(env.submission_tls_port, "127.0.0.1") as c:
            c.ehlo()
            for _ in range(2):  # three errors would end the connection
                r = c.auth_plain(ALICE, "wrong password")
                assert r.code == 535, r
                failures += 1
    with TlsConnFrom(env.submission_tls_port, "127.0.0.1") as c:
        c.ehlo()
        r = c.auth_plain(ALICE, PASSWORD)
        assert (r.code, r.enhanced) == (454, "4.7.0"), f"right password accepted while blocked: {r}"
    # Another client address is not affected.
    with TlsConnFrom(env.submission_tls_port, "127.0.0.2") as c:
        c.ehlo()
        r = c.auth_plain(ALICE, PASSWORD)
        assert r.code == 235, r
