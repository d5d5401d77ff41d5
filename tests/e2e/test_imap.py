"""IMAP4rev1 (SPEC §10, issue "Mailbox module, part 1") with Python's imaplib: STARTTLS on the
plain port and implicit TLS, capabilities before and after login, SELECT, FETCH, STORE, COPY,
MOVE and EXPUNGE with the UIDPLUS codes, the files on disk, folder names that try to escape,
IDLE while mail arrives over SMTP, APPEND, quota and bad input."""

from __future__ import annotations

import imaplib
import os
import re
import smtplib
import socket
import ssl
import time
from pathlib import Path

import pytest

from helpers import PASSWORD, client_tls_context, make_message, wait_until

ALICE = "alice@example.test"


def connect(env, tls="starttls") -> imaplib.IMAP4:
    if tls == "implicit":
        c = imaplib.IMAP4_SSL("127.0.0.1", env.imaps_port, ssl_context=client_tls_context(),
                              timeout=20)
    else:
        c = imaplib.IMAP4("127.0.0.1", env.imap_port, timeout=20)
        if tls == "starttls":
            c.starttls(ssl_context=client_tls_context())
    return c


def login(env, tls="starttls") -> imaplib.IMAP4:
    c = connect(env, tls)
    typ, _ = c.login(ALICE, PASSWORD)
    assert typ == "OK"
    return c


def deliver(env, subject="hello", body="Hello.\r\n", to=ALICE) -> str:
    msg, msgid = make_message(subject=subject, to=to, body=body)
    with smtplib.SMTP("127.0.0.1", env.smtp_port, local_hostname="client.example", timeout=20) as s:
        s.sendmail("sender@remote.example", [to], msg)
    return msgid


def maildir(env, folder="") -> Path:
    base = env.data_dir / "mail" / "example.test" / "alice"
    return base / f".{folder}" if folder else base


def untagged_ok_codes(c: imaplib.IMAP4, code: str) -> list[bytes]:
    return [v for v in c.untagged_responses.get(code, [])]


# ---- login and capabilities -------------------------------------------------------------------


def test_capabilities_before_and_after_tls_and_login(imap):
    c = connect(imap, tls=None)
    caps = c.capabilities
    assert "STARTTLS" in caps and "LOGINDISABLED" in caps, caps
    assert not any(x.startswith("AUTH=") for x in caps), caps
    with pytest.raises(imaplib.IMAP4.error):
        c.login(ALICE, PASSWORD)  # LOGINDISABLED: refused in the clear
    c.starttls(ssl_context=client_tls_context())
    caps = c.capabilities
    assert "AUTH=PLAIN" in caps and "STARTTLS" not in caps and "LOGINDISABLED" not in caps, caps
    c.login(ALICE, PASSWORD)
    typ, data = c.capability()
    after = data[0].decode().split()
    for cap in ("IMAP4rev1", "IDLE", "UIDPLUS", "MOVE", "SPECIAL-USE", "LITERAL+", "ENABLE",
                "NAMESPACE", "ID", "UNSELECT", "CHILDREN", "QUOTA", "SASL-IR", "CONDSTORE",
                "QRESYNC", "SORT", "THREAD=REFERENCES", "THREAD=ORDEREDSUBJECT"):
        assert cap in after, (cap, after)
    # Not offered: what is not implemented (MAILBOX.md: LIST-EXTENDED breaks Thunderbird).
    for cap in ("LIST-EXTENDED", "ESEARCH", "BINARY", "COMPRESS=DEFLATE"):
        assert cap not in after, (cap, after)
    c.logout()


def test_implicit_tls_and_authenticate_plain(imap):
    c = connect(imap, "implicit")
    typ, _ = c.authenticate("PLAIN", lambda _: f"\0{ALICE}\0{PASSWORD}".encode())
    assert typ == "OK"
    c.logout()


def test_wrong_password_is_refused_slowly_and_logged(imap):
    c = connect(imap)
    start = time.monotonic()
    with pytest.raises(imaplib.IMAP4.error) as e:
        c.login(ALICE, "wrong password")
    assert time.monotonic() - start >= 0.9
    assert "AUTHENTICATIONFAILED" in str(e.value)
    c.logout()
    assert imap.wait_log(lambda l: "event=login_failed protocol=imap" in l and "127.0.0.1" in l)
    c = login(imap)
    c.logout()
    assert imap.wait_log(lambda l: "event=login protocol=imap" in l and 'user="alice@example.test"' in l)


def test_receive_only_user_cannot_log_in(imap):
    imap.user_add("bob@example.test", receive_only=True)
    c = connect(imap)
    with pytest.raises(imaplib.IMAP4.error):
        c.login("bob@example.test", "")
    c.logout()


# ---- folders ---------------------------------------------------------------------------------


def test_special_folders_exist_and_are_listed_with_their_use(imap):
    c = login(imap)
    typ, lines = c.list()
    listed = b"\n".join(lines).decode()
    for folder, attr in (("Sent", "\\Sent"), ("Drafts", "\\Drafts"), ("Trash", "\\Trash"),
                         ("Junk", "\\Junk")):
        assert re.search(rf'\(.*{re.escape(attr)}.*\) "\." "?{folder}"?', listed), listed
        assert (maildir(imap, folder) / "cur").is_dir()
    assert re.search(r'"INBOX"|INBOX', listed)
    typ, subs = c.lsub()
    assert b"Sent" in b" ".join(subs)
    c.logout()


@pytest.mark.parametrize("name", ["a/b", "..", "a..b", ".hidden", "x\x01y", "~root", "a" * 300,
                                  "../../../etc"])
def test_folder_names_that_escape_get_no(imap, name):
    c = login(imap)
    typ, data = c._simple_command("CREATE", f'"{name}"')
    assert typ == "NO", (name, typ, data)
    c.logout()
    # Nothing was made outside the Maildir, nor inside it.
    top = maildir(imap)
    assert not any(p.name.startswith("..") for p in top.iterdir())


def test_create_rename_delete_and_utf7_names(imap):
    c = login(imap)
    assert c.create("Archive")[0] == "OK"
    assert c.create("Archive.2024")[0] == "OK"
    assert c.create("Entw&APw-rfe")[0] == "OK"  # "Entwürfe" in modified UTF-7
    assert (maildir(imap, "Entw&APw-rfe") / "cur").is_dir()
    assert c.rename("Archive", "Old")[0] == "OK"
    assert (maildir(imap, "Old.2024") / "cur").is_dir()
    assert not maildir(imap, "Archive").exists()
    assert c.delete("Old.2024")[0] == "OK"
    assert c.delete("INBOX")[0] == "NO"
    typ, _ = c.create("Old")
    assert typ == "NO"  # exists
    c.logout()


# ---- messages --------------------------------------------------------------------------------


def test_select_fetch_store_and_the_files(imap):
    msgid = deliver(imap, subject="first")
    deliver(imap, subject="second")
    c = login(imap)
    typ, data = c.select("INBOX")
    assert typ == "OK" and data == [b"2"]
    uidvalidity = int(c.untagged_responses["UIDVALIDITY"][0])
    typ, data = c.uid("FETCH", "1:*", "(UID FLAGS RFC822.SIZE INTERNALDATE ENVELOPE)")
    assert typ == "OK"
    text = b" ".join(x if isinstance(x, bytes) else b"".join(x) for x in data)
    assert b"ENVELOPE" in text and b"first" in text and b"second" in text
    typ, data = c.fetch("1", "(BODY.PEEK[HEADER.FIELDS (Subject)])")
    assert b"Subject: first" in data[0][1]
    typ, data = c.fetch("1", "(BODY[])")
    assert msgid.encode() in data[0][1]
    # Fetching BODY[] set \Seen; on disk that is the Maildir info ":2,S" in cur/.
    files = list((maildir(imap) / "cur").iterdir())
    assert any(f.name.endswith(":2,S") for f in files), files
    typ, data = c.store("2", "+FLAGS", "(\\Flagged $Junk)")
    assert typ == "OK" and b"\\Flagged" in data[0]
    names = [f.name for f in (maildir(imap) / "cur").iterdir()]
    assert any(re.search(r":2,F[a-z]*$", n) for n in names), names
    assert (maildir(imap) / "dovecot-keywords").read_text().strip().endswith("$Junk")
    uidlist = (maildir(imap) / "dovecot-uidlist").read_text()
    assert uidlist.startswith(f"3 V{uidvalidity} "), uidlist
    c.logout()


def test_copy_move_expunge_with_uidplus_codes(imap):
    for n in range(3):
        deliver(imap, subject=f"m{n}")
    c = login(imap)
    c.select("INBOX")
    typ, data = c.uid("COPY", "1", "Trash")
    assert typ == "OK"
    # imaplib files the tagged OK's response code under its name.
    typ, code = c.response("COPYUID")
    assert code and re.fullmatch(rb"\d+ 1 \d+", code[0]), (code, data)
    typ, data = c.uid("MOVE", "2", "Junk")
    assert typ == "OK"
    typ, data = c.select("INBOX")
    assert data == [b"2"]
    c.store("1", "+FLAGS", "\\Deleted")
    typ, data = c.expunge()
    assert typ == "OK" and data == [b"1"]
    typ, data = c.select("Junk")
    assert data == [b"1"]
    typ, data = c.select("Trash")
    assert data == [b"1"]
    # UID EXPUNGE removes only the UIDs named.
    c.select("INBOX")
    c.store("1", "+FLAGS", "\\Deleted")
    typ, data = c.uid("EXPUNGE", "999")
    assert typ == "OK"
    typ, data = c.select("INBOX")
    assert data == [b"1"]
    c.logout()


def test_append_gives_appenduid_and_search(imap):
    c = login(imap)
    c.select("INBOX")
    msg = b"From: a@b.example\r\nSubject: Appended caf\xc3\xa9\r\n\r\nNeedle in a haystack\r\n"
    typ, data = c.append("INBOX", "(\\Seen)", None, msg)
    assert typ == "OK" and re.search(rb"APPENDUID \d+ \d+", data[0]), data
    typ, data = c.search(None, "SUBJECT", "Appended")
    assert data == [b"1"]
    typ, data = c.search(None, "BODY", "haystack")
    assert data == [b"1"]
    typ, data = c.search(None, "UNSEEN")
    assert data == [b""]
    typ, data = c.append("NoSuchFolder", None, None, msg)
    assert typ == "NO" and b"TRYCREATE" in data[0]
    c.logout()


def test_search_sort_and_thread_take_utf8_and_us_ascii_and_refuse_other_charsets(imap):
    """RFC 3501 §6.4.4 and RFC 5256 §3: NO [BADCHARSET (US-ASCII UTF-8)] for another charset,
    and the session goes on."""
    c = login(imap)
    c.append("INBOX", None, None, b"From: a@b.example\r\nSubject: caf\xc3\xa9\r\n\r\nx\r\n")
    c.select("INBOX")
    assert c.search("UTF-8", "SUBJECT", "caf") == ("OK", [b"1"])
    assert c.sort("(SUBJECT)", "US-ASCII", "ALL") == ("OK", [b"1"])
    assert c.thread("REFERENCES", "utf-8", "ALL") == ("OK", [b"(1)"])
    for typ, data in (c.search("KOI8-R", "ALL"), c.sort("(DATE)", "ISO-8859-1", "ALL"),
                      c.thread("ORDEREDSUBJECT", "ISO-8859-1", "ALL")):
        assert typ == "NO" and data[0].startswith(b"[BADCHARSET (US-ASCII UTF-8)]"), data
    assert c.noop()[0] == "OK"
    c.logout()


def test_a_large_append_is_spooled(imap):
    c = login(imap)
    body = (b"x" * 76 + b"\r\n") * 60_000  # about 4.7 MB
    msg = b"From: a@b.example\r\nSubject: big\r\n\r\n" + body
    typ, data = c.append("INBOX", None, None, msg)
    assert typ == "OK", data
    c.select("INBOX")
    typ, data = c.fetch("1", "(RFC822.SIZE)")
    assert str(len(msg)).encode() in data[0]
    c.logout()


def test_idle_tells_of_new_mail(imap):
    c = login(imap)
    c.select("INBOX")
    tag = c._new_tag().decode()
    c.send(f"{tag} IDLE\r\n".encode())
    assert c.readline().startswith(b"+")
    deliver(imap, subject="while idling")
    c.sock.settimeout(15)
    line = c.readline()
    assert re.match(rb"\* 1 EXISTS", line), line
    c.send(b"DONE\r\n")
    while True:
        line = c.readline()
        if line.startswith(tag.encode()):
            break
    assert b"OK" in line
    c.logout()


def test_sessions_see_each_others_changes(imap):
    deliver(imap)
    a, b = login(imap), login(imap)
    a.select("INBOX")
    b.select("INBOX")
    a.store("1", "+FLAGS", "\\Flagged")
    typ, data = b.noop()
    fetches = b.untagged_responses.get("FETCH", [])
    assert any(b"\\Flagged" in f for f in fetches), (data, b.untagged_responses)
    a.store("1", "+FLAGS", "\\Deleted")
    a.expunge()
    typ, data = b.noop()
    assert b.untagged_responses.get("EXPUNGE") == [b"1"], b.untagged_responses
    a.logout()
    b.logout()



def test_no_expunge_during_fetch_store_search_but_new_mail_is_told(imap):
    """RFC 3501 §7.4.1: another session's expunge waits for a command that may tell it,
    while new mail is told at once; a body no longer there gets NO [EXPUNGEISSUED]."""
    deliver(imap, "one")
    deliver(imap, "two")
    a, b = login(imap), login(imap)
    a.select("INBOX")
    b.select("INBOX")
    a.store("1", "+FLAGS", "\\Deleted")
    a.expunge()
    deliver(imap, "three")
    for command in (lambda: b.fetch("1:*", "(FLAGS)"),
                    lambda: b.store("2", "+FLAGS", "\\Seen"),
                    lambda: b.search(None, "ALL")):
        typ, data = command()
        assert typ == "OK", data
        assert "EXPUNGE" not in b.untagged_responses, b.untagged_responses
    assert b.untagged_responses.get("EXISTS")[-1] == b"3", b.untagged_responses
    typ, data = b.fetch("1", "(BODY.PEEK[])")
    assert typ == "NO" and b"EXPUNGEISSUED" in data[-1], data
    b.untagged_responses.clear()
    typ, _ = b.noop()
    assert b.untagged_responses.get("EXPUNGE") == [b"1"], b.untagged_responses
    typ, data = b.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert typ == "OK"
    subjects = b"".join(part[1] for part in data if isinstance(part, tuple))
    assert b"two" in subjects and b"three" in subjects and b"one" not in subjects, data
    a.logout()
    b.logout()

# ---- bad input --------------------------------------------------------------------------------


def raw(env, lines: list[bytes], tls=False) -> bytes:
    s = socket.create_connection(("127.0.0.1", env.imap_port), timeout=10)
    s.recv(4096)
    out = b""
    for line in lines:
        s.sendall(line)
        time.sleep(0.05)
    s.settimeout(2)
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    except socket.timeout:
        pass
    s.close()
    return out


def test_malformed_commands_get_bad_and_the_session_goes_on(imap):
    out = raw(imap, [b"a1 FOO bar\r\n", b"a2 NOOP (\r\n", b"garbage\r\n", b"a3 NOOP\r\n",
                     b"a4 " + b"x" * 20000 + b"\r\n", b"a5 LOGOUT\r\n"])
    for expected in (b"a1 BAD", b"a2 BAD", b"garbage BAD", b"a3 OK", b"a4 BAD", b"a5 OK"):
        assert expected in out, (expected, out)


# ---- the MTA and the mailbox in one -------------------------------------------------------------


def test_plus_tag_is_delivered_into_the_folder_of_that_name_when_it_exists(imap):
    """`alice+lists@` lands in folder "lists" once the user made it (Dovecot's
    lmtp_save_to_detail_mailbox); a tag without such a folder lands in INBOX."""
    c = login(imap)
    assert c.create("lists")[0] == "OK"
    deliver(imap, subject="for the list", to="alice+lists@example.test")
    deliver(imap, subject="no such folder", to="alice+nosuch@example.test")

    def count(folder):
        typ, data = c.select(folder, readonly=True)
        assert typ == "OK", data
        return int(data[0])

    assert wait_until(lambda: count("lists") == 1 and count("INBOX") == 1, 10), \
        (count("lists"), count("INBOX"), imap.log())
    c.select("lists", readonly=True)
    _, data = c.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert b"for the list" in data[0][1]
    c.select("INBOX", readonly=True)
    _, data = c.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert b"no such folder" in data[0][1]
    c.logout()
