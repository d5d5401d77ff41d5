"""Forwarding through aliases (issue 4 §5, SPEC §8): SRS for outside senders, cross-checked
with Debian's postsrsd (same secret, same domain); bounces to SRS addresses; forged and
expired SRS addresses refused; our own users keep their sender; byte-for-byte forwarding;
an alias of a user's own name forwards its mail while the user still sends (SPEC §6, §7).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time

import pytest

from helpers import PASSWORD, SmtpConn, assert_reply, make_message, queue_id, send_raw
from peers import (ALICE, BOB_OUTSIDE, SRS_SECRET, PostSrsd, send_mx, submit, wait_log_lines,
                   wait_queue_empty)

SRS_RE = re.compile(r"^SRS0=([A-Za-z0-9+/]{4})=([A-Z2-7]{2})=sender\.test=bob@example\.test$")
B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
TRACE_HEADERS = {"received", "arc-seal", "arc-message-signature", "arc-authentication-results",
                 "authentication-results", "received-spf"}


@pytest.fixture(scope="module")
def postsrsd(tmp_path_factory):
    p = PostSrsd(tmp_path_factory.mktemp("postsrsd"), SRS_SECRET)
    p.start()
    yield p
    p.stop()


@pytest.fixture
def fenv(renv):
    renv.write_config(srs_secret=SRS_SECRET)
    renv.write_aliases("fwd: carol@remote1.test\nboth: alice, carol@remote1.test\n")
    return renv


def srs_address(user: str, domain: str, day: int, secret: str = SRS_SECRET) -> str:
    """libsrs2's SRS0 (as postsrsd 1.x): HMAC-SHA1 over the lower-cased stamp, domain and
    user, base64, 4 characters; the stamp is the day number mod 1024 in two base32 digits."""
    tt = B32[(day >> 5) & 31] + B32[day & 31]
    digest = hmac.new(secret.encode(), (tt + domain + user).lower().encode(), hashlib.sha1)
    hh = base64.b64encode(digest.digest()).decode()[:4]
    return f"SRS0={hh}={tt}={domain}={user}@example.test"


def today() -> int:
    return int(time.time()) // 86400


def prepended(data: bytes, original: bytes) -> bytes:
    assert data.endswith(original), \
        f"the forwarded message does not end with the original bytes:\n{data[-600:]!r}"
    return data[:len(data) - len(original)]


def trace_header_names(block: bytes) -> list[str]:
    names = []
    for line in block.split(b"\r\n"):
        if not line or line[:1] in (b" ", b"\t"):
            continue
        names.append(line.split(b":", 1)[0].decode(errors="replace").lower())
    return names


def test_our_srs_matches_postsrsd(postsrsd):
    # Sanity of the test's own SRS code, so the expired-address test below means something.
    assert postsrsd.forward(BOB_OUTSIDE) == "200 " + srs_address("bob", "sender.test", today())


@pytest.mark.parametrize("sender", [BOB_OUTSIDE, "Bob.Smith+Tag@sender.test"])
def test_outside_sender_forwarded_with_srs(fenv, net, postsrsd, sender):
    fenv.start()
    msg, msgid = make_message(sender=sender, to="fwd@example.test")
    qid = send_mx(fenv, sender, ["fwd@example.test"], msg)
    [t] = net.sink("remote1").wait(1, msgid, tambo=fenv)
    assert t.rcpt_tos == ["carol@remote1.test"], t.rcpt_tos
    user = re.escape(sender.split("@")[0])
    assert re.match(rf"^SRS0=[A-Za-z0-9+/]{{4}}=[A-Z2-7]{{2}}=sender\.test={user}@example\.test$",
                    t.mail_from), \
        f"MAIL FROM:<{t.mail_from}> is not SRS0=HHHH=TT=sender.test={sender.split('@')[0]}@example.test"
    assert postsrsd.reverse(t.mail_from) == f"200 {sender}", \
        f"postsrsd does not reverse {t.mail_from}: {postsrsd.reverse(t.mail_from)!r}"
    assert postsrsd.forward(sender) == f"200 {t.mail_from}", \
        f"postsrsd forwards {sender} as {postsrsd.forward(sender)!r}, tambo as {t.mail_from}"
    # Byte for byte: only trace headers in front of the original.
    names = trace_header_names(prepended(t.data, msg))
    assert names and set(names) <= TRACE_HEADERS, f"prepended headers: {names}"
    wait_log_lines(fenv, "event=delivered", f"id={qid}", "to=<carol@remote1.test>")
    wait_queue_empty(fenv)


def test_srs0_sender_reforwarded_as_srs1(fenv, net, postsrsd):
    # Mail that another forwarder already rewrote: libsrs2 wraps it as SRS1.
    sender = "SRS0=abcd=AB=orig.test=someone@other.test"
    fenv.start()
    msg, msgid = make_message(sender=sender, to="fwd@example.test")
    send_mx(fenv, sender, ["fwd@example.test"], msg)
    [t] = net.sink("remote1").wait(1, msgid, tambo=fenv)
    assert t.mail_from.startswith("SRS1="), f"MAIL FROM:<{t.mail_from}> is not SRS1"
    assert postsrsd.forward(sender) == f"200 {t.mail_from}", \
        f"postsrsd forwards {sender} as {postsrsd.forward(sender)!r}, tambo as {t.mail_from}"
    assert postsrsd.reverse(t.mail_from) == f"200 {sender}", postsrsd.reverse(t.mail_from)


def test_alias_to_local_and_outside(fenv, net):
    fenv.start()
    msg, msgid = make_message(sender=BOB_OUTSIDE, to="both@example.test")
    send_mx(fenv, BOB_OUTSIDE, ["both@example.test"], msg)
    [t] = net.sink("remote1").wait(1, msgid, tambo=fenv)
    assert SRS_RE.match(t.mail_from), t.mail_from
    assert msgid.encode() in fenv.wait_messages(1)[0]
    wait_queue_empty(fenv)


def test_bounce_to_srs_address_returned_to_original_sender(fenv, net, postsrsd):
    fenv.start()
    srs = postsrsd.forward(BOB_OUTSIDE).split(" ", 1)[1]
    bounce, msgid = make_message(sender="MAILER-DAEMON@remote1.test", to=srs,
                                 subject="Undelivered Mail Returned to Sender")
    with SmtpConn(fenv.smtp_port) as c:
        c.ehlo()
        assert_reply(c.cmd("MAIL FROM:<>"), 250, what="MAIL FROM:<>")
        assert_reply(c.cmd(f"RCPT TO:<{srs}>"), 250, what=f"RCPT TO:<{srs}>")
        r = c.data(bounce)
        assert r.code == 250, f"DATA: {r}"
    [t] = net.sink("sender").wait(1, msgid, deadline=15, tambo=fenv)
    assert t.rcpt_tos == [BOB_OUTSIDE], f"the bounce went to {t.rcpt_tos}, not {BOB_OUTSIDE}"
    assert t.mail_from == "", f"the returned bounce has MAIL FROM:<{t.mail_from}>, not <>"
    assert t.data.endswith(bounce), "the bounce was not passed on byte for byte"
    wait_queue_empty(fenv)


@pytest.mark.parametrize("case", ["forged-hash", "expired", "wrong-domain-in-hash"])
def test_bad_srs_address_refused(fenv, postsrsd, case):
    fenv.start()
    good = postsrsd.forward(BOB_OUTSIDE).split(" ", 1)[1]
    if case == "forged-hash":
        hh = good.split("=")[1]
        # Not just a change of case: libsrs2 compares hashes case-insensitively.
        forged_hh = hh[:-1] + ("Q" if hh[-1].lower() != "q" else "R")
        addr = good.replace(f"SRS0={hh}=", f"SRS0={forged_hh}=", 1)
    elif case == "expired":
        addr = srs_address("bob", "sender.test", today() - 30)
    else:  # a valid hash of another address, with the domain swapped
        addr = good.replace("=sender.test=", "=other.test=")
    assert postsrsd.reverse(addr).startswith("500"), \
        f"postsrsd itself accepts {addr} ({case}): {postsrsd.reverse(addr)}"
    with SmtpConn(fenv.smtp_port) as c:
        c.ehlo()
        assert_reply(c.cmd("MAIL FROM:<>"), 250)
        assert_reply(c.cmd(f"RCPT TO:<{addr}>"), 550, "5.7.1", f"RCPT TO:<{addr}> ({case})")


def test_own_user_forwarded_keeps_sender(fenv, net):
    fenv.start()
    msg, msgid = make_message(sender=ALICE, to="fwd@example.test")
    submit(fenv, ["fwd@example.test"], msg)
    [t] = net.sink("remote1").wait(1, msgid, tambo=fenv)
    assert t.mail_from == ALICE, f"our own user's mail was rewritten to <{t.mail_from}>"
    assert t.rcpt_tos == ["carol@remote1.test"]


def test_own_user_relayed_keeps_sender(fenv, net):
    fenv.start()
    msg, msgid = make_message(sender=ALICE, to="carol@remote1.test")
    submit(fenv, ["carol@remote1.test"], msg, implicit_tls=True)
    [t] = net.sink("remote1").wait(1, msgid, tambo=fenv)
    assert t.mail_from == ALICE, t.mail_from


# ---- an alias of a user's own name (SPEC §6, §7) -------------------------------------------

ME = "me@example.test"
ME_REMOTE = "me@remote1.test"


@pytest.fixture
def menv(renv):
    """User `me` (with a password) beside alice; the aliases are up to the test."""
    renv.write_config(srs_secret=SRS_SECRET)
    renv.user_add(ME)
    return renv


def resolved(tambo, address: str) -> list[str]:
    """`tambo util aliases-resolve`: one final recipient a line."""
    r = tambo.cli("util", "aliases-resolve", address)
    assert r.returncode == 0, f"aliases-resolve {address}: exit {r.returncode}, stderr {r.stderr!r}"
    return [l.strip() for l in r.stdout.splitlines() if l.strip()]


def receive_for_me(menv, net) -> tuple[str, str]:
    """Mail from outside to me@ over port 25; returns (queue id, Message-ID) once the forward
    reached the sink and the queue is empty."""
    msg, msgid = make_message(sender=BOB_OUTSIDE, to=ME)
    qid = send_mx(menv, BOB_OUTSIDE, [ME], msg)
    [t] = net.sink("remote1").wait(1, msgid, tambo=menv)
    assert t.rcpt_tos == [ME_REMOTE], t.rcpt_tos
    assert SRS_RE.match(t.mail_from), f"the forward is not SRS-rewritten: <{t.mail_from}>"
    wait_log_lines(menv, "event=delivered", f"id={qid}", f"to=<{ME_REMOTE}>")
    wait_queue_empty(menv)
    return qid, msgid


def test_alias_of_own_name_forwards_and_user_still_sends(menv, net):
    # The "send mail as" set-up: me@ logs in and sends here, its mail goes elsewhere.
    menv.write_aliases(f"me: {ME_REMOTE}\n")
    assert resolved(menv, ME) == [f"forward {ME_REMOTE}"]
    assert resolved(menv, "M.e+tag@Example.Test") == [f"forward {ME_REMOTE}"]
    menv.start()
    receive_for_me(menv, net)
    assert menv.messages("me") == [], "me's own Maildir got the mail its alias forwards"

    # me still logs in on submission and sends as itself, in any form of its address.
    out, out_id = make_message(sender=ME, to="carol@remote1.test")
    r = send_raw(menv.submission_port, ME, ["carol@remote1.test"], out, starttls=True,
                 login=(ME, PASSWORD))
    qid = queue_id(r)
    [t] = net.sink("remote1").wait(1, out_id, tambo=menv)
    assert (t.mail_from, t.rcpt_tos) == (ME, ["carol@remote1.test"]), (t.mail_from, t.rcpt_tos)
    wait_log_lines(menv, "event=delivered", f"id={qid}", "to=<carol@remote1.test>")
    with SmtpConn(menv.submission_port) as c:
        c.ehlo()
        c.starttls()
        c.ehlo()
        assert_reply(c.auth_plain(ME, PASSWORD), 235, "2.7.0", "AUTH as me")
        assert_reply(c.cmd("MAIL FROM:<M.e+list@Example.Test>"), 250, what="me as M.e+list@")
    # The alias does not make me@ anyone else's sender.
    with SmtpConn(menv.submission_port) as c:
        c.ehlo()
        c.starttls()
        c.ehlo()
        assert_reply(c.auth_plain(ALICE, PASSWORD), 235, "2.7.0", "AUTH as alice")
        assert_reply(c.cmd(f"MAIL FROM:<{ME}>"), 553, "5.7.1", "alice sending as me@")


def test_alias_of_own_name_keeping_a_copy(menv, net):
    # A target naming the alias itself is the user's mailbox, not a loop.
    menv.write_aliases(f"me: me, {ME_REMOTE}\n")
    assert resolved(menv, ME) == [f"mailbox {ME}", f"forward {ME_REMOTE}"]
    menv.start()
    _, msgid = receive_for_me(menv, net)
    [local] = menv.wait_messages(1, "me")
    assert msgid.encode() in local
    assert "alias loop" not in menv.log(), menv.log()


def test_catch_all_leaves_existing_user_alone(menv, net):
    menv.write_aliases("*: x@remote1.test\n")
    assert resolved(menv, ME) == [f"mailbox {ME}"]
    assert resolved(menv, "nobody@example.test") == ["forward x@remote1.test"]
    menv.start()
    mine, mine_id = make_message(sender=BOB_OUTSIDE, to=ME)
    send_mx(menv, BOB_OUTSIDE, [ME], mine)
    other, other_id = make_message(sender=BOB_OUTSIDE, to="nobody@example.test")
    send_mx(menv, BOB_OUTSIDE, ["nobody@example.test"], other)
    assert mine_id.encode() in menv.wait_messages(1, "me")[0]
    # The catch-all works (the control), and it took nothing of me's.
    [t] = net.sink("remote1").wait(1, other_id, tambo=menv)
    assert t.rcpt_tos == ["x@remote1.test"], t.rcpt_tos
    wait_queue_empty(menv)
    assert net.sink("remote1").received(mine_id) == [], net.sink("remote1").story()
