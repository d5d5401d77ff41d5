"""Spam kept out before it is forwarded (issue 18 §3, SPEC §3 `dnsbl`): DNS blocklists asked
about each port 25 client, through the shared dnsmasq (peers.DNSBL_*), clients connecting
from other loopback addresses as clients elsewhere would.
"""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

import pytest

from helpers import SmtpConn, free_ports, make_message, port_open, wait_until
from peers import DNSBL_ZONE, running_spamd, wait_log_lines

ALICE = "alice@example.test"
# No server answers for this zone: dnsmasq refuses the query, as a broken zone would fail.
DEAD_ZONE = "dead.example"


def rcpt_reply(tambo, source: str) -> tuple[int, str]:
    """The reply to RCPT TO:<alice> of a port 25 client at `source`."""
    with SmtpConn(tambo.smtp_port, source=source) as c:
        c.ehlo("client.example")
        r = c.cmd("MAIL FROM:<someone@elsewhere.example>")
        assert r.code == 250, r
        r = c.cmd(f"RCPT TO:<{ALICE}>")
        c.cmd("QUIT")
        return r.code, r.text


def metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return r.read().decode()


def test_listed_client_is_refused_at_rcpt_naming_the_list(renv):
    [mport] = free_ports(1)
    renv.write_config(dnsbl=[DEAD_ZONE, DNSBL_ZONE], monitoring_listen=f"127.0.0.1:{mport}")
    renv.start()
    assert wait_until(lambda: port_open(mport), 10)
    code, text = rcpt_reply(renv, "127.0.0.2")
    assert code == 554, text
    assert text.startswith("5.7.1 Service unavailable; client [127.0.0.2] blocked using bl.test"), \
        text
    assert "Listed for tests see https://bl.test/q" in text, text
    [line] = wait_log_lines(renv, "to=<alice@example.test>", "code=554 status=5.7.1")
    assert "127.0.0.2" in line and "bl.test" in line, line
    wait_log_lines(renv, "dnsbl: 127.0.0.2 is listed in bl.test (127.0.0.2)")
    # The dead zone was asked, failed, and blocked nothing.
    wait_log_lines(renv, f"dnsbl {DEAD_ZONE}: no usable answer for 127.0.0.2")
    assert f'tambo_dnsbl_listed_total{{zone="{DNSBL_ZONE}"}} 1' in metrics(mport)

    # Not listed, or an error code instead of an answer: served as usual.
    assert rcpt_reply(renv, "127.0.0.1")[0] == 250
    code, text = rcpt_reply(renv, "127.0.0.3")
    assert code == 250, text
    wait_log_lines(renv, f"dnsbl {DNSBL_ZONE}: no usable answer for 127.0.0.3",
                   "127.255.255.254")
    # The whole message of an unlisted client goes through.
    msg, msgid = make_message(sender="someone@elsewhere.example", to=ALICE)
    with SmtpConn(renv.smtp_port, source="127.0.0.4") as c:
        c.ehlo("client.example")
        assert c.cmd("MAIL FROM:<someone@elsewhere.example>").code == 250
        assert c.cmd(f"RCPT TO:<{ALICE}>").code == 250
        assert c.data(msg).code == 250
    renv.wait_messages(1)


def test_relay_networks_are_not_checked(renv):
    renv.write_config(dnsbl=[DNSBL_ZONE], relay_networks=["127.0.0.2/32"])
    renv.start()
    code, text = rcpt_reply(renv, "127.0.0.2")
    assert code == 250, text
    assert "dnsbl" not in renv.log()


def test_without_zones_nothing_is_asked(renv):
    renv.start()
    assert rcpt_reply(renv, "127.0.0.2")[0] == 250
    assert "dnsbl" not in renv.log()


# ---- no backscatter (SPEC §8) -----------------------------------------------------------------

REFUSING = "carol@remote1.test"


def forward_and_fail(renv, net, sender: str, message: bytes) -> None:
    """Sends `message` from `sender` over port 25 to an alias whose outside target refuses it
    for good, and waits until tambo has given that recipient up."""
    from peers import send_mx
    net.sink("remote1").script.rcpt_replies[REFUSING] = "550 5.1.1 No such user here"
    send_mx(renv, sender, ["fwd@example.test"], message)
    wait_log_lines(renv, "event=failed", f"to=<{REFUSING}>")


def test_unauthenticated_sender_gets_no_bounce(renv, net):
    [mport] = free_ports(1)
    renv.write_config(monitoring_listen=f"127.0.0.1:{mport}")
    renv.write_aliases(f"fwd: {REFUSING}\n")
    renv.start()
    assert wait_until(lambda: port_open(mport), 10)
    # elsewhere.example publishes nothing: SPF none, no signature. Its sender may be forged.
    msg, _ = make_message(sender="victim@elsewhere.example", to="fwd@example.test")
    forward_and_fail(renv, net, "victim@elsewhere.example", msg)
    [line] = wait_log_lines(renv, "event=not-bounced", "to=<victim@elsewhere.example>")
    assert "not authenticated on arrival" in line, line
    assert "event=bounced" not in renv.log()
    assert "tambo_dsn_suppressed_total 1" in metrics(mport)


def test_sender_vouched_for_by_dkim_or_spf_gets_its_bounce(renv, net):
    import dkim
    renv.write_aliases(f"fwd: {REFUSING}\n")
    renv.start()
    # sender.test: SPF passes and its DKIM signature (d=sender.test) verifies, aligned with
    # the envelope sender: the DSN goes to it, through its MX (the sink). (The DKIM-only
    # case is a unit test of mailauth::inbound: senders_authenticated_for_bounces.)
    msg, _ = make_message(sender="bob@sender.test", to="fwd@example.test")
    signed = dkim.sign(msg, b"s1", b"sender.test", net.sender_key.private_pem,
                       include_headers=[b"from", b"to", b"subject", b"message-id", b"date"])
    forward_and_fail(renv, net, "bob@sender.test", signed + msg)
    wait_log_lines(renv, "event=bounced", "to=<bob@sender.test>")
    [dsn] = net.sink("sender").wait(1, "multipart/report", tambo=renv)
    assert dsn.mail_from == "" and dsn.rcpt_tos == ["bob@sender.test"]
    assert dsn.has(REFUSING) and dsn.has("550 5.1.1")
    # spfok.test: SPF passes for 127.0.0.1, nothing signed.
    msg, _ = make_message(sender="amy@spfok.test", to="fwd@example.test")
    forward_and_fail(renv, net, "amy@spfok.test", msg)
    wait_log_lines(renv, "event=bounced", "to=<amy@spfok.test>")
    assert "event=not-bounced" not in renv.log()


# ---- a destination's spam-rate replies ---------------------------------------------------------

GMAIL_RATE = ("421 4.7.28 Our system has detected an unusual rate of unsolicited mail "
              "originating from your IP address.")


def test_spam_rate_reply_is_logged_counted_and_holds_the_destination(renv, net):
    from peers import send_mx
    [mport] = free_ports(1)
    renv.write_config(monitoring_listen=f"127.0.0.1:{mport}")
    renv.write_aliases(f"fwd: {REFUSING}\n")
    sink = net.sink("remote1")
    sink.script.rcpt_replies[REFUSING] = GMAIL_RATE
    renv.start()
    assert wait_until(lambda: port_open(mport), 10)
    msg, _ = make_message(sender="someone@elsewhere.example", to="fwd@example.test")
    send_mx(renv, "someone@elsewhere.example", ["fwd@example.test"], msg)
    [line] = wait_log_lines(renv, "remote1.test refused our mail as spam or for its rate")
    assert "4.7.28" in line and "holding mail to remote1.test for 15 minutes" in line, line
    [deferred] = wait_log_lines(renv, "event=deferred", f"to=<{REFUSING}>")
    assert "retry_in=" in deferred
    retry_in = int(deferred.split("retry_in=")[1].split("s")[0])
    assert retry_in >= 14 * 60, f"the retry waits for the hold: {deferred}"
    text = metrics(mport)
    assert 'tambo_outbound_spam_replies_total{destination="remote1.test"} 1' in text, text

    # While held, more mail to that destination waits without a connection.
    connections = sink.connections
    msg2, _ = make_message(sender="other@elsewhere.example", to="fwd@example.test")
    send_mx(renv, "other@elsewhere.example", ["fwd@example.test"], msg2)
    lines = wait_log_lines(renv, "event=deferred", "held 15 more minute(s)")
    assert "refused our mail as spam" in lines[0], lines
    assert sink.connections == connections, sink.story()
    assert 'destination="remote1.test"} 1' in metrics(mport), "a hold is not a new refusal"


# ---- SpamAssassin before the 250: contrib/spamassassin/post-data against Debian's spamd ------

CONTRIB_HOOK = Path(__file__).resolve().parents[2] / "contrib" / "spamassassin" / "post-data"
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


@pytest.fixture(scope="module")
def spamd(tmp_path_factory):
    """Debian's spamd on a free loopback port, local tests only (no network rules)."""
    [port] = free_ports(1)
    with running_spamd(tmp_path_factory.mktemp("spamd"), port):
        yield port


def install_hook(tambo, spamd_port: int) -> None:
    """The contrib hook as a user installs it, its one setting edited for the test's port."""
    text = CONTRIB_HOOK.read_text()
    assert "SPAMD_PORT=783" in text
    hook = tambo.dir / "hooks" / "post-data"
    hook.parent.mkdir(exist_ok=True)
    hook.write_text(text.replace("SPAMD_PORT=783", f"SPAMD_PORT={spamd_port}"))
    hook.chmod(0o755)


def end_of_data(tambo, sender: str, rcpt: str, message: bytes):
    with SmtpConn(tambo.smtp_port) as c:
        c.ehlo("client.example")
        assert c.cmd(f"MAIL FROM:<{sender}>").code == 250
        assert c.cmd(f"RCPT TO:<{rcpt}>").code == 250
        return c.data(message)


def test_spamassassin_refuses_spam_before_it_is_forwarded(renv, net, spamd):
    renv.write_aliases(f"fwd: {REFUSING}\n")
    install_hook(renv, spamd)
    renv.start()
    spam, spam_id = make_message(sender="spammer@elsewhere.example", to="fwd@example.test",
                                 body=f"Buy now.\r\n{GTUBE}\r\n")
    r = end_of_data(renv, "spammer@elsewhere.example", "fwd@example.test", spam)
    assert r.code == 554 and r.enhanced == "5.7.1", r
    assert "Message refused as spam (SpamAssassin score" in r.text, r
    ham, ham_id = make_message(sender="friend@elsewhere.example", to="fwd@example.test",
                               body="See you at noon.\r\n")
    r = end_of_data(renv, "friend@elsewhere.example", "fwd@example.test", ham)
    assert r.code == 250, r
    [t] = net.sink("remote1").wait(1, ham_id, tambo=renv)
    assert re.search(rb"^X-Spam-Score: -?[0-9.]+/5\.0\r$", t.data, re.M), t.data[:800]
    assert not net.sink("remote1").received(spam_id), "spam was forwarded"
    assert "event=rejected" in renv.log() and "event=bounced" not in renv.log()


def test_spamassassin_down_means_try_again_later(renv, spamd):
    [nobody] = free_ports(1)
    install_hook(renv, nobody)
    renv.start()
    msg, _ = make_message(sender="friend@elsewhere.example", to=ALICE)
    r = end_of_data(renv, "friend@elsewhere.example", ALICE, msg)
    assert r.code == 451, r
    assert "Spam filter unavailable, please try again later" in r.text, r
    assert renv.messages() == []


def test_local_delivery_failures_still_bounce(renv, net):
    """Only forwarded copies are kept from unauthenticated senders (SPEC §8); a pipe alias
    that fails for good is bounced as before (to a sender whose domain has an MX)."""
    renv.write_aliases("piped: | /bin/false\n")
    renv.start()
    msg, _ = make_message(sender="victim@nomx.test", to="piped@example.test")
    from peers import send_mx
    send_mx(renv, "victim@nomx.test", ["piped@example.test"], msg)
    wait_log_lines(renv, "event=bounced", "to=<victim@nomx.test>")
    assert "event=not-bounced" not in renv.log()
