"""DMARC-safe forwarding (issue 18 §1, SPEC §3 `forward_from_rewrite`, §8): a forwarded
message whose DMARC pass at tambo rested on SPF alone, from a domain asking `p=quarantine` or
`p=reject`, leaves with a From: of the forwarding domain, the author in Reply-To: and
X-Original-From:, DKIM-signed by the forwarding domain (checked with dkimpy); one whose own
aligned DKIM signature verifies leaves byte for byte. Records: peers.INBOUND_AUTH_TXT.
"""

from __future__ import annotations

import email.utils

import dkim
import pytest

from helpers import header_values as field, make_message
from peers import SENDER_DKIM_SELECTOR, install_dkim_keys, send_mx, wait_log_lines

SIGNED = [b"from", b"to", b"subject", b"message-id", b"date"]


@pytest.fixture
def fenv(renv, net):
    install_dkim_keys(renv, net)
    renv.write_config(srs_secret="dmarc-forwarding-srs-secret")
    renv.write_aliases("fwd: carol@remote1.test\n")
    return renv


def forward(fenv, net, sender: str, message: bytes, msgid: str) -> bytes:
    send_mx(fenv, sender, ["fwd@example.test"], message)
    [t] = net.sink("remote1").wait(1, msgid, tambo=fenv)
    return t.data


@pytest.mark.parametrize("domain", ["spfreject.test", "spfquar.test"])
def test_spf_only_pass_under_reject_or_quarantine_gets_a_safe_from(fenv, net, domain):
    fenv.start()
    author = f"Bob Example <bob@{domain}>"
    msg, msgid = make_message(sender=f"bob@{domain}", to="fwd@example.test")
    msg = msg.replace(f"From: bob@{domain}".encode(), f"From: {author}".encode(), 1)
    assert f"From: {author}".encode() in msg
    data = forward(fenv, net, f"bob@{domain}", msg, msgid)
    [new_from] = field(data, "from")
    name, addr = email.utils.parseaddr(new_from)
    assert (name, addr) == ("Bob Example via example.test", "fwd@example.test"), new_from
    assert field(data, "reply-to") == [author]
    assert field(data, "x-original-from") == [author]
    # Signed by the forwarding domain, which is now the From: domain (aligned), and valid.
    sigs = [dict(p.strip().split("=", 1) for p in s.split(";") if "=" in p)
            for s in field(data, "dkim-signature")]
    assert {s["d"] for s in sigs} == {"example.test"}, sigs
    assert dkim.verify(data, dnsfunc=net.dns.dkim_dnsfunc()), "DKIM of the rewritten copy"
    # The body is untouched.
    assert data.endswith(msg.split(b"\r\n\r\n", 1)[1])
    wait_log_lines(fenv, "From: rewritten to <fwd@example.test>")


def test_aligned_dkim_keeps_the_message_byte_for_byte(fenv, net):
    fenv.start()
    # dkimreject.test: p=reject, SPF passes and its aligned DKIM signature verifies, and
    # will still verify after forwarding.
    msg, msgid = make_message(sender="news@dkimreject.test", to="fwd@example.test")
    sig = dkim.sign(msg, SENDER_DKIM_SELECTOR.encode(), b"dkimreject.test",
                    net.sender_key.private_pem, include_headers=SIGNED)
    data = forward(fenv, net, "news@dkimreject.test", sig + msg, msgid)
    assert data.endswith(sig + msg), "not forwarded byte for byte"
    assert field(data, "from") == ["news@dkimreject.test"]
    assert not field(data, "x-original-from")
    assert "From: rewritten" not in fenv.log()


@pytest.mark.parametrize("domain,setting", [("spfnone.test", "auto"),
                                            ("spfreject.test", "never")])
def test_no_rewrite_under_p_none_or_when_turned_off(fenv, net, domain, setting):
    fenv.write_config(forward_from_rewrite=setting)
    fenv.start()
    msg, msgid = make_message(sender=f"bob@{domain}", to="fwd@example.test")
    data = forward(fenv, net, f"bob@{domain}", msg, msgid)
    assert data.endswith(msg)
    assert field(data, "from") == [f"bob@{domain}"]
    assert "From: rewritten" not in fenv.log()
