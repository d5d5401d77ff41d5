"""Local delivery into Maildir, address forms, aliases, and the mail log (SPEC §5–§8, §11)."""

from __future__ import annotations

import re
import smtplib
import time

import pytest

from helpers import (HOSTNAME, SmtpConn, assert_reply, header_block, make_message, mode,
                     queue_id, send_raw, wait_until)

SENDER = "sender@remote.example"
ALICE = "alice@example.test"


def smtplib_send(port: int, sender: str, rcpts: list[str], msg: bytes) -> tuple[int, str]:
    """Sends with smtplib on port 25; returns the reply to DATA."""
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.example", timeout=10) as s:
        s.ehlo()
        code, text = s.mail(sender)
        assert code == 250, (code, text)
        for r in rcpts:
            code, text = s.rcpt(r)
            assert code == 250, (r, code, text)
        return s.data(msg)


def test_local_delivery_maildir_format(server):
    msg, msgid = make_message(body="First line.\r\n.dot line\r\nLast line.\r\n")
    code, text = smtplib_send(server.smtp_port, SENDER, [ALICE], msg)
    assert code == 250, text
    [delivered] = server.wait_messages(1)
    lines = delivered.split(b"\n")
    assert b"\r" not in delivered, "Maildir file has CR characters (lines must end with LF)"
    assert lines[0] == f"Return-Path: <{SENDER}>".encode(), lines[0]
    assert lines[1] == f"Delivered-To: {ALICE}".encode(), lines[1]
    assert msgid.encode() in delivered
    body = delivered.split(b"\n\n", 1)[1]
    assert body == b"First line.\n.dot line\nLast line.\n", f"body changed: {body!r}"


def test_received_header_on_top(server):
    msg, _ = make_message()
    queue_id(send_raw(server.smtp_port, SENDER, [ALICE], msg))
    [delivered] = server.wait_messages(1)
    fields = header_block(delivered)
    marker = fields.index("X-Test-Marker: first-original-header")
    ours = [i for i, f in enumerate(fields[:marker])
            if f.lower().startswith("received:") and HOSTNAME in f]
    assert ours, f"no Received header naming {HOSTNAME} above the message's headers: {fields[:marker]}"


def test_maildir_modes(server):
    msg, _ = make_message()
    queue_id(send_raw(server.smtp_port, SENDER, [ALICE], msg))
    server.wait_messages(1)
    md = server.maildir()
    for d in [md, md / "new", md / "cur", md / "tmp"]:
        assert d.is_dir(), f"{d} missing"
        assert mode(d) == 0o700, f"{d} has mode {mode(d):o}"
    for f in (md / "new").iterdir():
        assert mode(f) == 0o600, f"{f} has mode {mode(f):o}"


@pytest.mark.parametrize("rcpt", ["ALICE@EXAMPLE.TEST", "a.lice@example.test", "alice+tag@example.test",
                                  "Alice+Tag.Two@Example.Test"])
def test_address_forms_reach_alice(server, rcpt):
    msg, msgid = make_message(to=rcpt)
    queue_id(send_raw(server.smtp_port, SENDER, [rcpt], msg))
    [delivered] = server.wait_messages(1)
    assert msgid.encode() in delivered
    assert delivered.split(b"\n")[1] == f"Delivered-To: {ALICE}".encode(), delivered[:200]


def test_two_local_recipients_one_copy_each(env):
    env.user_add("bob@example.test")
    env.start()
    msg, msgid = make_message()
    queue_id(send_raw(env.smtp_port, SENDER, [ALICE, "bob@example.test"], msg))
    assert env.wait_messages(1, "alice")[0].count(msgid.encode()) == 1
    [b] = env.wait_messages(1, "bob")
    assert msgid.encode() in b
    assert b.split(b"\n")[1] == b"Delivered-To: bob@example.test"
    time.sleep(0.5)
    assert len(env.messages("alice")) == 1 and len(env.messages("bob")) == 1


def test_unwritable_mailbox_queues_not_loses(env):
    """Local mail is delivered before the 250 (queue::direct). When one mailbox cannot be
    written, the message is queued for that recipient only: the other gets one copy, and the
    blocked one gets its copy once the fault is gone, also after a restart."""
    env.user_add("bob@example.test")
    blocked = env.data_dir / "mail" / "example.test" / "bob"
    blocked.parent.mkdir(parents=True, exist_ok=True)
    blocked.write_text("not a Maildir\n")  # a file where bob's Maildir folder belongs
    env.start()
    msg, msgid = make_message()
    qid = queue_id(send_raw(env.smtp_port, SENDER, [ALICE, "bob@example.test"], msg))
    assert env.wait_messages(1, "alice")[0].count(msgid.encode()) == 1
    line = env.wait_log(lambda l: "event=deferred" in l and qid in l and "bob@" in l)
    assert line, f"no deferral of bob's copy with id {qid}:\n{env.log()}"
    assert qid in [p.name for p in env.queue_files()], "the message for bob is not queued"
    blocked.unlink()
    env.restart()
    [b] = env.wait_messages(1, "bob")
    assert msgid.encode() in b
    wait_until(lambda: not env.queue_files())
    env.restart()
    time.sleep(1.0)
    assert len(env.messages("alice")) == 1, "alice got a second copy from the retry"
    assert len(env.messages("bob")) == 1


def test_alias_to_local_and_remote(env):
    env.write_aliases("info: alice, bob@remote.example\n")
    env.start()
    msg, msgid = make_message(to="info@example.test")
    queue_id(send_raw(env.smtp_port, SENDER, ["info@example.test"], msg))
    [delivered] = env.wait_messages(1)
    assert msgid.encode() in delivered


def test_alias_chain(env):
    env.write_aliases("sales: team\nteam: alice\n")
    env.start()
    msg, msgid = make_message(to="sales@example.test")
    queue_id(send_raw(env.smtp_port, SENDER, ["sales@example.test"], msg))
    assert msgid.encode() in env.wait_messages(1)[0]


def test_catch_all(env):
    env.write_aliases("*: alice\n")
    env.start()
    msg, msgid = make_message(to="random-thing@example.test")
    queue_id(send_raw(env.smtp_port, SENDER, ["random-thing@example.test"], msg))
    assert msgid.encode() in env.wait_messages(1)[0]


def test_postmaster_falls_back_to_first_user(server):
    msg, msgid = make_message(to="postmaster@example.test")
    queue_id(send_raw(server.smtp_port, SENDER, ["postmaster@example.test"], msg))
    assert msgid.encode() in server.wait_messages(1)[0]


def test_second_domain_and_cross_domain_alias(env):
    env.add_domain("other.test")
    env.user_add("bob@other.test")
    env.write_aliases("boss: alice@example.test\n", domain="other.test")
    env.start()
    m1, id1 = make_message(to="bob@other.test")
    m2, id2 = make_message(to="boss@other.test")
    queue_id(send_raw(env.smtp_port, SENDER, ["bob@other.test"], m1))
    queue_id(send_raw(env.smtp_port, SENDER, ["boss@other.test"], m2))
    assert id1.encode() in env.wait_messages(1, "bob", "other.test")[0]
    assert id2.encode() in env.wait_messages(1, "alice", "example.test")[0]
    with SmtpConn(env.smtp_port) as c:
        c.ehlo()
        assert_reply(c.cmd(f"MAIL FROM:<{SENDER}>"), 250)
        assert_reply(c.cmd("RCPT TO:<alice@other.test>"), 550, "5.1.1", "user of the other domain")


def idna_maildir_messages(env) -> list[bytes]:
    out = []
    for d in ["bücher.example", "xn--bcher-kva.example"]:
        out += env.messages("alice", d)
    return out


def test_idna_domain(env):
    env.add_domain("bücher.example")
    env.user_add("alice@bücher.example")
    env.start()
    m1, id1 = make_message(to="alice@xn--bcher-kva.example")
    m2, id2 = make_message(to="alice@BÜCHER.example")
    queue_id(send_raw(env.smtp_port, SENDER, ["alice@xn--bcher-kva.example"], m1))
    queue_id(send_raw(env.smtp_port, SENDER, ["alice@BÜCHER.example"], m2, mail_params=" SMTPUTF8"))
    from helpers import wait_until
    got = wait_until(lambda: len(idna_maildir_messages(env)) >= 2 and idna_maildir_messages(env))
    assert got, (f"IDNA mail not delivered; files under data/mail: "
                 f"{sorted(str(p) for p in (env.data_dir / 'mail').rglob('*'))}\nlog:\n{env.log()}")
    both = b"".join(got)
    assert id1.encode() in both and id2.encode() in both
    dirs = [d for d in ["bücher.example", "xn--bcher-kva.example"] if env.messages("alice", d)]
    assert len(dirs) == 1, f"IDNA mail split over two Maildirs: {dirs}"
    assert env.messages("alice", "example.test") == []


def test_smtputf8_local_part(env):
    user = "δοκιμή"
    env.user_add(f"{user}@example.test")
    env.start()
    msg, msgid = make_message(to=f"{user}@example.test")
    queue_id(send_raw(env.smtp_port, "x@remote.example", [f"{user}@example.test"], msg,
                      mail_params=" SMTPUTF8"))
    [delivered] = env.wait_messages(1, user)
    assert msgid.encode() in delivered


def test_8bit_body_preserved(server):
    body = "Grüße aus Köln — ünïcödé\r\n"
    msg, _ = make_message(body=body)
    queue_id(send_raw(server.smtp_port, SENDER, [ALICE], msg, mail_params=" BODY=8BITMIME"))
    [delivered] = server.wait_messages(1)
    assert delivered.endswith(body.replace("\r\n", "\n").encode("utf-8")), delivered[-200:]


def test_null_sender_delivered(server):
    msg, msgid = make_message(sender="MAILER-DAEMON@remote.example")
    queue_id(send_raw(server.smtp_port, "", [ALICE], msg))
    [delivered] = server.wait_messages(1)
    assert delivered.split(b"\n")[0] == b"Return-Path: <>", delivered[:100]


def test_mail_log_received_and_delivered(env):
    env.user_add("bob@example.test")
    env.start()
    msg, _ = make_message()
    qid = queue_id(send_raw(env.smtp_port, SENDER, [ALICE, "bob@example.test"], msg))
    env.wait_messages(1, "alice")
    env.wait_messages(1, "bob")
    received = env.wait_log(lambda l: qid in l and "received" in l.lower())
    assert received, f"no 'received' log line with id {qid}:\n{env.log()}"
    assert SENDER in received, f"received line lacks the sender: {received!r}"
    # the recipient count (2), outside the env_logger prefix and the id
    rest = re.sub(r"^\[[^\]]*\]\s*", "", received).replace(qid, "")
    assert re.search(r"\b2\b", rest), f"received line lacks the recipient count 2: {received!r}"
    for rcpt in [ALICE, "bob@example.test"]:
        line = env.wait_log(lambda l: qid in l and "delivered" in l.lower() and rcpt in l)
        assert line, f"no 'delivered' log line for {rcpt} with id {qid}:\n{env.log()}"


def test_port_25_adds_authentication_results(server):
    msg, _ = make_message()
    queue_id(send_raw(server.smtp_port, SENDER, [ALICE], msg))
    [delivered] = server.wait_messages(1)
    fields = header_block(delivered)
    marker = fields.index("X-Test-Marker: first-original-header")
    ar = [f for f in fields[:marker] if f.lower().startswith("authentication-results:")]
    assert ar, f"no Authentication-Results header (SPEC §7): {fields[:marker]}"
    assert HOSTNAME in ar[0] and "spf=" in ar[0], ar[0]


def test_pipe_alias(env, tmp_path):
    out = tmp_path / "piped.eml"
    env.write_aliases(f"tickets: | /usr/bin/tee {out}\n")
    env.start()
    msg, msgid = make_message(to="tickets@example.test")
    queue_id(send_raw(env.smtp_port, SENDER, ["tickets@example.test"], msg))
    from helpers import wait_until
    got = wait_until(lambda: out.exists() and msgid.encode() in out.read_bytes())
    assert got, f"pipe alias did not run or got no message; log:\n{env.log()}"


def test_mailbox_quota_defers_and_keeps_the_message(env):
    """SPEC §10: over `mailbox_quota_mb`, delivery is a temporary failure (452 4.2.2); the
    message is accepted with a 250 and stays queued, not refused."""
    env.write_config(mailbox_quota_mb=1)
    server = env.start()
    big = "x" * 76 + "\r\n"
    body = big * 9000  # about 700 KB: one fits in 1 MiB, two do not
    first, _ = make_message(body=body)
    assert smtplib_send(server.smtp_port, SENDER, [ALICE], first)[0] == 250
    server.wait_messages(1)
    second, msgid = make_message(body=body)
    code, text = smtplib_send(server.smtp_port, SENDER, [ALICE], second)
    assert code == 250, text
    line = server.wait_log(lambda l: "452 4.2.2" in l and "deferred" in l)
    assert line, f"no deferral for the full mailbox; log:\n{server.log()}"
    assert len(server.messages()) == 1, "the second message went in anyway"
    queued = server.queue_files()
    assert len(queued) == 1 and msgid.encode() in queued[0].read_bytes()
    size = (server.maildir() / "maildirsize").read_text().splitlines()
    assert size[0] == f"{1024 * 1024}S", size
