"""TLS, AUTH and sender rules on the three ports (SPEC §1, §2, §7)."""

from __future__ import annotations

import smtplib
import subprocess

import pytest

from helpers import (HOSTNAME, PASSWORD, SmtpConn, assert_reply, client_tls_context,
                     make_message, mode, queue_id, send_raw)

ALICE = "alice@example.test"


def auth_mechs(exts: dict[str, str]) -> set[str]:
    return set(exts.get("AUTH", "").upper().split())


def submission(server, tls_port: bool = False) -> SmtpConn:
    """A submission connection with TLS up (STARTTLS on 587, implicit on 465) and EHLO done."""
    if tls_port:
        c = SmtpConn(server.submission_tls_port, tls=True)
    else:
        c = SmtpConn(server.submission_port)
        c.ehlo()
        c.starttls()
    c.ehlo()
    return c


# ---- EHLO on each port ---------------------------------------------------------------------


def test_port_25_never_offers_auth_even_after_starttls(server):
    with SmtpConn(server.smtp_port) as c:
        assert "STARTTLS" in c.ehlo()
        c.starttls()
        exts = c.ehlo()
        assert "AUTH" not in exts, f"AUTH offered on port 25 after STARTTLS: {exts}"
        # RFC 3207 §4.2: STARTTLS must not be offered again once TLS is up.
        assert "STARTTLS" not in exts, exts


def test_port_25_starttls_then_mail_delivered(server):
    msg, msgid = make_message()
    queue_id(send_raw(server.smtp_port, "sender@remote.example", [ALICE], msg, starttls=True))
    assert server.wait_messages(1)[0].count(msgid.encode()) == 1


def test_submission_ehlo_before_and_after_starttls(server):
    with SmtpConn(server.submission_port) as c:
        assert c.greeting.code == 220 and c.greeting.lines[0].startswith(HOSTNAME), c.greeting
        before = c.ehlo()
        assert "STARTTLS" in before, before
        assert "AUTH" not in before, f"AUTH offered before TLS: {before}"
        c.starttls()
        after = c.ehlo()
        assert {"PLAIN", "LOGIN"} <= auth_mechs(after), f"after STARTTLS: {after}"
        assert "STARTTLS" not in after, f"STARTTLS offered again: {after}"


def test_implicit_tls_ehlo(server):
    with SmtpConn(server.submission_tls_port, tls=True) as c:
        assert c.greeting.code == 220 and c.greeting.lines[0].startswith(HOSTNAME), c.greeting
        exts = c.ehlo()
        assert {"PLAIN", "LOGIN"} <= auth_mechs(exts), exts
        assert "STARTTLS" not in exts, f"STARTTLS offered inside TLS: {exts}"


def peer_cert(port: int) -> bytes:
    with SmtpConn(port, tls=True) as c:
        return c.sock.getpeercert(binary_form=True)


def test_self_signed_certificate_generated_into_data_dir(server):
    der = peer_cert(server.submission_tls_port)
    assert der and HOSTNAME.encode() in der, "certificate does not name the hostname"
    certs = server.dir / "conf" / "certs"
    assert not certs.exists() or not any(certs.iterdir()), "a certificate was written into conf/"
    pems = [p for p in server.data_dir.rglob("*") if p.is_file() and p.stat().st_size < 100_000]
    keys = [p for p in pems if b"PRIVATE KEY-----" in p.read_bytes()]
    assert any(b"BEGIN CERTIFICATE" in p.read_bytes() for p in pems), "no certificate in data_dir"
    assert keys, "no private key in data_dir"
    for k in keys:
        assert mode(k) == 0o600, f"{k} has mode {mode(k):o}"
    server.restart()
    assert peer_cert(server.submission_tls_port) == der, "a new certificate was generated on restart"


# ---- AUTH ----------------------------------------------------------------------------------


def test_auth_before_tls_on_submission(server):
    with SmtpConn(server.submission_port) as c:
        c.ehlo()
        assert_reply(c.auth_plain(ALICE, PASSWORD), 538, "5.7.11", "AUTH before STARTTLS")


@pytest.mark.parametrize("tls_first", [False, True])
def test_mail_without_auth_on_submission(server, tls_first):
    with SmtpConn(server.submission_port) as c:
        c.ehlo()
        if tls_first:
            c.starttls()
            c.ehlo()
        assert_reply(c.cmd(f"MAIL FROM:<{ALICE}>"), 530, "5.7.0", "MAIL without AUTH")


@pytest.mark.parametrize("tls_port", [False, True])
@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
def test_auth_good_password(server, mech, tls_port):
    with submission(server, tls_port) as c:
        r = c.auth_plain(ALICE, PASSWORD) if mech == "PLAIN" else c.auth_login(ALICE, PASSWORD)
        assert_reply(r, 235, "2.7.0", f"AUTH {mech}")


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
def test_auth_bad_password(server, mech):
    with submission(server) as c:
        bad = PASSWORD + "!"
        r = c.auth_plain(ALICE, bad) if mech == "PLAIN" else c.auth_login(ALICE, bad)
        assert_reply(r, 535, "5.7.8", f"AUTH {mech} with a wrong password")
        assert_reply(c.cmd(f"MAIL FROM:<{ALICE}>"), 530, "5.7.0", "MAIL after failed AUTH")


def test_auth_unknown_user(server):
    with submission(server) as c:
        assert_reply(c.auth_plain("mallory@example.test", PASSWORD), 535, "5.7.8", "unknown user")


def test_receive_only_user_cannot_login_but_receives(env):
    env.user_add("noreply@example.test", receive_only=True)
    env.start()
    with submission(env) as c:
        assert_reply(c.auth_plain("noreply@example.test", "!"), 535, "5.7.8", "receive-only login")
    msg, msgid = make_message(to="noreply@example.test")
    queue_id(send_raw(env.smtp_port, "sender@remote.example", ["noreply@example.test"], msg))
    assert msgid.encode() in env.wait_messages(1, "noreply")[0]


# ---- sender rules --------------------------------------------------------------------------


@pytest.mark.parametrize("sender", ["bob@example.test", "someone@remote.example", "nobody@example.test"])
def test_authenticated_sender_must_belong_to_user(env, sender):
    env.user_add("bob@example.test")
    env.start()
    with submission(env) as c:
        assert_reply(c.auth_plain(ALICE, PASSWORD), 235, "2.7.0", "AUTH")
        assert_reply(c.cmd(f"MAIL FROM:<{sender}>"), 553, "5.7.1", f"alice sending as {sender}")


@pytest.mark.parametrize("sender", ["alice@example.test", "alice+tag@example.test", "ALICE@Example.Test",
                                    "info@example.test"])
def test_authenticated_sender_allowed(env, sender):
    env.write_aliases("info: alice, bob@remote.example\n")
    env.start()
    with submission(env) as c:
        assert_reply(c.auth_plain(ALICE, PASSWORD), 235, "2.7.0", "AUTH")
        assert_reply(c.cmd(f"MAIL FROM:<{sender}>"), 250, what=f"alice sending as {sender}")


def test_catch_all_owner_may_send_as_any_address(env):
    env.write_aliases("*: alice\n")
    env.start()
    with submission(env) as c:
        assert_reply(c.auth_plain(ALICE, PASSWORD), 235, "2.7.0", "AUTH")
        assert_reply(c.cmd("MAIL FROM:<whatever@example.test>"), 250, what="catch-all owner")


def test_authenticated_user_may_relay(server):
    msg, _ = make_message(sender=ALICE, to="friend@remote.example")
    r = send_raw(server.submission_port, ALICE, ["friend@remote.example"], msg,
                 starttls=True, login=(ALICE, PASSWORD))
    queue_id(r)


# ---- real clients --------------------------------------------------------------------------


def test_smtplib_submission_starttls(server):
    msg, msgid = make_message(sender=ALICE, to=ALICE)
    with smtplib.SMTP("127.0.0.1", server.submission_port, local_hostname="client.example",
                      timeout=10) as s:
        s.starttls(context=client_tls_context())
        s.login(ALICE, PASSWORD)
        assert s.sendmail(ALICE, [ALICE], msg) == {}
    assert msgid.encode() in server.wait_messages(1)[0]


def test_smtplib_implicit_tls(server):
    msg, msgid = make_message(sender=ALICE, to=ALICE)
    with smtplib.SMTP_SSL("127.0.0.1", server.submission_tls_port, local_hostname="client.example",
                          timeout=10, context=client_tls_context()) as s:
        s.login(ALICE, PASSWORD)
        assert s.sendmail(ALICE, [ALICE], msg) == {}
    assert msgid.encode() in server.wait_messages(1)[0]


def swaks(server, port: int, *tls_args: str, header: str):
    cmd = ["swaks", "--server", f"127.0.0.1:{port}", "--timeout", "10",
           "--helo", "client.example", "--from", ALICE, "--to", ALICE,
           *tls_args, "--auth", "PLAIN", "--auth-user", ALICE, "--auth-password", PASSWORD,
           "--header", header]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("mode", ["starttls-587", "implicit-465"])
def test_swaks(server, mode):
    port, flag = ((server.submission_port, "--tls") if mode == "starttls-587"
                  else (server.submission_tls_port, "--tlsc"))
    header = f"X-Swaks-Test: {mode}"
    r = swaks(server, port, flag, header=header)
    assert r.returncode == 0, f"swaks {mode}: exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    assert header.encode() in server.wait_messages(1)[0]
