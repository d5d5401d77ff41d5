"""DKIM (issue 4 §6, SPEC §8): mail our users submit leaves signed with every key of the
domain (RSA and Ed25519), verified by dkimpy against the TXT records in dnsmasq; forwarded
mail keeps its originator's signature valid (only trace headers prepended).
"""

from __future__ import annotations

import re

import dkim
import pytest

from helpers import header_block, make_message
from peers import (ALICE, BOB_OUTSIDE, SENDER_DKIM_SELECTOR,
                   install_dkim_keys, send_mx, submit)

# Bodies that have tripped DKIM implementations: trailing blank and whitespace-only lines,
# 8-bit text, a dot-stuffed line, a long line.
BODIES = {
    "plain": "Hello.\r\n",
    "trailing-whitespace-lines": "Hello.\r\n  \r\n\t\r\n\r\n",
    "whitespace-in-lines": "Hello.  \r\n \t indented\t\tand  spaced \t\r\n \t\r\nend\t\r\n",
    "eightbit-dots-long": "Grüße.\r\n.dot line\r\n" + "x" * 900 + "\r\nend\r\n",
}


@pytest.fixture
def denv(renv, net):
    install_dkim_keys(renv, net)
    renv.write_config(srs_secret="dkim-tests-srs-secret")
    renv.write_aliases("fwd: carol@remote1.test\n")
    return renv


def signatures(data: bytes) -> list[dict[str, str]]:
    """The tags of each DKIM-Signature header, in order."""
    out = []
    for f in header_block(data):
        name, _, value = f.partition(":")
        if name.strip().lower() == "dkim-signature":
            tags = {}
            for part in value.split(";"):
                k, eq, v = part.partition("=")
                if eq:
                    tags[k.strip()] = re.sub(r"\s+", "", v)
            out.append(tags)
    return out


def verify_all(data: bytes, dnsfunc) -> list[bool]:
    d = dkim.DKIM(data)
    return [bool(d.verify(idx=i, dnsfunc=dnsfunc)) for i in range(len(signatures(data)))]


@pytest.mark.parametrize("body", list(BODIES))
def test_submitted_mail_signed_with_every_key(denv, net, body):
    denv.start()
    msg, msgid = make_message(sender=ALICE, to="carol@remote1.test", body=BODIES[body])
    submit(denv, ["carol@remote1.test"], msg)
    [t] = net.sink("remote1").wait(1, msgid, tambo=denv)
    sigs = signatures(t.data)
    assert len(sigs) == 2, f"expected two DKIM-Signature headers, got {len(sigs)}: {sigs}"
    by_selector = {s.get("s"): s for s in sigs}
    assert set(by_selector) == {"sel1", "sel2"}, f"selectors {list(by_selector)}"
    for s in sigs:
        assert s.get("d") == "example.test", s
        assert s.get("c") == "relaxed/relaxed", f"c={s.get('c')!r}"  # SPEC §8
    assert by_selector["sel1"].get("a") == "rsa-sha256", by_selector["sel1"]
    assert by_selector["sel2"].get("a") == "ed25519-sha256", by_selector["sel2"]
    results = verify_all(t.data, net.dns.dkim_dnsfunc())
    assert results == [True, True], \
        f"dkimpy verification per signature: {results}\n{t.data.decode(errors='replace')[:3000]}"


def test_submission_tls_port_signed_too(denv, net):
    denv.start()
    msg, msgid = make_message(sender=ALICE, to="carol@remote1.test")
    submit(denv, ["carol@remote1.test"], msg, implicit_tls=True)
    [t] = net.sink("remote1").wait(1, msgid, tambo=denv)
    assert len(signatures(t.data)) == 2
    assert verify_all(t.data, net.dns.dkim_dnsfunc()) == [True, True]


def test_own_user_through_forwarding_alias_signed(denv, net):
    denv.start()
    msg, msgid = make_message(sender=ALICE, to="fwd@example.test")
    submit(denv, ["fwd@example.test"], msg)
    [t] = net.sink("remote1").wait(1, msgid, tambo=denv)
    assert {s.get("s") for s in signatures(t.data)} == {"sel1", "sel2"}
    assert verify_all(t.data, net.dns.dkim_dnsfunc()) == [True, True]


@pytest.mark.parametrize("canon", [(b"relaxed", b"relaxed"), (b"relaxed", b"simple"),
                                   (b"simple", b"simple")],
                         ids=["relaxed-relaxed", "relaxed-simple", "simple-simple"])
def test_forwarded_mail_keeps_originator_signature(denv, net, canon):
    denv.start()
    msg, msgid = make_message(sender=BOB_OUTSIDE, to="fwd@example.test",
                              body="Forward me untouched.\r\n  trailing spaces  \r\n\r\n")
    sig = dkim.sign(msg, SENDER_DKIM_SELECTOR.encode(), b"sender.test",
                    net.sender_key.private_pem, canonicalize=canon,
                    include_headers=[b"from", b"to", b"subject", b"message-id", b"date",
                                     b"x-test-marker"])
    signed = sig + msg
    assert dkim.verify(signed, dnsfunc=net.dns.dkim_dnsfunc()), "the test's own signature fails"
    send_mx(denv, BOB_OUTSIDE, ["fwd@example.test"], signed)
    [t] = net.sink("remote1").wait(1, msgid, tambo=denv)
    assert t.data.endswith(signed), \
        f"the forwarded message does not end with the original bytes:\n{t.data[-800:]!r}"
    d = dkim.DKIM(t.data)
    originator = [i for i, s in enumerate(signatures(t.data)) if s.get("d") == "sender.test"]
    assert len(originator) == 1, f"signatures: {signatures(t.data)}"
    assert d.verify(idx=originator[0], dnsfunc=net.dns.dkim_dnsfunc()), \
        f"sender.test's signature no longer verifies after forwarding:\n{t.data[:1500]!r}"
