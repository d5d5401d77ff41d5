"""Replies of the SMTP server on port 25 (SPEC §6, §7): codes, limits, protocol attacks."""

from __future__ import annotations

import time

import pytest

from helpers import (DEFAULT_SIZE, HOSTNAME, Closed, SmtpConn, assert_reply, client_tls_context,
                     dot_stuff, make_message, queue_id)

REMOTE = "sender@remote.example"


def mail_ready(c: SmtpConn, sender: str = REMOTE) -> None:
    c.ehlo()
    assert_reply(c.cmd(f"MAIL FROM:<{sender}>"), 250, what="MAIL")


def test_greeting(server):
    with SmtpConn(server.smtp_port) as c:
        assert c.greeting.code == 220, c.greeting
        assert c.greeting.lines[0].startswith(f"{HOSTNAME} ESMTP"), c.greeting


def test_ehlo_extensions_port_25(server):
    with SmtpConn(server.smtp_port) as c:
        r = c.cmd("EHLO client.example")
        assert_reply(r, 250, what="EHLO")
        assert r.lines[0].split()[0] == HOSTNAME, r
        exts = {l.split(" ", 1)[0].upper(): l.partition(" ")[2] for l in r.lines[1:]}
        for kw in ["PIPELINING", "8BITMIME", "SMTPUTF8", "SIZE", "ENHANCEDSTATUSCODES", "STARTTLS"]:
            assert kw in exts, f"EHLO lacks {kw}: {r}"
        assert exts["SIZE"] == str(DEFAULT_SIZE), f"SIZE {exts['SIZE']!r}"
        assert "AUTH" not in exts, f"AUTH offered on port 25: {r}"


def test_helo_works(server):
    with SmtpConn(server.smtp_port) as c:
        assert_reply(c.cmd("HELO client.example"), 250, what="HELO")
        assert_reply(c.cmd(f"MAIL FROM:<{REMOTE}>"), 250, what="MAIL after HELO")


def test_relay_denied(server):
    with SmtpConn(server.smtp_port) as c:
        mail_ready(c)
        assert_reply(c.cmd("RCPT TO:<someone@remote.example>"), 554, "5.7.1", "relay")


def test_unknown_local_user(server):
    with SmtpConn(server.smtp_port) as c:
        mail_ready(c)
        assert_reply(c.cmd("RCPT TO:<nobody@example.test>"), 550, "5.1.1", "unknown user")


def test_alias_to_missing_local_addresses_refused(env):
    env.write_aliases("ghost: nobody, nobody2@example.test\n")
    env.start()
    with SmtpConn(env.smtp_port) as c:
        mail_ready(c)
        assert_reply(c.cmd("RCPT TO:<ghost@example.test>"), 550, "5.1.1", "alias to nothing")


def test_alias_loop_refused(env):
    # A loop has no final recipient: like an alias to nothing, it cannot be accepted.
    env.write_aliases("loop1: loop2\nloop2: loop1\n")
    env.start()
    with SmtpConn(env.smtp_port) as c:
        mail_ready(c)
        r = c.cmd("RCPT TO:<loop1@example.test>")
        assert r.code >= 400, f"alias loop accepted at RCPT: {r}"
        assert_reply(c.cmd("RCPT TO:<alice@example.test>"), 250, what="RCPT after loop")


@pytest.mark.parametrize("rcpt", ["postmaster@example.test", "postmaster", "POSTMASTER@Example.Test"])
def test_postmaster_accepted(server, rcpt):
    with SmtpConn(server.smtp_port) as c:
        mail_ready(c)
        assert_reply(c.cmd(f"RCPT TO:<{rcpt}>"), 250, what=f"RCPT TO:<{rcpt}>")


def test_auth_on_port_25_refused(server):
    with SmtpConn(server.smtp_port) as c:
        c.ehlo()
        assert_reply(c.cmd("AUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABwdw=="), 503, "5.5.1", "AUTH on 25")


def test_command_line_too_long(server):
    with SmtpConn(server.smtp_port) as c:
        c.ehlo()
        assert_reply(c.cmd("NOOP " + "x" * 1100), 500, "5.5.2", "1105-octet line")


def test_session_continues_after_long_line(server):
    with SmtpConn(server.smtp_port) as c:
        c.ehlo()
        c.cmd("NOOP " + "x" * 5000)
        # The rest of the over-long line must have been discarded, not parsed as a command.
        assert_reply(c.cmd("NOOP"), 250, what="NOOP after a long line")
        mail_ready(c)
        assert_reply(c.cmd("RCPT TO:<alice@example.test>"), 250, what="RCPT")


def test_max_recipients(env):
    env.write_config(max_recipients=3)
    env.start()
    with SmtpConn(env.smtp_port) as c:
        mail_ready(c)
        for rcpt in ["alice@example.test", "alice+1@example.test", "alice+2@example.test"]:
            assert_reply(c.cmd(f"RCPT TO:<{rcpt}>"), 250, what=rcpt)
        assert_reply(c.cmd("RCPT TO:<alice+3@example.test>"), 452, "4.5.3", "4th recipient")


def test_size_parameter_too_big(server):
    with SmtpConn(server.smtp_port) as c:
        c.ehlo()
        r = c.cmd(f"MAIL FROM:<a@b> SIZE={DEFAULT_SIZE + 1}")
        assert_reply(r, 552, "5.3.4", "MAIL SIZE over the limit")


def test_size_parameter_within_limit(server):
    with SmtpConn(server.smtp_port) as c:
        c.ehlo()
        assert_reply(c.cmd(f"MAIL FROM:<{REMOTE}> SIZE=1000"), 250, what="MAIL SIZE=1000")


def test_oversize_message_then_next_message_works(env):
    env.write_config(max_message_size_mb=1)
    env.start()
    body = ("x" * 78 + "\r\n") * (2 * 1024 * 1024 // 80 + 1)  # ~2 MiB
    big, big_id = make_message(body=body)
    small, small_id = make_message()
    with SmtpConn(env.smtp_port) as c:
        mail_ready(c)
        assert_reply(c.cmd("RCPT TO:<alice@example.test>"), 250, what="RCPT")
        assert_reply(c.data(big), 552, "5.3.4", "2 MiB message with a 1 MiB limit")
        assert_reply(c.cmd(f"MAIL FROM:<{REMOTE}>"), 250, what="MAIL after oversize")
        assert_reply(c.cmd("RCPT TO:<alice@example.test>"), 250, what="RCPT after oversize")
        queue_id(c.data(small))
    msgs = env.wait_messages(1)
    time.sleep(0.5)
    msgs = env.messages()
    assert sum(small_id.encode() in m for m in msgs) == 1
    assert not any(big_id.encode() in m for m in msgs), "the oversize message was delivered"


SMUGGLING = {
    "bare LF": b"Subject: t\r\n\r\nline one\nline two\r\n.\r\n",
    "bare CR": b"Subject: t\r\n\r\nline one\rline two\r\n.\r\n",
    # The classic smuggling payload: an end of data that only a lax parser accepts.
    "LF.CRLF": (b"Subject: t\r\n\r\nhello\n.\r\nMAIL FROM:<evil@remote.example>\r\n"
                b"RCPT TO:<alice@example.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nx\r\n.\r\n"),
}


@pytest.mark.parametrize("name", list(SMUGGLING))
def test_bare_lf_or_cr_in_data_refused(server, name):
    with SmtpConn(server.smtp_port) as c:
        mail_ready(c)
        assert_reply(c.cmd("RCPT TO:<alice@example.test>"), 250, what="RCPT")
        assert_reply(c.cmd("DATA"), 354, what="DATA")
        c.send(SMUGGLING[name])
        replies = []
        try:
            while len(replies) < 6:
                replies.append(c.reply())
        except Closed:
            pass
        except TimeoutError:
            pytest.fail(f"{name}: server neither replied nor closed; replies: {[str(r) for r in replies]}")
        assert replies, f"{name}: connection closed without a reply"
        assert 500 <= replies[0].code < 600, f"{name}: expected 5xx, got {[str(r) for r in replies]}"
        assert any(r.code == 521 and r.enhanced == "5.5.2" for r in replies), \
            f"{name}: no 521 5.5.2 before close: {[str(r) for r in replies]}"
        assert len(replies) <= 2, f"{name}: replies after the refusal: {[str(r) for r in replies]}"
    time.sleep(1.0)
    assert server.messages() == [], f"{name}: something was delivered"
    assert server.queue_files() == [], f"{name}: something was queued"


def test_three_errors_end_the_connection(server):
    with SmtpConn(server.smtp_port) as c:
        c.ehlo()
        for i in range(3):
            r = c.cmd(f"XYZZY{i}")
            assert r.code >= 400, f"unknown command {i} got {r}"
        try:
            r = c.reply()
        except Closed:
            pytest.fail("connection closed after the third error without a 421")
        assert_reply(r, 421, "4.5.0", "after the third error")
        c.expect_closed()


def test_two_errors_do_not_end_the_connection(server):
    with SmtpConn(server.smtp_port) as c:
        c.ehlo()
        for i in range(2):
            assert c.cmd(f"XYZZY{i}").code >= 500
        assert_reply(c.cmd("NOOP"), 250, what="NOOP after two errors")


@pytest.mark.parametrize("line", ["GET / HTTP/1.1", "POST /x HTTP/1.1", "CONNECT example.com:443 HTTP/1.1"])
def test_http_commands_closed(server, line):
    with SmtpConn(server.smtp_port) as c:
        try:
            r = c.cmd(line)
        except Closed:
            pytest.fail(f"{line!r}: closed without a reply")
        assert_reply(r, 502, "5.7.0", line)
        c.expect_closed()


@pytest.mark.parametrize("port_name", ["smtp_port", "submission_port"])
def test_commands_pipelined_behind_starttls_discarded(server, port_name):
    with SmtpConn(getattr(server, port_name)) as c:
        c.ehlo()
        c.send(b"STARTTLS\r\nNOOP\r\n")
        assert_reply(c.reply(), 220, what="STARTTLS")
        assert not c.buf, f"server answered the pipelined command in clear text: {c.buf!r}"
        c.sock = client_tls_context().wrap_socket(c.sock)
        c.send(b"EHLO client.example\r\n")
        r = c.reply()
        assert r.code == 250 and len(r.lines) > 1 and r.lines[0].split()[0] == HOSTNAME, \
            f"first reply after TLS is not the EHLO reply (the pipelined NOOP was answered?): {r}"
        assert_reply(c.cmd("NOOP"), 250, what="NOOP")


def test_too_many_received_headers_is_a_loop(server):
    hops = [f"Received: from hop{i}.remote.example by hop{i+1}.remote.example; "
            "Mon, 1 Jan 2024 00:00:00 +0000" for i in range(51)]
    msg, _ = make_message(extra_headers=hops)
    with SmtpConn(server.smtp_port) as c:
        mail_ready(c)
        assert_reply(c.cmd("RCPT TO:<alice@example.test>"), 250, what="RCPT")
        assert_reply(c.data(msg), 554, "5.4.6", "51 Received headers")
    time.sleep(0.5)
    assert server.messages() == []


def test_fifty_received_headers_accepted(server):
    hops = [f"Received: from hop{i}.remote.example by hop{i+1}.remote.example; "
            "Mon, 1 Jan 2024 00:00:00 +0000" for i in range(49)]
    msg, _ = make_message(extra_headers=hops)
    with SmtpConn(server.smtp_port) as c:
        mail_ready(c)
        assert_reply(c.cmd("RCPT TO:<alice@example.test>"), 250, what="RCPT")
        queue_id(c.data(msg))  # 49 + our own Received = 50: not a loop yet


def test_data_accepted_reply(server):
    msg, _ = make_message()
    with SmtpConn(server.smtp_port) as c:
        mail_ready(c)
        assert_reply(c.cmd("RCPT TO:<alice@example.test>"), 250, what="RCPT")
        qid = queue_id(c.data(msg))
        assert qid, "empty queue id"
        assert_reply(c.cmd("QUIT"), 221, what="QUIT")


def test_pipelining(env):
    env.user_add("bob@example.test")
    server = env.start()
    msg, msgid = make_message()
    with SmtpConn(server.smtp_port) as c:
        c.ehlo()
        c.send(f"MAIL FROM:<{REMOTE}>\r\nRCPT TO:<alice@example.test>\r\n"
               "RCPT TO:<bob@example.test>\r\nDATA\r\n")
        replies = [c.reply() for _ in range(4)]
        assert [r.code for r in replies] == [250, 250, 250, 354], [str(r) for r in replies]
        c.send(dot_stuff(msg) + b".\r\nQUIT\r\n")
        queue_id(c.reply())
        assert_reply(c.reply(), 221, what="QUIT")
    assert len(server.wait_messages(1, "alice")) == 1
    assert len(server.wait_messages(1, "bob")) == 1


def test_rcpt_before_mail_is_a_sequence_error(server):
    with SmtpConn(server.smtp_port) as c:
        c.ehlo()
        assert_reply(c.cmd("RCPT TO:<alice@example.test>"), 503, what="RCPT before MAIL")


@pytest.mark.parametrize("rcpt", ["../alice@example.test", "a/b@example.test", "..@example.test",
                                  "alice@../example.test"])
def test_path_like_recipients_refused(server, rcpt):
    with SmtpConn(server.smtp_port) as c:
        mail_ready(c)
        r = c.cmd(f"RCPT TO:<{rcpt}>")
        assert r.code >= 500, f"RCPT TO:<{rcpt}> got {r}"
    assert not (server.dir / "example.test").exists() and not (server.data_dir / "alice").exists()


def test_relay_networks_allow_relay_on_port_25(env):
    env.write_config(relay_networks=["127.0.0.0/8"])
    env.start()
    with SmtpConn(env.smtp_port) as c:
        mail_ready(c)
        assert_reply(c.cmd("RCPT TO:<someone@remote.example>"), 250, what="relay from relay_networks")


def write_access(env, text: str) -> None:
    (env.dir / "conf" / "access").write_text(text)


def test_access_from_reject_with_text(env):
    write_access(env, "From:spam@example.net REJECT go away\n")
    env.start()
    with SmtpConn(env.smtp_port) as c:
        c.ehlo()
        r = c.cmd("MAIL FROM:<spam@example.net>")
        if r.code == 250:
            r = c.cmd("RCPT TO:<alice@example.test>")
        assert 500 <= r.code < 600 and "go away" in r.text, f"access REJECT: got {r}"
    with SmtpConn(env.smtp_port) as c:
        mail_ready(c, "friend@example.net")
        assert_reply(c.cmd("RCPT TO:<alice@example.test>"), 250, what="other sender of that domain")


def test_access_from_domain_discard(env):
    write_access(env, "From:@example.org DISCARD\n")
    env.start()
    msg, _ = make_message(sender="x@example.org")
    with SmtpConn(env.smtp_port) as c:
        mail_ready(c, "x@example.org")
        assert_reply(c.cmd("RCPT TO:<alice@example.test>"), 250, what="RCPT (discard)")
        r = c.data(msg)
        assert r.code == 250, f"DISCARD must accept: {r}"
    time.sleep(1.0)
    assert env.messages() == [], "a DISCARDed message was delivered"


def test_access_connect_relay(env):
    write_access(env, "Connect:127.0.0.0/8 RELAY\n")
    env.start()
    with SmtpConn(env.smtp_port) as c:
        mail_ready(c)
        assert_reply(c.cmd("RCPT TO:<someone@remote.example>"), 250, what="Connect RELAY")


def test_access_connect_reject(env):
    write_access(env, "Connect:127.0.0.1 REJECT\n")
    env.start()
    try:
        c = SmtpConn(env.smtp_port)
    except Closed:
        return  # refused before the greeting
    try:
        if c.greeting.code == 220:
            c.ehlo()
            r = c.cmd(f"MAIL FROM:<{REMOTE}>")
            if r.code == 250:
                r = c.cmd("RCPT TO:<alice@example.test>")
            assert r.code >= 500, f"Connect REJECT: transaction went on: {r}"
        else:
            assert c.greeting.code == 554, c.greeting
    except Closed:
        pass
    finally:
        c.close()
