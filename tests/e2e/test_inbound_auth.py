"""Inbound authentication on port 25 (issue 5 §1, SPEC §7, §8): SPF on MAIL FROM (and HELO for
`<>`), DKIM on every signature (dkimpy signs, intact and tampered), DMARC with alignment, all
against the SPF / DMARC / DKIM records of the shared dnsmasq zone (peers.INBOUND_AUTH_TXT).

Each accepted message carries exactly one Authentication-Results header with our hostname,
forged ones are removed, SPF `fail` and DMARC `p=reject` failures get a 5xx by default, and
under `inbound_policy` "tag" they are delivered locally but never forwarded outside.
"""

from __future__ import annotations

import re
import time

import dkim
import pytest

from helpers import (DELIVERY_DEADLINE, HOSTNAME, SmtpConn, dot_stuff, header_block, make_message,
                     wait_until)
from peers import SENDER_DKIM_SELECTOR, send_mx

ALICE = "alice@example.test"
SIGNED_HEADERS = [b"from", b"to", b"subject", b"message-id", b"date"]


def results_of(message: bytes) -> list[str]:
    """The Authentication-Results fields of a delivered message, unfolded."""
    return [re.sub(r"\s+", " ", f) for f in header_block(message)
            if f.lower().startswith("authentication-results:")]


def ours(message: bytes) -> str:
    """Our one Authentication-Results field, asserted to be the only one with our name."""
    mine = [f for f in results_of(message) if f.split(":", 1)[1].strip().startswith(HOSTNAME)]
    assert len(mine) == 1, f"expected one A-R of {HOSTNAME}, got {mine}"
    return mine[0]


def method(ar: str, name: str) -> list[str]:
    """The results of one method in an A-R field (`dkim` may appear once per signature)."""
    return re.findall(rf"(?:^|[;\s]){name}=(\w+)", ar)


def signed_by_strict(body: str = "Signed.\r\n", sender: str = "news@strict.test",
                     key=None) -> tuple[bytes, str]:
    msg, msgid = make_message(sender=sender, body=body)
    sig = dkim.sign(msg, SENDER_DKIM_SELECTOR.encode(), b"strict.test", key,
                    canonicalize=(b"relaxed", b"relaxed"), include_headers=SIGNED_HEADERS)
    return sig + msg, msgid


def attempt(port: int, sender: str, rcpts: list[str], message: bytes,
            helo: str = "client.example"):
    """A transaction over port 25 whose end-of-DATA reply is returned, whatever it is."""
    with SmtpConn(port) as c:
        c.ehlo(helo)
        r = c.cmd(f"MAIL FROM:<{sender}>")
        assert r.code == 250, f"MAIL FROM:<{sender}>: {r}"
        for rcpt in rcpts:
            r = c.cmd(f"RCPT TO:<{rcpt}>")
            assert r.code == 250, f"RCPT TO:<{rcpt}>: {r}"
        r = c.cmd("DATA")
        assert r.code == 354, f"DATA: {r}"
        c.send(dot_stuff(message) + b".\r\n")
        return c.reply()


@pytest.fixture
def aenv(renv):
    renv.write_config(srs_secret="inbound-auth-tests")
    renv.write_aliases("fwd: carol@remote1.test\nboth: alice, carol@remote1.test\n")
    return renv


def test_spf_pass_dkim_pass_dmarc_pass(aenv, net):
    aenv.start()
    signed, _ = signed_by_strict(key=net.sender_key.private_pem)
    assert dkim.verify(signed, dnsfunc=net.dns.dkim_dnsfunc()), "the test's own signature fails"
    send_mx(aenv, "bounce@spfok.test", [ALICE], signed)
    [got] = aenv.wait_messages(1)
    ar = ours(got)
    assert method(ar, "spf") == ["pass"], ar
    assert "smtp.mailfrom=bounce@spfok.test" in ar or "smtp.mailfrom=spfok.test" in ar, ar
    assert method(ar, "dkim") == ["pass"], ar
    # RFC 8601 §2.7.1: the signing domain as header.d or header.i (mail-auth writes the latter).
    assert re.search(r"header\.[di]=@?strict\.test", ar), ar
    assert method(ar, "dmarc") == ["pass"], ar
    # The A-R is ours and comes before the message's own headers.
    fields = header_block(got)
    assert fields.index(next(f for f in fields if f.startswith("Authentication-Results:"))) \
        < fields.index("X-Test-Marker: first-original-header")
    # Prepending kept the originator's signature valid.
    assert dkim.verify(got.replace(b"\n", b"\r\n"), dnsfunc=net.dns.dkim_dnsfunc()), \
        "the DKIM signature no longer verifies after delivery"


def test_spf_fail_rejected(aenv):
    aenv.start()
    msg, _ = make_message(sender="someone@spffail.test")
    r = attempt(aenv.smtp_port, "someone@spffail.test", [ALICE], msg)
    assert 500 <= r.code < 600, f"SPF fail accepted: {r}"
    assert "SPF" in r.text, r
    assert not aenv.queue_files()
    assert aenv.messages("alice", "example.test") == []


def test_spf_fail_on_helo_for_null_sender(aenv):
    aenv.start()
    msg, _ = make_message(sender="mailer-daemon@badhelo.test")
    r = attempt(aenv.smtp_port, "", [ALICE], msg, helo="badhelo.test")
    assert 500 <= r.code < 600, f"null sender with failing HELO SPF accepted: {r}"
    # The same from a HELO without SPF (a name the zone does not have) is accepted, spf=none.
    ok = attempt(aenv.smtp_port, "", [ALICE], msg, helo="nospf.test")
    assert ok.code == 250, ok
    [got] = aenv.wait_messages(1)
    assert method(ours(got), "spf") == ["none"], ours(got)


def test_dmarc_reject_without_signature_rejected(aenv):
    aenv.start()
    # SPF passes for spfok.test, but that is not aligned with From: strict.test.
    msg, _ = make_message(sender="news@strict.test")
    r = attempt(aenv.smtp_port, "bounce@spfok.test", [ALICE], msg)
    assert 500 <= r.code < 600, f"DMARC p=reject failure accepted: {r}"
    assert "DMARC" in r.text, r


def assert_dkim_is_the_aligned_pass(aenv, net, signed: bytes) -> None:
    """`signed` (From: strict.test, p=reject) verifies for dkimpy; sent with an envelope
    sender whose SPF passes but is not aligned (spfok.test), so DKIM is the only aligned
    pass: tambo must take it with dkim=pass and dmarc=pass."""
    assert dkim.verify(signed, dnsfunc=net.dns.dkim_dnsfunc()), "the test's own signature fails"
    r = attempt(aenv.smtp_port, "bounce@spfok.test", [ALICE], signed)
    assert r.code == 250, f"DKIM-aligned message refused: {r}"
    [got] = aenv.wait_messages(1)
    ar = ours(got)
    assert method(ar, "dkim") == ["pass"], ar
    assert method(ar, "dmarc") == ["pass"], ar


def test_dkim_only_dmarc_pass_with_whitespace_lines_at_the_end(aenv, net):
    """A relaxed/relaxed signature over a body ending in whitespace-only lines is the only
    aligned pass for a p=reject domain: it must verify (RFC 6376 §3.4.4, as dkimpy and Gmail
    do), or the legitimate message is refused."""
    aenv.start()
    signed, _ = signed_by_strict(body="Signed.  \r\n  with \t runs \r\n  \r\n\t\r\n\r\n",
                                 key=net.sender_key.private_pem)
    assert_dkim_is_the_aligned_pass(aenv, net, signed)


def test_dkim_only_dmarc_pass_with_a_body_length_signature(aenv, net):
    """A signature with `l=` (dkimpy's length=True) over an 8-bit body, with a line appended
    after signing (what l= allows), is the only aligned pass of a p=reject domain: it is
    verified over the octets it covers, as dkimpy and Gmail do, not refused."""
    aenv.start()
    msg, _ = make_message(sender="news@strict.test",
                          body="Grüße  \r\n.leading dot\r\n" + "x" * 990 + "\r\n \t\r\n")
    sig = dkim.sign(msg, SENDER_DKIM_SELECTOR.encode(), b"strict.test",
                    net.sender_key.private_pem, include_headers=SIGNED_HEADERS,
                    canonicalize=(b"relaxed", b"relaxed"), length=True)
    assert b" l=" in sig or b";l=" in sig.replace(b" ", b""), sig
    signed = sig + msg + b"A footer a list added.\r\n"
    assert_dkim_is_the_aligned_pass(aenv, net, signed)


def test_tampered_dkim_fails_and_dmarc_rejects(aenv, net):
    aenv.start()
    signed, _ = signed_by_strict(body="The original body.\r\n", key=net.sender_key.private_pem)
    tampered = signed.replace(b"The original body.", b"The forged body!!.")
    assert not dkim.verify(tampered, dnsfunc=net.dns.dkim_dnsfunc())
    r = attempt(aenv.smtp_port, "bounce@spfok.test", [ALICE], tampered)
    assert 500 <= r.code < 600, f"tampered message under DMARC p=reject accepted: {r}"


def test_tampered_dkim_recorded_as_fail_without_dmarc(aenv, net):
    """A broken signature of a domain without DMARC is accepted and recorded dkim=fail."""
    aenv.start()
    msg, _ = make_message(sender="someone@spfok.test", body="Original.\r\n")
    sig = dkim.sign(msg, SENDER_DKIM_SELECTOR.encode(), b"sender.test",
                    net.sender_key.private_pem, include_headers=SIGNED_HEADERS)
    good = sig + msg
    bad = good.replace(b"Original.", b"Changed!!")
    send_mx(aenv, "someone@spfok.test", [ALICE], good)
    send_mx(aenv, "someone@spfok.test", [ALICE], bad)
    got = aenv.wait_messages(2)
    verdicts = sorted(method(ours(m), "dkim")[0] for m in got)
    assert verdicts == ["fail", "pass"], [ours(m) for m in got]


def test_forged_results_removed_others_kept(aenv):
    aenv.start()
    msg, _ = make_message(sender="someone@spfok.test", extra_headers=[
        f"Authentication-Results: {HOSTNAME}; dkim=pass header.d=bank.example",
        f"Authentication-Results: {HOSTNAME.upper()};\r\n\tdmarc=pass header.from=bank.example",
        "Authentication-Results: other.example; spf=pass smtp.mailfrom=x@y.example",
    ])
    send_mx(aenv, "someone@spfok.test", [ALICE], msg)
    [got] = aenv.wait_messages(1)
    ar = ours(got)
    assert "bank.example" not in ar, ar
    assert b"bank.example" not in got, "a forged Authentication-Results header survived"
    assert any(f.startswith("Authentication-Results: other.example;") for f in results_of(got))


def test_submission_gets_no_results_header(aenv):
    from peers import submit
    aenv.start()
    msg, _ = make_message(sender=ALICE)
    submit(aenv, [ALICE], msg)
    [got] = aenv.wait_messages(1)
    assert not [f for f in results_of(got) if HOSTNAME in f], results_of(got)


def test_tag_policy_delivers_locally_never_forwards(aenv, net):
    aenv.write_config(inbound_policy={"spf_fail": "tag", "dmarc_reject": "tag"})
    aenv.start()
    spf_failed, spf_id = make_message(sender="someone@spffail.test", to="both@example.test")
    dmarc_failed, dmarc_id = make_message(sender="news@strict.test", to="both@example.test")
    send_mx(aenv, "someone@spffail.test", ["both@example.test"], spf_failed)
    send_mx(aenv, "bounce@spfok.test", ["both@example.test"], dmarc_failed)
    # Filed as spam: in Junk, flagged $Junk (its letter in the file name, as Dovecot files
    # it); nothing in INBOX.
    junk = aenv.maildir("alice", "example.test") / ".Junk"
    files = wait_until(lambda: (f := sorted((junk / "cur").glob("*"))) and len(f) >= 2 and f,
                       DELIVERY_DEADLINE)
    assert files and len(files) == 2, aenv.log()
    assert all(f.name.endswith(":2,a") for f in files), files
    assert (junk / "dovecot-keywords").read_text().split() == ["0", "$Junk"]
    assert not aenv.messages("alice", "example.test")
    got = [f.read_bytes() for f in files]
    by_spf = {method(ours(m), "spf")[0]: ours(m) for m in got}
    assert set(by_spf) == {"fail", "pass"}, list(by_spf.values())
    assert method(by_spf["pass"], "dmarc") == ["fail"], by_spf["pass"]
    # Neither leaves: the queue empties, nothing reached the outside sink, no DSN went out.
    deadline = time.monotonic() + 10
    while aenv.queue_files() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not aenv.queue_files(), aenv.log()
    time.sleep(0.5)
    assert not net.sink("remote1").received(spf_id) and not net.sink("remote1").received(dmarc_id), \
        net.stories()
    assert not net.sink("sender").received(), f"a DSN was sent: {net.stories()}"
    log = aenv.log()
    assert "not forwarded" in log, log


def test_passing_mail_is_forwarded(aenv, net):
    aenv.start()
    msg, msgid = make_message(sender="someone@spfok.test", to="fwd@example.test")
    send_mx(aenv, "someone@spfok.test", ["fwd@example.test"], msg)
    [t] = net.sink("remote1").wait(1, msgid, tambo=aenv)
    assert HOSTNAME in " ".join(results_of(t.data)), results_of(t.data)
