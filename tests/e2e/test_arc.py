"""ARC (issue 5 §2, SPEC §8, RFC 8617): mail received on port 25 and forwarded by an alias to an
outside address is sealed with the forwarding domain's DKIM key (RSA), carrying our inbound
Authentication-Results. dkimpy's `arc_verify` (what `arcverify` runs) gives cv=pass, against
the keys in dnsmasq; the originator's DKIM signature still verifies; an existing chain is
continued at the next instance.
"""

from __future__ import annotations

import re

import dkim
import pytest

from helpers import HOSTNAME, header_block, make_message
from peers import (BOB_OUTSIDE, SENDER_DKIM_SELECTOR, install_dkim_keys,
                   send_mx, wait_log_lines)

SIGNED = [b"from", b"to", b"subject", b"message-id", b"date"]


@pytest.fixture
def aenv(renv, net):
    """example.test with its DKIM keys (sel1 RSA, sel2 Ed25519) and an alias to remote1."""
    install_dkim_keys(renv, net)
    renv.write_config(srs_secret="arc-tests-srs-secret")
    renv.write_aliases("fwd: carol@remote1.test\n")
    return renv


def originator_signed(net, body: str = "Forward me, sealed.\r\n") -> tuple[bytes, str]:
    """A message from bob@sender.test, DKIM-signed by dkimpy with sender.test's key."""
    msg, msgid = make_message(sender=BOB_OUTSIDE, to="fwd@example.test", body=body)
    sig = dkim.sign(msg, SENDER_DKIM_SELECTOR.encode(), b"sender.test",
                    net.sender_key.private_pem, include_headers=SIGNED)
    signed = sig + msg
    assert dkim.verify(signed, dnsfunc=net.dns.dkim_dnsfunc()), "the test's own signature fails"
    return signed, msgid


def arc_fields(data: bytes) -> list[tuple[str, dict[str, str]]]:
    """(name, tags) of each ARC header, in order; tags with whitespace removed."""
    out = []
    for f in header_block(data):
        name, _, value = f.partition(":")
        if name.strip().lower().startswith("arc-"):
            tags = {}
            for part in value.split(";"):
                k, eq, v = part.partition("=")
                if eq:
                    tags[k.strip()] = re.sub(r"\s+", "", v)
            out.append((name.strip(), tags))
    return out


def arc_verify(data: bytes, net) -> tuple[bytes | None, str]:
    cv, _results, reason = dkim.arc_verify(data, dnsfunc=net.dns.dkim_dnsfunc())
    return cv, reason


def originator_verifies(data: bytes, net) -> bool:
    d = dkim.DKIM(data)
    sigs = [f for f in header_block(data) if f.lower().startswith("dkim-signature:")]
    idx = [i for i, f in enumerate(sigs) if re.search(r"\bd=sender\.test;", f)]
    assert len(idx) == 1, sigs
    return bool(d.verify(idx=idx[0], dnsfunc=net.dns.dkim_dnsfunc()))


def test_forwarded_mail_is_sealed(aenv, net):
    aenv.start()
    signed, msgid = originator_signed(net)
    send_mx(aenv, BOB_OUTSIDE, ["fwd@example.test"], signed)
    [t] = net.sink("remote1").wait(1, msgid, tambo=aenv)
    text = t.data.decode(errors="replace")
    fields = arc_fields(t.data)
    names = [n.lower() for n, _ in fields]
    assert names == ["arc-seal", "arc-message-signature", "arc-authentication-results"], text[:3000]
    seal, ams, _aar = (tags for _, tags in fields)
    assert seal["i"] == ams["i"] == "1" and seal["cv"] == "none", fields
    # The RSA key: dkimpy has no Ed25519 for ARC.
    assert (seal["d"], seal["s"], seal["a"]) == ("example.test", "sel1", "rsa-sha256"), seal
    aar = [f for f in header_block(t.data) if f.lower().startswith("arc-authentication-results:")]
    unfolded = re.sub(r"\s+", " ", aar[0])
    assert unfolded.startswith(f"ARC-Authentication-Results: i=1; {HOSTNAME};"), unfolded
    assert "spf=" in unfolded and "dkim=pass" in unfolded, unfolded
    cv, reason = arc_verify(t.data, net)
    assert cv == b"pass", f"arc_verify: {cv} {reason}\n{text[:3000]}"
    assert originator_verifies(t.data, net), text[:3000]
    assert t.data.endswith(signed), "the message was not forwarded byte for byte"


def test_existing_chain_is_continued(aenv, net):
    aenv.start()
    signed, msgid = originator_signed(net)
    # sender.test's own MTA sealed it first (i=1), as a mailing list would.
    with_ar = b"Authentication-Results: mx.sender.test; dkim=pass header.d=sender.test\r\n" + signed
    first = dkim.arc_sign(with_ar, SENDER_DKIM_SELECTOR.encode(), b"sender.test",
                          net.sender_key.private_pem, b"mx.sender.test")
    assert first, "dkimpy did not seal the test message"
    sealed = b"".join(first) + with_ar
    cv, reason = arc_verify(sealed, net)
    assert cv == b"pass", f"the test's own seal: {cv} {reason}"
    send_mx(aenv, BOB_OUTSIDE, ["fwd@example.test"], sealed)
    [t] = net.sink("remote1").wait(1, msgid, tambo=aenv)
    text = t.data.decode(errors="replace")
    seals = [tags for name, tags in arc_fields(t.data) if name.lower() == "arc-seal"]
    assert [(s["i"], s["cv"], s["d"]) for s in seals] == \
        [("2", "pass", "example.test"), ("1", "none", "sender.test")], text[:4000]
    cv, reason = arc_verify(t.data, net)
    assert cv == b"pass", f"arc_verify: {cv} {reason}\n{text[:4000]}"
    assert originator_verifies(t.data, net)


def test_broken_chain_is_sealed_as_failed(aenv, net):
    aenv.start()
    signed, msgid = originator_signed(net, body="Original body.\r\n")
    with_ar = b"Authentication-Results: mx.sender.test; dkim=pass header.d=sender.test\r\n" + signed
    first = dkim.arc_sign(with_ar, SENDER_DKIM_SELECTOR.encode(), b"sender.test",
                          net.sender_key.private_pem, b"mx.sender.test")
    broken = (b"".join(first) + with_ar).replace(b"Original body.", b"Changed body.")
    send_mx(aenv, BOB_OUTSIDE, ["fwd@example.test"], broken)
    [t] = net.sink("remote1").wait(1, msgid, tambo=aenv)
    seals = [tags for name, tags in arc_fields(t.data) if name.lower() == "arc-seal"]
    assert [(s["i"], s["cv"]) for s in seals] == [("2", "fail"), ("1", "none")], seals
    cv, _reason = arc_verify(t.data, net)
    assert cv != b"pass"


def test_arc_seal_off(aenv, net):
    aenv.write_config(arc_seal=False)
    aenv.start()
    signed, msgid = originator_signed(net)
    send_mx(aenv, BOB_OUTSIDE, ["fwd@example.test"], signed)
    [t] = net.sink("remote1").wait(1, msgid, tambo=aenv)
    assert arc_fields(t.data) == []
    assert originator_verifies(t.data, net)


def test_domain_without_key_forwards_unsealed(renv, net):
    renv.write_config(srs_secret="arc-tests-srs-secret")
    renv.write_aliases("fwd: carol@remote1.test\n")
    renv.start()
    for n in range(2):
        signed, msgid = originator_signed(net, body=f"Message {n}.\r\n")
        send_mx(renv, BOB_OUTSIDE, ["fwd@example.test"], signed)
        [t] = net.sink("remote1").wait(1, msgid, tambo=renv)
        assert arc_fields(t.data) == []
        assert originator_verifies(t.data, net)
    lines = wait_log_lines(renv, "example.test has no DKIM key")
    assert len(lines) == 1, lines


def test_submitted_mail_is_not_sealed(aenv, net):
    from peers import ALICE, submit
    aenv.start()
    msg, msgid = make_message(sender=ALICE, to="fwd@example.test")
    submit(aenv, ["fwd@example.test"], msg)
    [t] = net.sink("remote1").wait(1, msgid, tambo=aenv)
    assert arc_fields(t.data) == [], "submission mail has no inbound results to carry"
