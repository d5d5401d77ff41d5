"""The security battery of issue 5 (SPEC §7): every relay trick a relay tester would try,
SMTP smuggling in all its variants, a connection flood and slow-loris clients, against the
real binary. Each trick must be refused, and nothing may be queued or relayed.

The would-be relay destination is `remote1.test`, whose MX is an aiosmtpd sink of peers.py
(127.0.0.2): a relay that slipped through would show up there. Our domain is `example.test`
(user alice); the outside sender is `bob@sender.test`.

Checklist against the issue (test name: tricks):
- test_relay_trick_refused: percent hack, bang paths, source routes, quoted local parts with
  `@`, IP literals, trailing dots, upper-case and ACE forms of foreign domains, Unicode
  look-alikes of our domain (SMTPUTF8), forged SRS addresses, addresses without brackets.
- test_our_sender_from_outside_cannot_relay: a sender of our domain from outside without AUTH.
- test_auth_on_port_25_refused_and_no_relay: AUTH on port 25 (not offered, refused).
- test_auth_before_tls_refused_and_no_relay: AUTH before TLS on 587.
- test_no_relay_after_failed_auth: relay after a failed AUTH (587 and 465).
- test_submission_without_auth_cannot_relay: relay on the submission ports without AUTH.
- test_smuggling_refused: `<LF>.<LF>`, `<CR>.<CR>`, `<LF>.<CR><LF>`, `<CR><LF>.<LF>`,
  `<CR><LF>.<CR>`, whole and split across TCP segments (TCP_NODELAY, small sends).
- test_split_end_of_data_is_one_message: the real `<CR><LF>.<CR><LF>` split the same way.
- test_flood_does_not_lock_out_a_legitimate_client: 1,000 connections held open.
- test_slow_loris_does_not_lock_out_a_legitimate_client: 30 clients, a byte a second.

test_smtp_replies.py and test_tls_auth.py hold the single-case versions of some of these
(relay denied, AUTH on 25, bare LF/CR); this file is the complete list.
"""

from __future__ import annotations

import base64
import socket
import threading
import time
import uuid
from pathlib import Path

import pytest

from helpers import (PASSWORD, Closed, SmtpConn, Tambo, assert_reply, dot_stuff, make_message,
                     queue_id, wait_until)

OURS = "example.test"
ALICE = "alice@example.test"
OUTSIDE_SENDER = "bob@sender.test"
VICTIM = "victim@remote1.test"  # remote1.test's MX is a sink: a relay would land there
RELAY_DENIED = (554, "5.7.1")
UNKNOWN_USER = (550, "5.1.1")
AUTH_REQUIRED = (530, "5.7.0")
# How long a refused relay is given to show up at a sink or in the queue anyway.
RELAY_GRACE = 3.0
# A legitimate client's whole transaction (debug binary, fsync) under a flood or slow-loris.
PROMPT = 5.0
# Source address of the legitimate client under a flood or slow-loris: the attackers use
# 127.0.0.1, so a per-address connection cap (issue 5 item 5) must not count it with them.
LEGIT_SOURCE = "127.0.0.77"


# --------------------------------------------------------------------------------------------
# Fixtures and helpers
# --------------------------------------------------------------------------------------------


def start_tambo(root: Path, network) -> Tambo:
    t = Tambo(root)
    t.add_domain(OURS)
    t.user_add(ALICE)
    network.configure(t)
    return t.start()


def finish(t: Tambo) -> None:
    t.stop()
    log = t.log()
    problems = list(t.died)
    if "panicked at" in log:
        problems.append("the server panicked")
    if problems:
        pytest.fail("; ".join(problems) + f"\nlog:\n{log}", pytrace=False)


@pytest.fixture(scope="module")
def mx(tmp_path_factory, network):
    """One server for the address tricks: they only ever open a connection and give RCPTs,
    so they cannot disturb one another (no AUTH, hence no AUTH-failure limit)."""
    t = start_tambo(tmp_path_factory.mktemp("battery"), network)
    yield t
    finish(t)


@pytest.fixture
def fresh(tmp_path, net):
    """A server of its own (AUTH-failure limits, floods): same set-up as `mx`."""
    t = start_tambo(tmp_path, net)
    yield t
    finish(t)


def nothing_relayed(t: Tambo, net, queued_before: set[str], what: str) -> None:
    """No sink got a transaction and nothing new is in the queue (after RELAY_GRACE when
    something was accepted that should not have been)."""
    def leaked():
        txs = [(n, tx) for n, s in net.sinks.items() for tx in s.received()]
        new = sorted({p.name for p in t.queue_files()} - queued_before)
        return (txs, new) if txs or new else None
    got = leaked()
    assert got is None, (f"{what}: relayed or queued: sinks {[(n, tx.rcpt_tos) for n, tx in got[0]]}"
                         f", queue {got[1]}\n{net.stories()}\nlog:\n{t.log()}")


def try_to_finish(c: SmtpConn, marker: str) -> None:
    """After a wrongly accepted RCPT: send a message so that a relay becomes visible."""
    msg, _ = make_message(subject=f"relay test {marker}", sender=OUTSIDE_SENDER, to=VICTIM)
    try:
        c.data(msg)
    except (AssertionError, Closed, OSError):
        pass


def queued(t: Tambo) -> set[str]:
    return {p.name for p in t.queue_files()}


def connect_from(port: int, source: str, timeout: float = 10.0) -> SmtpConn:
    """An SmtpConn from a chosen loopback source address."""
    c = SmtpConn.__new__(SmtpConn)
    c.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                      source_address=(source, 0))
    c.buf = b""
    c.greeting = c.reply()
    return c


# --------------------------------------------------------------------------------------------
# Address tricks on port 25
# --------------------------------------------------------------------------------------------

# (RCPT TO argument as sent, acceptable (code, enhanced) replies). Addresses in our domain
# whose local part smuggles a foreign address must be an unknown user (the server does not
# route on `%`, `!` or a quoted `@`); foreign domains in any spelling are relay denied.
# Where the server refuses the syntax itself (domain literals, trailing dots, a quoted `@`,
# no domain) that 501 is the refusal; the alternative it would be allowed to give instead is
# listed with it.
BAD_ADDRESS = (501, "5.1.3")
BAD_SYNTAX = (501, "5.5.4")
BAD_SRS = (550, "5.7.1")
RELAY_TRICKS = [
    # percent hack
    pytest.param("<victim%remote1.test@example.test>", [UNKNOWN_USER], id="percent"),
    pytest.param("<alice%remote1.test@example.test>", [UNKNOWN_USER], id="percent-our-user"),
    pytest.param("<victim%remote1.test%example.test@example.test>", [UNKNOWN_USER],
                 id="percent-double"),
    pytest.param("<victim%remote1.test>", [BAD_ADDRESS, RELAY_DENIED], id="percent-no-domain"),
    # bang paths
    pytest.param("<remote1.test!victim@example.test>", [UNKNOWN_USER], id="bang"),
    pytest.param("<remote1.test!victim>", [BAD_ADDRESS, RELAY_DENIED], id="bang-no-domain"),
    pytest.param("<example.test!remote1.test!victim@example.test>", [UNKNOWN_USER],
                 id="bang-two-hops"),
    pytest.param("<remote1.test!victim%example.test@example.test>", [UNKNOWN_USER],
                 id="bang-and-percent"),
    pytest.param("<victim@remote1.test@example.test>", [BAD_ADDRESS, RELAY_DENIED],
                 id="two-ats"),
    # the plain relay attempt, as a control
    pytest.param(f"<{VICTIM}>", [RELAY_DENIED], id="plain-foreign"),
    # source routes (RFC 5321 §4.1.1.3: accepted and ignored, so this is a foreign address)
    pytest.param("<@example.test:victim@remote1.test>", [RELAY_DENIED], id="source-route"),
    pytest.param("<@example.test,@mx.example.test:victim@remote1.test>", [RELAY_DENIED],
                 id="source-route-two-hops"),
    pytest.param("<@remote1.test:victim@example.test>", [UNKNOWN_USER],
                 id="source-route-via-foreign"),
    # quoted local parts with @ (or %)
    pytest.param('<"victim@remote1.test"@example.test>', [BAD_ADDRESS, UNKNOWN_USER],
                 id="quoted-at"),
    pytest.param('<"victim%remote1.test"@example.test>', [UNKNOWN_USER], id="quoted-percent"),
    pytest.param('<"victim@remote1.test">', [BAD_ADDRESS, RELAY_DENIED],
                 id="quoted-at-no-domain"),
    pytest.param('<"alice@example.test"@remote1.test>', [BAD_ADDRESS, RELAY_DENIED],
                 id="quoted-ours-at-foreign"),
    # IP literals (127.0.0.2 is the sink; 127.0.0.1 is ourselves)
    pytest.param("<victim@[127.0.0.1]>", [BAD_ADDRESS, RELAY_DENIED], id="ip-literal-self"),
    pytest.param("<victim@[127.0.0.2]>", [BAD_ADDRESS, RELAY_DENIED], id="ip-literal-sink"),
    pytest.param("<alice@[127.0.0.1]>", [BAD_ADDRESS, RELAY_DENIED], id="ip-literal-our-user"),
    pytest.param("<victim@[IPv6:::1]>", [BAD_ADDRESS, RELAY_DENIED], id="ipv6-literal"),
    pytest.param("<victim@127.0.0.2>", [BAD_ADDRESS, RELAY_DENIED], id="bare-ip"),
    pytest.param("<victim%[127.0.0.2]@example.test>", [BAD_ADDRESS, UNKNOWN_USER],
                 id="percent-ip-literal"),
    # trailing dots
    pytest.param("<victim@remote1.test.>", [BAD_ADDRESS, RELAY_DENIED], id="trailing-dot"),
    pytest.param("<victim@remote1.test..>", [BAD_ADDRESS, RELAY_DENIED], id="two-trailing-dots"),
    pytest.param("<victim%remote1.test.@example.test>", [UNKNOWN_USER],
                 id="percent-trailing-dot"),
    # case and ACE forms of foreign domains
    pytest.param("<victim@REMOTE1.TEST>", [RELAY_DENIED], id="upper-case"),
    pytest.param("<Victim@Remote1.Test>", [RELAY_DENIED], id="mixed-case"),
    pytest.param("<victim@xn--mnchen-3ya.test>", [RELAY_DENIED], id="ace-foreign"),
    pytest.param("<victim@XN--MNCHEN-3YA.TEST>", [RELAY_DENIED], id="ace-foreign-upper"),
    pytest.param("<victim@münchen.test>", [RELAY_DENIED], id="unicode-foreign"),
    # Unicode look-alikes of our domain (Cyrillic 'е' U+0435 and 'а' U+0430), and their ACE
    pytest.param("<alice@\u0435xample.test>", [RELAY_DENIED], id="lookalike-cyrillic-e"),
    pytest.param("<alice@ex\u0430mple.test>", [RELAY_DENIED], id="lookalike-cyrillic-a"),
    pytest.param("<alice@example.t\u0435st>", [RELAY_DENIED], id="lookalike-tld"),
    pytest.param("<alice@xn--xample-2of.test>", [RELAY_DENIED], id="lookalike-ace"),
    pytest.param("<alice@example.test.remote1.test>", [RELAY_DENIED], id="our-name-as-prefix"),
    pytest.param("<alice@remote1.test.example.test>", [RELAY_DENIED], id="subdomain-of-ours"),
    # forged SRS: a bounce to an SRS address of ours would be relayed to its original sender
    pytest.param("<SRS0=AAAA=AA=remote1.test=victim@example.test>", [BAD_SRS],
                 id="forged-srs0"),
    pytest.param("<SRS1=AAAA=remote1.test==BBBB=AA=remote2.test=victim@example.test>",
                 [BAD_SRS], id="forged-srs1"),
    # no angle brackets and other lax forms
    pytest.param("victim@remote1.test", [BAD_SYNTAX, RELAY_DENIED], id="no-brackets"),
    pytest.param(" <victim@remote1.test>", [BAD_SYNTAX, RELAY_DENIED], id="space-before"),
    pytest.param("<alice@example.test>,<victim@remote1.test>", [BAD_SYNTAX],
                 id="two-addresses"),
]


@pytest.mark.parametrize("rcpt,expected", RELAY_TRICKS)
def test_relay_trick_refused(mx, net, rcpt, expected):
    before = queued(mx)
    utf8 = " SMTPUTF8" if not rcpt.isascii() else ""
    with SmtpConn(mx.smtp_port) as c:
        c.ehlo()
        assert_reply(c.cmd(f"MAIL FROM:<{OUTSIDE_SENDER}>{utf8}"), 250, what="MAIL")
        r = c.cmd(f"RCPT TO:{rcpt}")
        if r.code < 400:
            try_to_finish(c, uuid.uuid4().hex)
            time.sleep(RELAY_GRACE)
    nothing_relayed(mx, net, before, f"RCPT TO:{rcpt} ({r})")
    assert (r.code, r.enhanced) in expected, \
        f"RCPT TO:{rcpt}: expected one of {expected}, got {r}"


# --------------------------------------------------------------------------------------------
# Senders of our domain, HELO names of ours, null sender: still no relay on port 25
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("helo,sender", [
    ("client.example", ALICE),
    ("client.example", "ALICE@EXAMPLE.TEST"),
    ("client.example", "postmaster@example.test"),
    ("client.example", ""),
    ("example.test", ALICE),
    ("mx.example.test", ALICE),
    ("[127.0.0.1]", ALICE),
    ("localhost", ALICE),
])
def test_our_sender_from_outside_cannot_relay(mx, net, helo, sender):
    before = queued(mx)
    with SmtpConn(mx.smtp_port) as c:
        c.ehlo(helo)
        r = c.cmd(f"MAIL FROM:<{sender}>")
        if r.code == 250:
            r = c.cmd(f"RCPT TO:<{VICTIM}>")
            if r.code < 400:
                try_to_finish(c, uuid.uuid4().hex)
                time.sleep(RELAY_GRACE)
            assert_reply(r, *RELAY_DENIED, what=f"EHLO {helo}, MAIL FROM:<{sender}>, RCPT {VICTIM}")
        else:
            # Refusing such a sender outright (SPF, policy) is also a refusal.
            assert 500 <= r.code < 600, f"MAIL FROM:<{sender}> from outside: {r}"
    nothing_relayed(mx, net, before, f"sender <{sender}> from outside")


# --------------------------------------------------------------------------------------------
# AUTH tricks
# --------------------------------------------------------------------------------------------


def auth(c: SmtpConn, mech: str, user: str, password: str):
    return c.auth_plain(user, password) if mech == "PLAIN" else c.auth_login(user, password)


def relay_attempt_refused(c: SmtpConn, expected: tuple[int, str], what: str) -> None:
    """MAIL as alice to the victim; the first refusal must be `expected`."""
    r = c.cmd(f"MAIL FROM:<{ALICE}>")
    if r.code == 250:
        r = c.cmd(f"RCPT TO:<{VICTIM}>")
        if r.code < 400:
            try_to_finish(c, uuid.uuid4().hex)
            time.sleep(RELAY_GRACE)
    assert_reply(r, *expected, what=what)


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
@pytest.mark.parametrize("tls", [False, True], ids=["plain", "starttls"])
def test_auth_on_port_25_refused_and_no_relay(mx, net, mech, tls):
    before = queued(mx)
    with SmtpConn(mx.smtp_port) as c:
        exts = c.ehlo()
        if tls:
            c.starttls()
            exts = c.ehlo()
        assert "AUTH" not in exts, f"AUTH offered on port 25: {exts}"
        # The right password: even a real user's credentials open nothing on port 25.
        assert_reply(auth(c, mech, ALICE, PASSWORD), 503, "5.5.1", f"AUTH {mech} on 25")
        # MAIL as alice is a sender of ours from outside: relay is still denied at RCPT.
        relay_attempt_refused(c, RELAY_DENIED, f"relay after AUTH {mech} on 25")
    nothing_relayed(mx, net, before, f"AUTH {mech} on port 25")


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
def test_auth_before_tls_refused_and_no_relay(fresh, net, mech):
    before = queued(fresh)
    with SmtpConn(fresh.submission_port) as c:
        exts = c.ehlo()
        assert "AUTH" not in exts, f"AUTH offered before TLS on 587: {exts}"
        assert_reply(auth(c, mech, ALICE, PASSWORD), 538, "5.7.11",
                     f"AUTH {mech} before STARTTLS")
        relay_attempt_refused(c, AUTH_REQUIRED, f"relay after AUTH {mech} before TLS")
    nothing_relayed(fresh, net, before, f"AUTH {mech} before TLS")


def bad_auth_plain_wrong_password(c):
    return c.auth_plain(ALICE, "wrong password"), [(535, "5.7.8")]


def bad_auth_login_wrong_password(c):
    return c.auth_login(ALICE, "wrong password"), [(535, "5.7.8")]


def bad_auth_unknown_user(c):
    return c.auth_plain("mallory@example.test", PASSWORD), [(535, "5.7.8")]


def bad_auth_foreign_user(c):
    return c.auth_plain(VICTIM, PASSWORD), [(535, "5.7.8")]


def bad_auth_login_cancelled(c):
    r = c.cmd("AUTH LOGIN")
    assert r.code == 334, f"AUTH LOGIN: {r}"
    # RFC 4954 §4: a cancelled exchange MUST get a 501 (no enhanced code is named there).
    return c.cmd("*"), [(501, "5.0.0"), (501, "5.7.0"), (501, "5.5.2")]


def bad_auth_garbage(c):
    return c.cmd("AUTH PLAIN !!!not-base64!!!"), [(501, "5.5.2"), (501, "5.5.4"),
                                                    (535, "5.7.8"), (501, "5.7.0")]


def bad_auth_authzid_other_user(c):
    # PLAIN with an authorisation identity other than the authenticated user (RFC 4616 §2).
    token = base64.b64encode(f"{VICTIM}\0{ALICE}\0{PASSWORD}".encode()).decode()
    return c.cmd(f"AUTH PLAIN {token}"), [(535, "5.7.8"), (501, "5.5.4"), (501, "5.7.0")]


BAD_AUTHS = [bad_auth_plain_wrong_password, bad_auth_login_wrong_password, bad_auth_unknown_user,
             bad_auth_foreign_user, bad_auth_login_cancelled, bad_auth_garbage,
             bad_auth_authzid_other_user]


@pytest.mark.parametrize("port_name", ["submission_port", "submission_tls_port"])
@pytest.mark.parametrize("bad", BAD_AUTHS, ids=[f.__name__[len("bad_auth_"):] for f in BAD_AUTHS])
def test_no_relay_after_failed_auth(fresh, net, port_name, bad):
    before = queued(fresh)
    implicit = port_name == "submission_tls_port"
    with SmtpConn(getattr(fresh, port_name), tls=implicit) as c:
        c.ehlo()
        if not implicit:
            c.starttls()
            c.ehlo()
        r, expected = bad(c)
        assert (r.code, r.enhanced) in expected, f"{bad.__name__}: expected {expected}, got {r}"
        relay_attempt_refused(c, AUTH_REQUIRED, f"relay after {bad.__name__}")
    nothing_relayed(fresh, net, before, bad.__name__)


@pytest.mark.parametrize("port_name", ["submission_port", "submission_tls_port"])
@pytest.mark.parametrize("sender", [ALICE, OUTSIDE_SENDER, ""])
def test_submission_without_auth_cannot_relay(mx, net, port_name, sender):
    before = queued(mx)
    implicit = port_name == "submission_tls_port"
    with SmtpConn(getattr(mx, port_name), tls=implicit) as c:
        c.ehlo()
        if not implicit:
            c.starttls()
            c.ehlo()
        assert_reply(c.cmd(f"MAIL FROM:<{sender}>"), *AUTH_REQUIRED,
                     what=f"MAIL FROM:<{sender}> without AUTH on {port_name}")
    nothing_relayed(mx, net, before, f"{port_name} without AUTH")


# --------------------------------------------------------------------------------------------
# SMTP smuggling
# --------------------------------------------------------------------------------------------

# A fake end of data, then a whole smuggled transaction (a sender of ours, spoofed), then the
# real end of data. A server that takes the fake end as an end accepts two messages.
FAKE_ENDS = {
    "LF.LF": b"\n.\n",
    "CR.CR": b"\r.\r",
    "LF.CRLF": b"\n.\r\n",
    "CRLF.LF": b"\r\n.\n",
    "CRLF.CR": b"\r\n.\r",
    "CR.LF": b"\r.\n",
}


def smuggling_payload(fake_end: bytes, marker: str) -> tuple[bytes, bytes]:
    """(bytes up to and including the fake end, the rest up to the real end)."""
    first = (f"From: {OUTSIDE_SENDER}\r\nTo: {ALICE}\r\nSubject: carrier {marker}\r\n\r\n"
             f"carrier body {marker}").encode() + fake_end
    rest = (f"MAIL FROM:<{ALICE}>\r\nRCPT TO:<{ALICE}>\r\nDATA\r\n"
            f"From: {ALICE}\r\nTo: {ALICE}\r\nSubject: smuggled {marker}\r\n\r\n"
            f"smuggled body {marker}\r\n.\r\n").encode()
    return first, rest


def send_segments(c: SmtpConn, segments: list[bytes], pause: float = 0.05) -> None:
    """One send per segment, with TCP_NODELAY and a pause, so each is its own TCP segment."""
    c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for seg in segments:
        c.send(seg)
        time.sleep(pause)


def split_plan(head: bytes, tail: bytes, how: str) -> list[bytes]:
    """`head` ends with the (fake or real) end-of-data sequence; `tail` follows it."""
    if how == "whole":
        return [head + tail]
    end = next(n for n in (5, 4, 3) if head[-n:].strip(b"\r\n.") == b"")
    body, seq = head[:-end], head[-end:]
    if how == "bytewise":  # every octet of the sequence in its own segment
        return [body] + [seq[i:i + 1] for i in range(len(seq))] + [tail]
    # "before-dot": the sequence cut right before the dot, the rest with what follows
    dot = seq.index(b".")
    return [body + seq[:dot], seq[dot:] + tail]


def replies_until_close(c: SmtpConn, wait: float = 5.0) -> list:
    """Every reply until the server closes, or until it has been quiet for `wait` seconds."""
    c.sock.settimeout(wait)
    out = []
    try:
        while len(out) < 10:
            out.append(c.reply())
    except (Closed, TimeoutError, socket.timeout, ConnectionError):
        pass
    return out


def delivered_with(t: Tambo, net, marker: str) -> list[bytes]:
    local = [m for m in t.messages() if marker.encode() in m]
    remote = [tx.data for s in net.sinks.values() for tx in s.received(marker)]
    return local + remote


@pytest.mark.parametrize("how", ["whole", "bytewise", "before-dot"])
@pytest.mark.parametrize("variant", list(FAKE_ENDS))
def test_smuggling_refused(mx, net, variant, how):
    marker = uuid.uuid4().hex
    before = queued(mx)
    first, rest = smuggling_payload(FAKE_ENDS[variant], marker)
    with SmtpConn(mx.smtp_port) as c:
        c.ehlo()
        assert_reply(c.cmd(f"MAIL FROM:<{OUTSIDE_SENDER}>"), 250, what="MAIL")
        assert_reply(c.cmd(f"RCPT TO:<{ALICE}>"), 250, what="RCPT")
        assert_reply(c.cmd("DATA"), 354, what="DATA")
        try:
            send_segments(c, split_plan(first, rest, how))
        except OSError:
            pass  # closed while we were still sending: the replies say why
        replies = replies_until_close(c)
    seen = [str(r) for r in replies]
    accepted = [r for r in replies if r.code == 250 and "queued" in r.text]
    # Never two messages: at most the whole stream as one (it is not: SPEC §7 refuses it).
    assert len(accepted) <= 1, f"{variant}/{how}: smuggled message accepted: {seen}"
    # SPEC §7: bare CR or LF in DATA is refused with a 5xx (tambo: 521 5.5.2, as in
    # test_smtp_replies.py), and the session ends: what follows is never read as commands.
    assert replies and 500 <= replies[0].code < 600, f"{variant}/{how}: expected 5xx, got {seen}"
    assert any((r.code, r.enhanced) == (521, "5.5.2") for r in replies), \
        f"{variant}/{how}: no 521 5.5.2: {seen}"
    assert len(replies) <= 2, f"{variant}/{how}: replies after the refusal: {seen}"
    time.sleep(0.5)
    got = delivered_with(mx, net, marker)
    assert got == [], f"{variant}/{how}: delivered: {[m[:300] for m in got]}"
    assert queued(mx) - before == set(), f"{variant}/{how}: queued {queued(mx) - before}"


@pytest.mark.parametrize("how", ["whole", "bytewise", "before-dot"])
def test_split_end_of_data_is_one_message(mx, net, how):
    """The real end of data split the same ways: one message, then the next command works.
    The smuggled-looking text before it stays in the body of that one message."""
    marker = uuid.uuid4().hex
    body = (f"From: {OUTSIDE_SENDER}\r\nTo: {ALICE}\r\nSubject: split {marker}\r\n\r\n"
            f"line {marker}\r\n").encode()
    head = dot_stuff(body) + b".\r\n"
    with SmtpConn(mx.smtp_port) as c:
        c.ehlo()
        assert_reply(c.cmd(f"MAIL FROM:<{OUTSIDE_SENDER}>"), 250, what="MAIL")
        assert_reply(c.cmd(f"RCPT TO:<{ALICE}>"), 250, what="RCPT")
        assert_reply(c.cmd("DATA"), 354, what="DATA")
        send_segments(c, split_plan(head, b"NOOP\r\n", how))
        queue_id(c.reply())
        assert_reply(c.reply(), 250, what="NOOP after the split end of data")
    got = wait_until(lambda: delivered_with(mx, net, marker), 10.0)
    assert got and len(got) == 1, f"{how}: expected one delivered message, got {got}"


# --------------------------------------------------------------------------------------------
# Floods and slow-loris
# --------------------------------------------------------------------------------------------


def legit_transaction(t: Tambo, marker: str) -> float:
    """A whole transaction from LEGIT_SOURCE to alice; returns how long it took."""
    msg, _ = make_message(subject=f"legit {marker}", sender=OUTSIDE_SENDER)
    start = time.monotonic()
    c = connect_from(t.smtp_port, LEGIT_SOURCE, timeout=PROMPT * 2)
    try:
        c.ehlo()
        assert_reply(c.cmd(f"MAIL FROM:<{OUTSIDE_SENDER}>"), 250, what="legit MAIL")
        assert_reply(c.cmd(f"RCPT TO:<{ALICE}>"), 250, what="legit RCPT")
        queue_id(c.data(msg))
        c.cmd("QUIT")
    finally:
        c.close()
    return time.monotonic() - start


def test_flood_does_not_lock_out_a_legitimate_client(fresh):
    socks: list[socket.socket] = []
    refused = 0
    try:
        for _ in range(1000):
            try:
                socks.append(socket.create_connection(("127.0.0.1", fresh.smtp_port),
                                                      timeout=2.0))
            except OSError:
                refused += 1
        elapsed = legit_transaction(fresh, uuid.uuid4().hex)
        assert elapsed < PROMPT, f"legitimate transaction took {elapsed:.1f}s under the flood"
    finally:
        for s in socks:
            s.close()
    fresh.wait_messages(1)
    assert fresh.alive(), f"server died under the flood\n{fresh.log()}"
    # The server is usable again from the flooding address once the flood is gone.
    with SmtpConn(fresh.smtp_port) as c:
        assert c.greeting.code == 220, f"after the flood: {c.greeting}"


def test_slow_loris_does_not_lock_out_a_legitimate_client(fresh):
    clients, seconds = 30, 10
    line = b"EHLO slow.example\r\nMAIL FROM:<slow@sender.test>\r\n"
    socks: list[socket.socket] = []
    stop = threading.Event()

    def drip():
        for i in range(seconds):
            for s in list(socks):
                try:
                    s.send(line[i % len(line):i % len(line) + 1])
                except OSError:
                    pass  # dropped by the server: allowed
            if stop.wait(1.0):
                return

    try:
        for _ in range(clients):
            s = socket.create_connection(("127.0.0.1", fresh.smtp_port), timeout=2.0)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            socks.append(s)
        dripper = threading.Thread(target=drip, daemon=True)
        dripper.start()
        time.sleep(3.0)  # the slow clients are mid-line
        elapsed = legit_transaction(fresh, uuid.uuid4().hex)
        assert elapsed < PROMPT, f"legitimate transaction took {elapsed:.1f}s under slow-loris"
        dripper.join(seconds + 5)
        assert not dripper.is_alive(), "slow-loris thread did not finish"
    finally:
        stop.set()
        for s in socks:
            s.close()
    fresh.wait_messages(1)
    assert fresh.alive(), f"server died under slow-loris\n{fresh.log()}"


def test_slow_loris_is_dropped_however_it_trickles(tmp_path, net):
    """The command deadline runs from our last reply, not from the client's last byte: a
    client that keeps a command line growing a byte at a time is still dropped (421) when the
    deadline passes. TAMBO_SMTPD_TIMEOUT_SECS shortens the 5 minutes for the test."""
    t = Tambo(tmp_path)
    t.add_domain(OURS)
    t.user_add(ALICE)
    net.configure(t)
    t.extra_env["TAMBO_SMTPD_TIMEOUT_SECS"] = "3"
    t.start()
    try:
        s = socket.create_connection(("127.0.0.1", t.smtp_port), timeout=10.0)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            assert s.recv(1024).startswith(b"220"), "no greeting"
            start = time.monotonic()
            got = b""
            for ch in b"EHLO a-very-slow-client.example.with.a.long.name":
                try:
                    s.send(bytes([ch]))
                except OSError:
                    break
                s.settimeout(0.5)
                try:
                    chunk = s.recv(1024)
                except (socket.timeout, TimeoutError):
                    continue
                got += chunk
                if not chunk or b"421" in got:
                    break
                if time.monotonic() - start > 12:
                    break
            elapsed = time.monotonic() - start
            assert b"421" in got, f"not dropped after {elapsed:.1f}s of trickling: {got!r}"
            assert 2.5 <= elapsed < 8, f"dropped after {elapsed:.1f}s, limit 3 s"
        finally:
            s.close()
    finally:
        finish(t)
