"""Real peers for the delivery tests, all on loopback: a DNS server (dnsmasq), remote MTAs
(aiosmtpd sinks, scriptable), postsrsd and Dovecot's LMTP server.

One `Network` (dnsmasq + every sink) is shared by the whole session: the zone below is fixed,
and each test resets the sinks' scripts and records (`net` fixture). Messages carry unique
Message-IDs, so a test only ever looks at its own transactions.

The zone (every name under .test; `--local=/test/` makes unknown names NXDOMAIN):

    remote1.test   MX 10 mx.remote1.test -> 127.0.0.2 (sink)
    remote2.test   MX 10 down.remote2.test -> 127.0.0.9 (nothing listens)
                   MX 20 mx.remote2.test   -> 127.0.0.3 (sink)
    nomx.test      no MX, A 127.0.0.4 (sink)
    sender.test    MX 10 mx.sender.test -> 127.0.0.5 (sink: outside senders, DSNs come here)
    viahost        127.0.0.6 (sink; only reached by `via`), 127.0.0.7 (nothing listens)
    tls.test       MX 10 mx.tls.test -> 127.0.0.8 (sink)
    fault.test     MX 10 mx.fault.test -> 127.0.0.10 (sink)
    pref.test      MX 10 mx1.pref.test -> 127.0.0.11, MX 20 mx2.pref.test -> 127.0.0.12 (sinks)
    loop.test      MX 10 mx.loop.test -> 127.0.0.1 (tambo itself, when outbound port = its port)
    txtonly.test   only a TXT record: NODATA for MX and A
    nowhere.test   NXDOMAIN
    DKIM keys:     sel1/sel2._domainkey.example.test, s1._domainkey.sender.test,
                   s1._domainkey.strict.test (the sender key too)
    SPF / DMARC:   INBOUND_AUTH_TXT below (spfok.test passes 127.0.0.1, spffail.test and
                   badhelo.test fail it, _dmarc.strict.test p=reject)
    Sender profiles: SENDER_PROFILES_TXT below (p1-*.test .. p10-*.test, keys s1 RSA and e1
                   Ed25519), and example.test's own SPF (127.0.0.1) and DMARC (p=reject)

Every process started here is stopped in a finalizer; every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import base64
import email
import email.policy
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from helpers import free_ports, wait_until

SMTP_TIMEOUT_SECS = 3  # TAMBO_SMTP_TIMEOUT_SECS for every tambo that talks to sinks

SINK_HOSTS = {
    "remote1": "127.0.0.2",
    "remote2": "127.0.0.3",
    "nomx": "127.0.0.4",
    "sender": "127.0.0.5",
    "via": "127.0.0.6",
    "tls": "127.0.0.8",
    "fault": "127.0.0.10",
    "pref1": "127.0.0.11",
    "pref2": "127.0.0.12",
}
DOWN_HOSTS = ["127.0.0.7", "127.0.0.9"]  # nothing listens there

# SPF and DMARC of the inbound-authentication tests (test_inbound_auth.py); strict.test signs
# with the sender key (selector s1) and asks DMARC p=reject.
INBOUND_AUTH_TXT = [
    ("spfok.test", "v=spf1 ip4:127.0.0.1 -all"),
    ("spffail.test", "v=spf1 ip4:192.0.2.1 -all"),
    ("badhelo.test", "v=spf1 -all"),
    ("_dmarc.strict.test", "v=DMARC1; p=reject"),
    ("strict.test", "v=spf1 ip4:192.0.2.1 -all"),
    # Senders of the bounce tests (test_remote.py): SPF vouches for them, so a forwarded
    # copy that fails is bounced to them (SPEC §8: no DSN to an unauthenticated sender).
    ("sender.test", "v=spf1 ip4:127.0.0.0/8 -all"),
    ("fault.test", "v=spf1 ip4:127.0.0.0/8 -all"),
    # DMARC-safe forwarding (test_dmarc_forwarding.py): SPF passes for 127.0.0.1, nothing
    # signed, under each DMARC policy.
    ("spfreject.test", "v=spf1 ip4:127.0.0.1 -all"),
    ("_dmarc.spfreject.test", "v=DMARC1; p=reject"),
    ("spfquar.test", "v=spf1 ip4:127.0.0.1 -all"),
    ("_dmarc.spfquar.test", "v=DMARC1; p=quarantine"),
    ("spfnone.test", "v=spf1 ip4:127.0.0.1 -all"),
    ("_dmarc.spfnone.test", "v=DMARC1; p=none"),
    # SPF and aligned DKIM (selector s1, the sender key), p=reject: no rewrite.
    ("dkimreject.test", "v=spf1 ip4:127.0.0.1 -all"),
    ("_dmarc.dkimreject.test", "v=DMARC1; p=reject"),
]
# Ten sender profiles (test_sender_profiles.py), one domain pN-*.test each, signing (if at
# all) with the sender keys: RSA selector s1, Ed25519 selector e1.
SENDER_PROFILES_TXT = [
    ("p1-spfonly.test", "v=spf1 ip4:127.0.0.1 -all"),
    ("_dmarc.p1-spfonly.test", "v=DMARC1; p=reject"),
    ("p2-rsa.test", "v=spf1 include:_spf.p2-rsa.test -all"),
    ("_spf.p2-rsa.test", "v=spf1 ip4:192.0.2.0/24 ip4:127.0.0.0/8 -all"),
    ("_dmarc.p2-rsa.test", "v=DMARC1; p=reject"),
    ("p3-dual.test", "v=spf1 ip4:127.0.0.1 -all"),
    ("_dmarc.p3-dual.test", "v=DMARC1; p=reject"),
    # From: a subdomain (mail.p4-dkimonly.test) without a record of its own; the envelope is
    # an unaligned ESP's.
    ("_dmarc.p4-dkimonly.test", "v=DMARC1; p=quarantine"),
    ("p4-esp.test", "v=spf1 ip4:127.0.0.1 ~all"),
    ("p5-simple.test", "v=spf1 redirect=_spf.p5-simple.test"),
    ("_spf.p5-simple.test", "v=spf1 ip4:127.0.0.1 -all"),
    ("_dmarc.p5-simple.test", "v=DMARC1; p=reject"),
    ("p6-lcount.test", "v=spf1 ip4:127.0.0.1 -all"),
    ("_dmarc.p6-lcount.test", "v=DMARC1; p=reject"),
    ("mta.p7-dsn.test", "v=spf1 ip4:127.0.0.1 -all"),  # the HELO name: SPF of <>
    ("p7-dsn.test", "v=spf1 ip4:127.0.0.1 -all"),
    ("_dmarc.p7-dsn.test", "v=DMARC1; p=reject"),
    ("p8-pnone.test", "v=spf1 ip4:127.0.0.1 -all"),
    ("_dmarc.p8-pnone.test", "v=DMARC1; p=none"),
    # p9-bare.test: no record at all.
    ("p10-spffail.test", "v=spf1 ip4:192.0.2.1 -all"),
    ("_dmarc.p10-spffail.test", "v=DMARC1; p=reject"),
    # The forwarding domain's own, so that its SRS envelope senders and its rewritten From:
    # pass SPF and DMARC at the receiver.
    ("example.test", "v=spf1 ip4:127.0.0.1 -all"),
    ("_dmarc.example.test", "v=DMARC1; p=reject"),
]
SENDER_PROFILES_RSA = ["p2-rsa.test", "p3-dual.test", "p4-dkimonly.test", "p5-simple.test",
                       "p6-lcount.test"]  # publish the sender key (s1)
SENDER_PROFILES_ED25519 = ["p3-dual.test"]  # publish the sender Ed25519 key (e1)
# A DNS blocklist (test_spam_defence.py): 127.0.0.2 listed with a reason, as in real zones;
# 127.0.0.3 answered with Spamhaus's "public resolver" error code, which must not block.
DNSBL_ZONE = "bl.test"
DNSBL_HOSTS = [(f"2.0.0.127.{DNSBL_ZONE}", "127.0.0.2"),
               (f"3.0.0.127.{DNSBL_ZONE}", "127.255.255.254")]
DNSBL_TXT = [(f"2.0.0.127.{DNSBL_ZONE}", "Listed for tests see https://bl.test/q")]
DKIM_SELECTORS = {"sel1": "rsa", "sel2": "ed25519"}  # of example.test
SENDER_DKIM_SELECTOR = "s1"  # of sender.test (RSA)
SENDER_ED25519_SELECTOR = "e1"  # of the sender profiles (Ed25519)


# --------------------------------------------------------------------------------------------
# Keys and certificates
# --------------------------------------------------------------------------------------------


def openssl(*args: str, input: bytes | None = None) -> bytes:
    r = subprocess.run(["openssl", *args], input=input, capture_output=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)}: {r.stderr.decode(errors='replace')}")
    return r.stdout


@dataclass
class DkimKey:
    selector: str
    algorithm: str  # "rsa" or "ed25519"
    private_pem: bytes  # PKCS#8
    public_b64: str  # the p= value

    @property
    def txt(self) -> str:
        if self.algorithm == "rsa":
            return f"v=DKIM1; k=rsa; p={self.public_b64}"
        return f"v=DKIM1; k=ed25519; p={self.public_b64}"


def make_dkim_key(selector: str, algorithm: str) -> DkimKey:
    if algorithm == "rsa":
        pem = openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048")
    else:
        pem = openssl("genpkey", "-algorithm", "ED25519")
    der = openssl("pkey", "-pubout", "-outform", "DER", input=pem)
    # RFC 8463: an Ed25519 p= is the raw 32-byte key, the tail of the DER SPKI.
    raw = der if algorithm == "rsa" else der[-32:]
    return DkimKey(selector, algorithm, pem, base64.b64encode(raw).decode())


def self_signed_cert(dir: Path, cn: str = "mx.sink.test") -> tuple[Path, Path]:
    cert, key = dir / "sink-cert.pem", dir / "sink-key.pem"
    # A self-signed leaf (not a CA): it fails verification only for want of a trusted issuer.
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}",
            "-addext", "basicConstraints=critical,CA:FALSE",
            "-addext", f"subjectAltName=DNS:{cn}",
            "-days", "2", "-keyout", str(key), "-out", str(cert))
    return cert, key


def txt_strings(value: str) -> list[str]:
    """A long TXT value as strings of at most 255 bytes (RFC 1035 §3.3.14)."""
    return [value[i:i + 255] for i in range(0, len(value), 255)] or [""]


# --------------------------------------------------------------------------------------------
# DNS: dnsmasq
# --------------------------------------------------------------------------------------------


class DnsServer:
    def __init__(self, workdir: Path, mx: list[tuple[str, str, int]],
                 hosts: list[tuple[str, str]], txt: list[tuple[str, str]]):
        self.log_path = workdir / "dnsmasq.log"
        self.args = [f"--mx-host={d},{h},{p}" for d, h, p in mx]
        self.args += [f"--host-record={n},{ip}" for n, ip in hosts]
        for name, value in txt:
            # On the command line (no shell) dnsmasq takes the strings unquoted, comma-separated.
            assert "," not in value, value
            self.args.append(f"--txt-record={name},{','.join(txt_strings(value))}")
        self.proc: subprocess.Popen | None = None
        self.port = 0

    def start(self) -> "DnsServer":
        for _attempt in range(5):
            [self.port] = free_ports(1)
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    ["/usr/sbin/dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null",
                     "--no-resolv", "--no-hosts", "--bind-interfaces",
                     "--listen-address=127.0.0.1", f"--port={self.port}", "--local=/test/",
                     "--log-queries", "--log-facility=-",
                     *self.args],
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            if wait_until(lambda: self.answers() or self.proc.poll() is not None, 5.0) \
                    and self.proc.poll() is None:
                return self
            self.stop()
        raise RuntimeError(f"dnsmasq did not start; log:\n{self.log()}")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def answers(self) -> bool:
        try:
            return bool(self.query_txt("sel1._domainkey.example.test") is not None)
        except Exception:
            return False

    def resolver(self):
        import dns.resolver
        r = dns.resolver.Resolver(configure=False)
        r.nameservers = ["127.0.0.1"]
        r.port = self.port
        r.lifetime = 3.0
        return r

    def query_txt(self, name: str) -> bytes | None:
        import dns.resolver
        try:
            answer = self.resolver().resolve(name, "TXT")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None
        return b"".join(b"".join(rr.strings) for rr in answer)

    def dkim_dnsfunc(self):
        """The `dnsfunc` dkimpy wants: name (bytes or str) -> TXT bytes or None."""
        def dnsfunc(name, timeout=5):
            if isinstance(name, bytes):
                name = name.decode()
            return self.query_txt(name.rstrip("."))
        return dnsfunc

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


# --------------------------------------------------------------------------------------------
# Remote MTAs: scriptable aiosmtpd sinks
# --------------------------------------------------------------------------------------------


@dataclass
class Transaction:
    """One message a sink accepted (250 after DATA)."""
    sink: str  # the sink's address
    mail_from: str
    rcpt_tos: list[str]
    data: bytes  # as received, dots unstuffed, CRLF
    tls: bool
    peer: str
    mail_options: list[str] = field(default_factory=list)  # e.g. SMTPUTF8, BODY=8BITMIME
    helo: str = ""  # the client's EHLO/HELO name

    def has(self, marker: str | bytes) -> bool:
        m = marker.encode() if isinstance(marker, str) else marker
        return m in self.data

    def message(self) -> email.message.Message:
        return email.message_from_bytes(self.data, policy=email.policy.compat32)


@dataclass
class Script:
    """How a sink misbehaves; reset before every test."""
    mail_reply: str | None = None  # reply to MAIL FROM instead of 250
    rcpt_replies: dict[str, str] = field(default_factory=dict)  # lower-case address -> reply
    data_reply: str | None = None  # reply after DATA instead of 250
    drop_mid_data: int = 0  # this many times: 354, read a line, close the connection
    garbage: bool = False  # answer EHLO with a line that is not SMTP
    stall: bool = False  # never answer MAIL FROM
    offer_tls: bool = True  # STARTTLS in EHLO (self-signed certificate)


class Sink:
    def __init__(self, name: str, host: str, port: int, tls_context: ssl.SSLContext):
        self.name, self.host, self.port = name, host, port
        self.tls_context = tls_context
        self.lock = threading.Lock()
        self.script = Script()
        self.transactions: list[Transaction] = []
        self.events: list[str] = []  # what happened, for failure messages
        self.connections = 0
        self.controller = None

    # ---- test side ------------------------------------------------------------------------

    def reset(self) -> None:
        with self.lock:
            self.script = Script()
            self.transactions = []
            self.events = []
            self.connections = 0

    def note(self, what: str) -> None:
        with self.lock:
            self.events.append(f"{time.strftime('%H:%M:%S')} {what}")

    def received(self, marker: str | None = None) -> list[Transaction]:
        with self.lock:
            return [t for t in self.transactions if marker is None or t.has(marker)]

    def wait(self, n: int, marker: str | None = None, deadline: float = 10.0,
             tambo=None) -> list[Transaction]:
        """At least n transactions (with marker); fails with the sink's story and tambo's log."""
        got = wait_until(lambda: len(self.received(marker)) >= n and self.received(marker),
                         deadline)
        if not got:
            pytest.fail(f"sink {self.name} ({self.host}): expected {n} transaction(s) "
                        f"with {marker!r} within {deadline}s, have "
                        f"{len(self.received(marker))}\n{self.story()}"
                        + (f"\ntambo log:\n{tambo.log()}" if tambo else ""), pytrace=False)
        return got

    def story(self) -> str:
        with self.lock:
            lines = list(self.events)
            txs = [f"  from=<{t.mail_from}> to={t.rcpt_tos} tls={t.tls} {len(t.data)} bytes"
                   for t in self.transactions]
        return "sink events:\n  " + "\n  ".join(lines or ["(none)"]) + \
            "\nsink transactions:\n" + "\n".join(txs or ["  (none)"])

    # ---- process side ---------------------------------------------------------------------

    def start(self) -> None:
        from aiosmtpd.controller import Controller

        sink = self

        class SinkController(Controller):
            def factory(self):
                return make_smtp(sink, self.handler)

        self.controller = SinkController(Handler(self), hostname=self.host, port=self.port,
                                         ready_timeout=10.0)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            try:
                self.controller.stop()
            except Exception:  # already stopped, or a stalled task: nothing to keep
                pass
            self.controller = None


class Handler:
    def __init__(self, sink: Sink):
        self.sink = sink

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        reply = self.sink.script.mail_reply
        self.sink.note(f"MAIL <{address}> {' '.join(mail_options)} -> {reply or '250'}")
        if reply:
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = self.sink.script.rcpt_replies.get(address.lower())
        self.sink.note(f"RCPT {address} -> {reply or '250'}")
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        data = envelope.original_content or envelope.content
        if isinstance(data, str):
            data = data.encode("utf-8", errors="surrogateescape")
        reply = self.sink.script.data_reply
        self.sink.note(f"DATA from=<{envelope.mail_from}> to={envelope.rcpt_tos} "
                       f"{len(data)} bytes -> {reply or '250'}")
        if reply:
            return reply
        # aiosmtpd keeps the null reverse-path as "<>"; the tests write it as "".
        mail_from = "" if envelope.mail_from in ("<>", None) else envelope.mail_from
        t = Transaction(self.sink.host, mail_from, list(envelope.rcpt_tos), data,
                        session.ssl is not None, str(session.peer),
                        list(envelope.mail_options), session.host_name or "")
        with self.sink.lock:
            self.sink.transactions.append(t)
        return "250 2.0.0 OK: accepted by sink"


def make_smtp(sink: Sink, handler: Handler):
    from aiosmtpd.smtp import SMTP

    class ScriptedSMTP(SMTP):
        async def smtp_EHLO(self, hostname):
            if sink.script.garbage:
                sink.note("EHLO answered with garbage")
                await self.push("Hello there! I am not an SMTP server, have a nice day")
                return
            return await super().smtp_EHLO(hostname)

        async def smtp_STARTTLS(self, arg):
            sink.note("STARTTLS")
            return await super().smtp_STARTTLS(arg)

        async def smtp_MAIL(self, arg):
            if sink.script.stall:
                sink.note(f"MAIL {arg}: stalling")
                end = time.monotonic() + 60
                while time.monotonic() < end and self.transport is not None \
                        and not self.transport.is_closing():
                    await asyncio.sleep(0.1)
                sink.note("stall over (client gone or 60 s)")
                return
            return await super().smtp_MAIL(arg)

        async def smtp_DATA(self, arg):
            if sink.script.drop_mid_data > 0 and self.envelope.rcpt_tos:
                with sink.lock:
                    sink.script.drop_mid_data -= 1
                await self.push("354 End data with <CR><LF>.<CR><LF>")
                try:
                    await asyncio.wait_for(self._reader.readuntil(b"\r\n"), 5)
                except Exception:
                    pass
                sink.note("dropped the connection mid-DATA")
                self.transport.close()
                return
            return await super().smtp_DATA(arg)

    with sink.lock:
        sink.connections += 1
        offer_tls = sink.script.offer_tls
    return ScriptedSMTP(handler, hostname=f"mx-{sink.name}.sink.test", decode_data=False,
                        enable_SMTPUTF8=True,
                        tls_context=sink.tls_context if offer_tls else None, timeout=60)


def sink_tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


# --------------------------------------------------------------------------------------------
# The shared network
# --------------------------------------------------------------------------------------------


class Network:
    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.keys = {sel: make_dkim_key(sel, alg) for sel, alg in DKIM_SELECTORS.items()}
        self.sender_key = make_dkim_key(SENDER_DKIM_SELECTOR, "rsa")
        self.sender_ed25519_key = make_dkim_key(SENDER_ED25519_SELECTOR, "ed25519")
        cert, key = self_signed_cert(workdir)
        self.tls_context = sink_tls_context(cert, key)
        self.sinks: dict[str, Sink] = {}
        self.port = 0
        mx = [
            ("remote1.test", "mx.remote1.test", 10),
            ("remote2.test", "down.remote2.test", 10),
            ("remote2.test", "mx.remote2.test", 20),
            ("sender.test", "mx.sender.test", 10),
            ("tls.test", "mx.tls.test", 10),
            ("fault.test", "mx.fault.test", 10),
            ("loop.test", "mx.loop.test", 10),
            ("pref.test", "mx2.pref.test", 20),
            ("pref.test", "mx1.pref.test", 10),
        ]
        hosts = [
            ("mx.remote1.test", SINK_HOSTS["remote1"]),
            ("down.remote2.test", "127.0.0.9"),
            ("mx.remote2.test", SINK_HOSTS["remote2"]),
            ("nomx.test", SINK_HOSTS["nomx"]),
            ("mx.sender.test", SINK_HOSTS["sender"]),
            ("mx.tls.test", SINK_HOSTS["tls"]),
            ("mx.fault.test", SINK_HOSTS["fault"]),
            ("mx.loop.test", "127.0.0.1"),
            ("mx1.pref.test", SINK_HOSTS["pref1"]),
            ("mx2.pref.test", SINK_HOSTS["pref2"]),
        ]
        hosts += DNSBL_HOSTS
        txt = [("txtonly.test", "v=spf1 -all")]
        txt += DNSBL_TXT
        txt += [(f"{k.selector}._domainkey.example.test", k.txt) for k in self.keys.values()]
        txt.append((f"{SENDER_DKIM_SELECTOR}._domainkey.sender.test", self.sender_key.txt))
        txt += INBOUND_AUTH_TXT
        txt.append((f"{SENDER_DKIM_SELECTOR}._domainkey.strict.test", self.sender_key.txt))
        txt.append((f"{SENDER_DKIM_SELECTOR}._domainkey.dkimreject.test", self.sender_key.txt))
        txt += SENDER_PROFILES_TXT
        txt += [(f"{SENDER_DKIM_SELECTOR}._domainkey.{d}", self.sender_key.txt)
                for d in SENDER_PROFILES_RSA]
        txt += [(f"{SENDER_ED25519_SELECTOR}._domainkey.{d}", self.sender_ed25519_key.txt)
                for d in SENDER_PROFILES_ED25519]
        self.dns = DnsServer(workdir, mx, hosts, txt)

    def start(self) -> "Network":
        self.dns.start()
        self._start_sinks()
        return self

    def _start_sinks(self) -> None:
        last = None
        for _attempt in range(5):
            [self.port] = free_ports(1)
            try:
                for name, host in SINK_HOSTS.items():
                    sink = Sink(name, host, self.port, self.tls_context)
                    sink.start()
                    self.sinks[name] = sink
                return
            except Exception as e:  # the port was taken on one of the addresses: next one
                last = e
                self.stop_sinks()
        raise RuntimeError(f"could not start the sinks: {last!r}")

    def sink(self, name: str) -> Sink:
        return self.sinks[name]

    def reset(self) -> None:
        for s in self.sinks.values():
            s.reset()

    def stories(self) -> str:
        return "\n".join(f"[{n}] {s.story()}" for n, s in self.sinks.items())

    def stop_sinks(self) -> None:
        for s in self.sinks.values():
            s.stop()
        self.sinks = {}

    def stop(self) -> None:
        self.stop_sinks()
        self.dns.stop()

    def configure(self, tambo) -> None:
        """Points a Tambo at this network's DNS and sinks."""
        tambo.write_config(dns_servers=[self.dns.address], outbound_smtp_port=self.port)
        tambo.extra_env["TAMBO_SMTP_TIMEOUT_SECS"] = str(SMTP_TIMEOUT_SECS)


@pytest.fixture(scope="session")
def network(tmp_path_factory):
    net = Network(tmp_path_factory.mktemp("network"))
    try:
        net.start()
    except Exception:
        net.stop()
        raise
    yield net
    net.stop()


@pytest.fixture
def net(network):
    """The shared network, its sinks reset for this test."""
    network.reset()
    yield network
    network.reset()


@pytest.fixture
def renv(env, net):
    """A not yet started tambo whose DNS and outbound port point at the network."""
    net.configure(env)
    return env


# --------------------------------------------------------------------------------------------
# postsrsd
# --------------------------------------------------------------------------------------------


SRS_SECRET = "tambo-e2e-srs-secret-1"


class PostSrsd:
    def __init__(self, workdir: Path, secret: str, domain: str = "example.test"):
        self.secret_path = workdir / "postsrsd.secret"
        self.secret_path.write_text(secret + "\n")
        os.chmod(self.secret_path, 0o600)
        self.domain = domain
        self.log_path = workdir / "postsrsd.log"
        self.proc: subprocess.Popen | None = None
        self.forward_port = self.reverse_port = 0

    def start(self) -> "PostSrsd":
        for _attempt in range(5):
            self.forward_port, self.reverse_port = free_ports(2)
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    ["/usr/sbin/postsrsd", f"-s{self.secret_path}", f"-d{self.domain}",
                     "-l127.0.0.1", f"-f{self.forward_port}", f"-r{self.reverse_port}", "-4"],
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            if wait_until(lambda: self.proc.poll() is not None or self._ready(), 5.0) \
                    and self.proc.poll() is None:
                return self
            self.stop()
        raise RuntimeError(f"postsrsd did not start: {self.log_path.read_text(errors='replace')}")

    def _ready(self) -> bool:
        try:
            return self.forward("probe@sender.test").startswith("200 ")
        except OSError:
            return False

    @staticmethod
    def _get(port: int, address: str) -> str:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(f"get {address}\n".encode())
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(4096)
                if not chunk:
                    break
                buf += chunk
        return buf.decode().strip()

    def forward(self, address: str) -> str:
        """postsrsd's reply line, e.g. '200 SRS0=...@example.test'."""
        return self._get(self.forward_port, address)

    def reverse(self, address: str) -> str:
        return self._get(self.reverse_port, address)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


# --------------------------------------------------------------------------------------------
# Dovecot LMTP
# --------------------------------------------------------------------------------------------


DOVECOT_CONF = """\
base_dir = {dir}/run
state_dir = {dir}/state
log_path = {dir}/dovecot.log
instance_name = tambo-e2e-{tag}
protocols = lmtp
ssl = no
default_internal_user = root
default_internal_group = root
default_login_user = root
# Dovecot refuses uid 0 for mail users: the mail belongs to nobody.
mail_location = maildir:{dir}/mail/%u
userdb {{
  driver = static
  args = uid=65534 gid=65534 home={dir}/home/%u
}}
passdb {{
  driver = static
  args = nopassword=y
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {port}
  }}
  unix_listener lmtp {{
    mode = 0600
  }}
}}
"""


class Dovecot:
    """Dovecot's LMTP server with a static userdb: every address has a Maildir."""

    def __init__(self):
        # Not under pytest's tmp (mode 0700 parents): the mail user (nobody) must reach it.
        self.dir = Path(tempfile.mkdtemp(prefix="tambo-e2e-dovecot-"))
        os.chmod(self.dir, 0o755)
        for sub in ["run", "state", "mail", "home"]:
            (self.dir / sub).mkdir()
        for sub in ["mail", "home"]:
            os.chown(self.dir / sub, 65534, 65534)
        self.conf = self.dir / "dovecot.conf"
        self.proc: subprocess.Popen | None = None
        self.port = 0

    @property
    def unix_socket(self) -> Path:
        return self.dir / "run" / "lmtp"

    def start(self) -> "Dovecot":
        for _attempt in range(5):
            [self.port] = free_ports(1)
            self.conf.write_text(DOVECOT_CONF.format(dir=self.dir, port=self.port,
                                                     tag=self.dir.name))
            self.proc = subprocess.Popen(["/usr/sbin/dovecot", "-F", "-c", str(self.conf)],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                         stdin=subprocess.DEVNULL)
            if wait_until(lambda: self.proc.poll() is not None or self._ready(), 10.0) \
                    and self.proc.poll() is None:
                return self
            self.stop()
        raise RuntimeError(f"dovecot did not start; log:\n{self.log()}")

    def _ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                s.settimeout(2)
                ok = s.recv(100).startswith(b"220")
        except OSError:
            return False
        return ok and self.unix_socket.exists()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def maildir_new(self, address: str) -> list[bytes]:
        new = self.dir / "mail" / address / "new"
        if not new.is_dir():
            return []
        return [f.read_bytes() for f in sorted(new.iterdir()) if f.is_file()]

    def log(self) -> str:
        try:
            return (self.dir / "dovecot.log").read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# DSNs (RFC 3464)
# --------------------------------------------------------------------------------------------


@dataclass
class Dsn:
    top: email.message.Message
    per_message: email.message.Message | None
    per_recipient: list[email.message.Message]
    headers_part: str | None  # the text/rfc822-headers part

    def recipient(self, address: str) -> email.message.Message | None:
        for block in self.per_recipient:
            final = (block.get("Final-Recipient") or "").strip()
            typ, _, addr = final.partition(";")
            if typ.strip().lower() == "rfc822" and addr.strip().strip("<>").lower() == address.lower():
                return block
        return None


def parse_dsn(raw: bytes) -> Dsn:
    """Parses a DSN; asserts its RFC 3464 structure."""
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    assert msg.get_content_type() == "multipart/report", \
        f"DSN is {msg.get_content_type()}, not multipart/report:\n{raw[:2000]!r}"
    assert (msg.get_param("report-type") or "").lower() == "delivery-status", \
        f"report-type is {msg.get_param('report-type')!r}:\n{raw[:2000]!r}"
    status = [p for p in msg.walk() if p.get_content_type() == "message/delivery-status"]
    assert len(status) == 1, f"{len(status)} message/delivery-status parts:\n{raw[:3000]!r}"
    blocks = status[0].get_payload()
    assert isinstance(blocks, list) and len(blocks) >= 2, \
        f"delivery-status part lacks per-recipient fields:\n{raw[:3000]!r}"
    headers = [p for p in msg.walk() if p.get_content_type() == "text/rfc822-headers"]
    text = None
    if headers:
        payload = headers[0].get_payload(decode=True)
        text = payload.decode("utf-8", errors="replace") if payload else ""
    return Dsn(msg, blocks[0], list(blocks[1:]), text)


def check_dsn(raw: bytes, rcpt: str, reply_text: str, msgid: str) -> Dsn:
    """The contract's DSN: Action failed for rcpt, the remote reply, the original headers."""
    dsn = parse_dsn(raw)
    block = dsn.recipient(rcpt)
    finals = [b.get("Final-Recipient") for b in dsn.per_recipient]
    assert block is not None, f"no Final-Recipient: rfc822; {rcpt} in the DSN (have {finals})"
    assert (block.get("Action") or "").strip().lower() == "failed", \
        f"Action is {block.get('Action')!r}, not failed"
    status = (block.get("Status") or "").strip()
    assert status.startswith("5."), f"Status {status!r} is not a permanent (5.x.x) status"
    diag = " ".join((block.get("Diagnostic-Code") or "").split())
    assert reply_text in diag, f"Diagnostic-Code {diag!r} lacks the remote reply {reply_text!r}"
    assert dsn.headers_part is not None, "no text/rfc822-headers part with the original headers"
    assert msgid in dsn.headers_part, \
        f"original Message-ID {msgid} not in the text/rfc822-headers part:\n{dsn.headers_part}"
    assert "X-Test-Marker: first-original-header" in dsn.headers_part, dsn.headers_part
    return dsn


def log_lines(tambo, *needles: str) -> list[str]:
    """tambo's log lines containing every needle."""
    return [l for l in tambo.log().splitlines() if all(n in l for n in needles)]


def wait_log_lines(tambo, *needles: str, deadline: float = 10.0) -> list[str]:
    got = wait_until(lambda: log_lines(tambo, *needles), deadline)
    if not got:
        pytest.fail(f"no log line with {needles} within {deadline}s; log:\n{tambo.log()}",
                    pytrace=False)
    return got


# --------------------------------------------------------------------------------------------
# Sending and waiting
# --------------------------------------------------------------------------------------------


ALICE = "alice@example.test"
BOB_OUTSIDE = "bob@sender.test"


def submit(tambo, rcpts: list[str], message: bytes, sender: str = ALICE,
           implicit_tls: bool = False) -> str:
    """Submission as alice (587 STARTTLS, or 465); returns the queue id."""
    from helpers import PASSWORD, queue_id, send_raw
    if implicit_tls:
        r = send_raw(tambo.submission_tls_port, sender, rcpts, message, tls=True,
                     login=(ALICE, PASSWORD))
    else:
        r = send_raw(tambo.submission_port, sender, rcpts, message, starttls=True,
                     login=(ALICE, PASSWORD))
    return queue_id(r)


@contextlib.contextmanager
def running_spamd(workdir: Path, port: int):
    """Debian's spamd on 127.0.0.1:`port`, local tests only (no network rules), stopped by
    its pid on exit. Skips (fails under TAMBO_REQUIRE_PEERS=1) without spamd and spamc."""
    from helpers import need, port_open, stop_process
    program = need("spamd", "spamd")
    need("spamc", "spamc")
    log = open(workdir / "spamd.log", "wb")
    proc = subprocess.Popen(
        [program, f"--listen=127.0.0.1:{port}", f"--pidfile={workdir / 'pid'}", "--local",
         "--max-children=1", "--min-children=1", "--syslog=stderr", "--nouser-config",
         "--username=nobody"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        # Loading the rules takes a few seconds.
        if not wait_until(lambda: port_open(port) or proc.poll() is not None, 60) \
                or proc.poll() is not None:
            pytest.fail(f"spamd did not start:\n{(workdir / 'spamd.log').read_text()}",
                        pytrace=False)
        yield proc
    finally:
        stop_process(proc)
        log.close()


def install_dkim_keys(tambo, net: Network) -> None:
    """example.test's DKIM keys (sel1 RSA, sel2 Ed25519, published in the network's DNS)."""
    for key in net.keys.values():
        path = tambo.add_domain("example.test") / f"dkim:{key.selector}.pem"
        path.write_bytes(key.private_pem)
        os.chmod(path, 0o600)


def send_mx(tambo, sender: str, rcpts: list[str], message: bytes) -> str:
    """A message over port 25; returns the queue id."""
    from helpers import queue_id, send_raw
    return queue_id(send_raw(tambo.smtp_port, sender, rcpts, message))


def wait_queue_empty(tambo, deadline: float = 10.0, net: Network | None = None) -> None:
    if not wait_until(lambda: not tambo.queue_files(), deadline):
        pytest.fail(f"queue not empty after {deadline}s: {[p.name for p in tambo.queue_files()]}"
                    f"\nlog:\n{tambo.log()}" + (f"\n{net.stories()}" if net else ""),
                    pytrace=False)


def queued_ids(tambo) -> list[str]:
    return [p.name for p in tambo.queue_files()]


# --------------------------------------------------------------------------------------------
# Verified TLS and MTA-STS (test_tls_levels.py): a test CA, an HTTPS policy server, a zone of
# one's own, and a group of sinks on one port. Nothing above uses these.
# --------------------------------------------------------------------------------------------


class CertAuthority:
    """A throw-away CA. tambo trusts it when started with SSL_CERT_FILE=<pem_path> (and
    SSL_CERT_DIR empty): rustls-platform-verifier then takes its roots from those alone."""

    def __init__(self, dir: Path, name: str = "tambo e2e test CA"):
        self.dir = dir
        self.pem_path, self.key_path = dir / "ca.pem", dir / "ca-key.pem"
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                "-nodes", "-subj", f"/CN={name}",
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                "-days", "2", "-keyout", str(self.key_path), "-out", str(self.pem_path))
        self.serial = 0

    def issue(self, names: list[str], tag: str | None = None) -> tuple[Path, Path]:
        """A leaf for `names` (subjectAltName DNS entries) signed by this CA: (cert, key)."""
        self.serial += 1
        tag = tag or f"leaf{self.serial}"
        cert, key = self.dir / f"{tag}.pem", self.dir / f"{tag}-key.pem"
        csr, ext = self.dir / f"{tag}.csr", self.dir / f"{tag}.ext"
        ext.write_text(
            "basicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature\n"
            "extendedKeyUsage=serverAuth\n"
            f"subjectAltName={','.join('DNS:' + n for n in names)}\n")
        openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                "-nodes", "-subj", f"/CN={names[0]}", "-keyout", str(key), "-out", str(csr))
        openssl("x509", "-req", "-in", str(csr), "-CA", str(self.pem_path),
                "-CAkey", str(self.key_path), "-set_serial", str(1000 + self.serial),
                "-days", "2", "-extfile", str(ext), "-out", str(cert))
        return cert, key

    def server_context(self, names: list[str], tag: str | None = None) -> ssl.SSLContext:
        return sink_tls_context(*self.issue(names, tag))

    def tambo_env(self) -> dict[str, str]:
        """For `Tambo.extra_env`: trust this CA and nothing else. An empty SSL_CERT_DIR
        counts as unset for rustls-native-certs (the runner's environment may set one)."""
        return {"SSL_CERT_FILE": str(self.pem_path), "SSL_CERT_DIR": ""}


class ZoneDns(DnsServer):
    """A dnsmasq with a zone of its own; `probe` (a TXT name in it) tells when it answers."""

    def __init__(self, workdir: Path, mx: list[tuple[str, str, int]],
                 hosts: list[tuple[str, str]], txt: list[tuple[str, str]], probe: str):
        super().__init__(workdir, mx, hosts, txt)
        self.probe = probe

    def answers(self) -> bool:
        try:
            return self.query_txt(self.probe) is not None
        except Exception:
            return False


class SinkGroup:
    """Sinks on several loopback addresses sharing one port (tambo has one outbound port);
    each with its own TLS context, which a test may swap (`sink.tls_context = ...`): it is
    read for every new connection."""

    def __init__(self, hosts: dict[str, str], contexts: dict[str, ssl.SSLContext]):
        self.hosts, self.contexts = hosts, contexts
        self.sinks: dict[str, Sink] = {}
        self.port = 0

    def start(self) -> "SinkGroup":
        last = None
        for _attempt in range(5):
            [self.port] = free_ports(1)
            try:
                for name, host in self.hosts.items():
                    sink = Sink(name, host, self.port, self.contexts[name])
                    sink.start()
                    self.sinks[name] = sink
                return self
            except Exception as e:  # the port was taken on one of the addresses: next one
                last = e
                self.stop()
        raise RuntimeError(f"could not start the sinks: {last!r}")

    def sink(self, name: str) -> Sink:
        return self.sinks[name]

    def reset(self) -> None:
        """Scripts, records and each sink's own TLS context back to the start."""
        for name, s in self.sinks.items():
            s.reset()
            s.tls_context = self.contexts[name]

    def stories(self) -> str:
        return "\n".join(f"[{n}] {s.story()}" for n, s in self.sinks.items())

    def stop(self) -> None:
        for s in self.sinks.values():
            s.stop()
        self.sinks = {}


class PolicyServer:
    """HTTPS on host:443 serving RFC 8461 policies at /.well-known/mta-sts.txt, chosen by the
    Host header (`policies`: host name -> body), as text/plain; anything else is a 404."""

    PATH = "/.well-known/mta-sts.txt"

    def __init__(self, host: str, context: ssl.SSLContext, policies: dict[str, str],
                 port: int = 443):
        self.host, self.port, self.context = host, port, context
        self.policies = dict(policies)
        self.lock = threading.Lock()
        self.requests: list[tuple[str, str, int]] = []  # (Host, path, status)
        self.errors: list[str] = []
        self.httpd = None
        self.thread: threading.Thread | None = None

    def start(self) -> "PolicyServer":
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                host = (self.headers.get("Host") or "").rsplit(":", 1)[0].lower()
                body = owner.policies.get(host) if self.path == owner.PATH else None
                status = 200 if body is not None else 404
                data = (body if body is not None else "not found\n").encode()
                with owner.lock:
                    owner.requests.append((host, self.path, status))
                self.send_response(status)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(data)
                self.close_connection = True

            def log_message(self, format, *args):  # quiet: failures carry `story()`
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def finish_request(self, request, client_address):
                # The handshake happens in the request's own thread, under a deadline, so a
                # client that never speaks TLS cannot block the accept loop.
                request.settimeout(10)
                try:
                    tls = owner.context.wrap_socket(request, server_side=True)
                except (OSError, ssl.SSLError) as e:
                    with owner.lock:
                        owner.errors.append(f"TLS handshake from {client_address}: {e}")
                    return
                try:
                    super().finish_request(tls, client_address)
                finally:
                    try:
                        tls.close()
                    except OSError:
                        pass

        self.httpd = Server((self.host, self.port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()
        return self

    def reset(self) -> None:
        with self.lock:
            self.requests = []
            self.errors = []

    def fetched(self, host: str) -> list[tuple[str, str, int]]:
        with self.lock:
            return [r for r in self.requests if r[0] == host]

    def story(self) -> str:
        with self.lock:
            lines = [f"  GET {p} Host={h} -> {s}" for h, p, s in self.requests] + \
                [f"  {e}" for e in self.errors]
        return "policy server:\n" + "\n".join(lines or ["  (no request)"])

    def stop(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None
        if self.thread is not None:
            self.thread.join(5)
            self.thread = None
