"""`tambo util import-maildir MAILDIR USER@DOMAIN [--check]` (issue 19 item 4) on a Maildir
that Dovecot wrote: Dovecot serves it first (IMAP: UIDVALIDITY, UIDs, flags, keywords,
subscriptions; POP3: UIDL), `--check` says nothing would differ, the import, then tambo
serves the same over IMAP and POP3. Then what --check and the import refuse, exit 2.

Dovecot's IMAP and POP3 servers run preauthenticated on stdin and stdout with a
configuration of the test's own (the helpers of test_imap_clients.py and test_pop3.py);
every run has a deadline and every process started here is stopped here.
"""

from __future__ import annotations

import os
import poplib
import re
import shutil
import tempfile
from pathlib import Path

import pytest

from helpers import PASSWORD, client_tls_context, free_ports, need, port_open, wait_until
from test_imap_clients import DOVECOT_IMAP, NOBODY, Dovecot, dovecot_message, login, tambo_view
from test_pop3 import dovecot_pop3, multiline

ALICE = "alice@example.test"
FOLDERS = ("INBOX", "Archive", "Entw&APw-rfe")
# Made by tambo for every user when missing, and subscribed then (SPEC §10).
SPECIAL = {"Sent", "Drafts", "Trash", "Junk"}


@pytest.fixture
def old():
    """The old server's mail root, in a temp folder Dovecot's user can reach (pytest's temp
    folders are root's alone); its Maildir is old/mail/example.test/alice."""
    root = Path(tempfile.mkdtemp(prefix="tambo-import-"))
    os.chmod(root, 0o711)
    (root / "mail" / "example.test").mkdir(parents=True)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def target(env):
    """`env` with IMAPS and POP3S on free ports, not started."""
    env.imaps_port, env.pop3s_port = free_ports(2)
    env.write_config(imaps_listen=[f"127.0.0.1:{env.imaps_port}"],
                     pop3s_listen=[f"127.0.0.1:{env.pop3s_port}"])
    return env


def subscribed(lines: list[bytes]) -> set[str]:
    """Folder names of LSUB answers (`(\\X) "." Name` or `"Name"`)."""
    names = set()
    for line in lines:
        if not line:
            continue
        text = line.decode() if isinstance(line, bytes) else line
        text = re.sub(r"^\* LSUB ", "", text.strip())
        names.add(re.search(r'\) (?:"."|NIL) "?(.*?)"?$', text).group(1))
    return names


def dovecot_writes(old: Path, maildir: Path) -> tuple[dict, set[str]]:
    """Dovecot makes folders, messages with flags and keywords, UID gaps, subscriptions;
    returns its view of each folder and its subscriptions."""
    date = '"02-Mar-2024 10:11:12 +0000"'
    d = Dovecot(old, maildir)
    try:
        for folder in FOLDERS[1:]:
            d.cmd(f'CREATE "{folder}"')
        d.cmd('SUBSCRIBE "INBOX"')
        d.cmd('SUBSCRIBE "Archive"')
        for subject, flags in (("d1", "\\Seen"), ("d2", ""), ("d3", "\\Flagged $Important"),
                               ("d4", "\\Answered \\Seen $Junk"), ("d5", "")):
            d.cmd(f"APPEND INBOX ({flags}) {date}", dovecot_message(subject))
        d.cmd(f"APPEND Archive (\\Seen $Label1) {date}", dovecot_message("a1"))
        d.cmd(f'APPEND "Entw&APw-rfe" (\\Draft) {date}', dovecot_message("draft"))
        d.cmd("SELECT INBOX")
        d.cmd("STORE 2 +FLAGS.SILENT (\\Deleted)")
        d.cmd("EXPUNGE")
        views = {f: d.view(f) for f in FOLDERS}
        subs = subscribed(d.cmd('LSUB "" "*"'))
    finally:
        d.close()
    assert sorted(views["INBOX"]["messages"]) == [1, 3, 4, 5], views
    return views, subs


def test_dovecot_maildir_is_served_the_same_after_import(old, target):
    env = target
    need(DOVECOT_IMAP, "dovecot-imapd")
    maildir = old / "mail" / "example.test" / "alice"

    # 1. Dovecot serves the Maildir: IMAP, then POP3 (UIDL of INBOX).
    views, subs = dovecot_writes(old, maildir)
    assert subs == {"INBOX", "Archive"}, subs
    home = old / "dovecot-pop3"
    home.mkdir()
    if os.getuid() == 0:
        os.chown(home, NOBODY, NOBODY)
    said = dovecot_pop3(home, maildir, ["UIDL"])
    dovecot_uidl = multiline(said, "+OK")
    assert len(dovecot_uidl) == 4, said
    assert list(maildir.glob("dovecot.index*")), "Dovecot left its index files"

    # 2. --check: nothing would differ (its index files are only a note); nothing written.
    r = env.cli("util", "import-maildir", str(maildir), ALICE, "--check")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "nothing would differ" in r.stdout, r.stdout
    assert "differs:" not in r.stdout, r.stdout
    uidv = views["INBOX"]["uidvalidity"]
    assert f"INBOX: 4 message(s), UIDVALIDITY {uidv}," in r.stdout, r.stdout
    assert "$Important" in r.stdout and "$Junk" in r.stdout, r.stdout
    assert "note: " in r.stdout and "dovecot.index" in r.stdout, r.stdout
    assert not (env.data_dir / "mail" / "example.test" / "alice").exists()

    # 3. The import.
    r = env.cli("util", "import-maildir", str(maildir), ALICE)
    assert r.returncode == 0, r.stdout + r.stderr
    new = env.data_dir / "mail" / "example.test" / "alice"
    assert (new / "dovecot-uidlist").read_text() == (maildir / "dovecot-uidlist").read_text()
    assert not list(new.glob("dovecot.index*"))
    assert "hard-linked" in r.stdout, r.stdout

    # 4. tambo serves the same UIDVALIDITY, UIDs, flags, keywords, dates and sizes...
    env.start()
    assert wait_until(lambda: port_open(env.imaps_port) and port_open(env.pop3s_port), 10), \
        env.log()
    c = login(env)
    try:
        for folder in FOLDERS:
            assert tambo_view(c, folder) == views[folder], folder
        # ... the same subscriptions (plus the special-use folders tambo makes, SPEC §10).
        typ, lsub = c.lsub('""', "*")
        assert typ == "OK", lsub
        assert subscribed(lsub) == subs | SPECIAL, lsub
    finally:
        c.logout()
    # ... and the same POP3 UIDLs.
    p = poplib.POP3_SSL("127.0.0.1", env.pop3s_port, context=client_tls_context(), timeout=20)
    try:
        p.user(ALICE)
        p.pass_(PASSWORD)
        assert [line.decode() for line in p.uidl()[1]] == dovecot_uidl
    finally:
        p.quit()

    # 5. A second import: the user has mail now; one line, exit 2, nothing changed.
    before = sorted(p.name for p in new.rglob("*"))
    r = env.cli("util", "import-maildir", str(maildir), ALICE)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stdout == "" and len(r.stderr.strip().splitlines()) == 1, r.stdout + r.stderr
    assert "already has mail" in r.stderr, r.stderr
    assert sorted(p.name for p in new.rglob("*")) == before


def test_check_and_import_refuse_what_would_differ(old, env):
    maildir = old / "mail" / "example.test" / "alice"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
        (maildir / ".Bad..Name" / sub).mkdir(parents=True)
    (maildir / "new" / "1700000000.M1P1.old.example").write_bytes(dovecot_message("one"))

    r = env.cli("util", "import-maildir", str(maildir), ALICE, "--check")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "differs: INBOX: no dovecot-uidlist: a new UIDVALIDITY" in r.stdout, r.stdout
    assert "differs: .Bad..Name: a folder name tambo refuses" in r.stdout, r.stdout
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr

    # Without --check: refused, nothing written; with --force: imported, the folder left out.
    r = env.cli("util", "import-maildir", str(maildir), ALICE)
    assert r.returncode == 2 and "--force" in r.stderr, r.stdout + r.stderr
    new = env.data_dir / "mail" / "example.test" / "alice"
    assert not new.exists()
    # As root, with a data folder of another user (tambo's own, as contrib/systemd runs it):
    # the imported files are handed to that user.
    if os.getuid() == 0:
        env.data_dir.mkdir(parents=True, exist_ok=True)
        os.chown(env.data_dir, NOBODY, NOBODY)
    r = env.cli("util", "import-maildir", str(maildir), ALICE, "--force")
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(list((new / "new").iterdir())) == 1
    assert not (new / ".Bad..Name").exists()
    if os.getuid() == 0:
        assert "handed to uid 65534" in r.stdout, r.stdout
        for path in [new.parent, new, *new.rglob("*")]:
            assert path.stat().st_uid == NOBODY, path

    # Not a user, not a Maildir: exit 2.
    r = env.cli("util", "import-maildir", str(maildir), "nobody@example.test", "--check")
    assert r.returncode == 2 and "no such user" in r.stderr, r.stderr
    r = env.cli("util", "import-maildir", str(old), ALICE, "--check")
    assert r.returncode == 2 and "not a Maildir" in r.stderr, r.stderr
