"""IMAP with the real clients SPEC §10 names: mbsync (isync) and offlineimap3 syncing both
ways, neomutt driven in tmux, and Dovecot's own IMAP server on the same Maildir before and
after tambo (the on-disk formats are Dovecot's: dovecot-uidlist, dovecot-keywords, file name
flags).

Each client runs with a configuration of the test's own in the test's temp folder, against a
server on loopback; every run has a deadline and every process started here is stopped here.
A test whose client is not installed is skipped, naming the Debian package (tests/install-deps.sh
lists them); with TAMBO_REQUIRE_PEERS=1 (tests/run.sh, which has installed them) it fails.
"""

from __future__ import annotations

import hashlib
import imaplib
import os
import pty
import queue
import re
import select
import shlex
import shutil
import smtplib
import ssl
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from helpers import (PASSWORD, client_tls_context, free_ports, make_message, need, port_open,
                     wait_until)

ALICE = "alice@example.test"
RUN_DEADLINE = 60.0  # one run of a sync client
SCREEN_DEADLINE = 20.0  # one screen of neomutt


def cert_file(env) -> Path:
    """The server's self-signed certificate (generated on first start: no conf/certs)."""
    return env.data_dir / "certs" / "self-signed" / "fullchain.pem"


def login(env) -> imaplib.IMAP4_SSL:
    c = imaplib.IMAP4_SSL("127.0.0.1", env.imaps_port, ssl_context=client_tls_context(),
                          timeout=20)
    assert c.login(ALICE, PASSWORD)[0] == "OK"
    return c


def deliver(env, subject: str) -> str:
    msg, msgid = make_message(subject=subject, body=f"Body of {subject}.\r\n")
    with smtplib.SMTP("127.0.0.1", env.smtp_port, local_hostname="client.example",
                      timeout=20) as s:
        s.sendmail("sender@remote.example", [ALICE], msg)
    return msgid


def deliver_all(env, subjects: list[str]) -> None:
    for s in subjects:
        deliver(env, s)
    env.wait_messages(len(subjects))


def run(argv: list[str], what: str, deadline: float = RUN_DEADLINE,
        env: dict | None = None) -> subprocess.CompletedProcess:
    """Runs a client to its end within the deadline (killed past it: a hang fails the test)."""
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=deadline,
                              stdin=subprocess.DEVNULL, env=env)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{what} did not finish within {deadline}s\nstdout: {e.stdout}\n"
                    f"stderr: {e.stderr}", pytrace=False)


def change_on_server(env, flag: str) -> None:
    """The server's side of a two-way sync: "four" delivered, `flag` set on "two" over IMAP."""
    deliver(env, "four")
    assert wait_until(lambda: "four" in subjects(env.maildir())), env.log()
    c = login(env)
    c.select("INBOX")
    typ, data = c.search(None, "SUBJECT", "two")
    assert typ == "OK" and len(data[0].split()) == 1, data
    assert c.store(data[0].decode(), "+FLAGS", flag)[0] == "OK"
    c.logout()


# ---- the files on either side ----------------------------------------------------------------


def message_files(root: Path) -> dict[str, bytes]:
    """Every message file under a Maildir tree, by path relative to `root` (flags included in
    the name): what a sync must not change when nothing is to be synced."""
    out = {}
    for sub in sorted(root.rglob("*")):
        if sub.is_file() and sub.parent.name in ("cur", "new"):
            out[str(sub.relative_to(root))] = sub.read_bytes()
    return out


def folder_files(folder: Path) -> list[tuple[str, Path]]:
    """(subject, path) of each message file in one Maildir folder, new/ and cur/."""
    out = []
    for sub in ("new", "cur"):
        d = folder / sub
        if d.is_dir():
            for f in d.iterdir():
                m = re.search(rb"^Subject: (.*?)\r?$", f.read_bytes(), re.M)
                out.append((m.group(1).decode() if m else "", f))
    return sorted(out)


def folder_messages(folder: Path) -> list[tuple[str, str, bytes]]:
    """(subject, maildir flags, body bytes) of each message in one Maildir folder."""
    return sorted((s, f.name.split(":2,", 1)[1] if ":2," in f.name else "", f.read_bytes())
                  for s, f in folder_files(folder))


def set_flags(path: Path, flags: str) -> None:
    """Gives a message file the Maildir flags `flags`, as a client of that Maildir does:
    renamed into cur/ with the info `:2,<flags>`."""
    path.rename(path.parent.parent / "cur" / f"{path.name.split(':2,', 1)[0]}:2,{flags}")


def subjects(folder: Path) -> list[str]:
    return [s for s, _, _ in folder_messages(folder)]


def flags_of(folder: Path, subject: str) -> str:
    found = [f for s, f, _ in folder_messages(folder) if s == subject]
    assert len(found) == 1, (subject, folder_messages(folder))
    return found[0]


def without_tuid(message: bytes) -> bytes:
    return re.sub(rb"^X-TUID: \S+\r?\n", b"", message, count=1, flags=re.M)


def plain_flags(flags: str) -> str:
    """Maildir flag letters without keyword letters (a..z)."""
    return "".join(c for c in flags if c.isupper())


# ---- mbsync ----------------------------------------------------------------------------------


def mbsync_config(env, tmp: Path, tls: str) -> Path:
    near = tmp / "mbsync-near"
    near.mkdir()
    port, ssl_type = (env.imaps_port, "IMAPS") if tls == "implicit" else (env.imap_port, "STARTTLS")
    conf = tmp / "mbsyncrc"
    conf.write_text(f"""\
IMAPAccount tambo
Host 127.0.0.1
Port {port}
User {ALICE}
Pass "{PASSWORD}"
SSLType {ssl_type}
CertificateFile {cert_file(env)}

IMAPStore far
Account tambo

MaildirStore near
Path {near}/
Inbox {near}/INBOX
SubFolders Verbatim

Channel all
Far :far:
Near :near:
Patterns *
Sync All
Create Both
Expunge Both
SyncState *
""")
    return conf


def run_on_tty(argv: list[str], what: str, deadline: float = RUN_DEADLINE) -> tuple[int, str]:
    """Runs a program with a terminal as its stdout and stderr (mbsync prints its counters
    only to a terminal); returns its exit status and everything it wrote."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
    os.close(slave)
    out = b""
    end = time.monotonic() + deadline
    try:
        while time.monotonic() < end:
            ready, _, _ = select.select([master], [], [], 0.2)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the program closed the terminal
                break
            if not chunk:
                break
            out += chunk
        else:
            pytest.fail(f"{what} did not finish within {deadline}s; output:\n{out.decode()}",
                        pytrace=False)
        return proc.wait(5), out.decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        os.close(master)


def mbsync(conf: Path) -> dict[str, tuple[int, ...]]:
    """One run of mbsync; returns its final counters: {"F": (...), "N": (...)}, each the
    (new, flags changed, trashed) messages propagated to the far (F) or near (N) side."""
    status, out = run_on_tty([need("mbsync", "isync"), "-c", str(conf), "all"], "mbsync")
    assert status == 0, f"mbsync exit {status}:\n{out}"
    # Anything but the counters and the notices about its own Maildir (a new UIDVALIDITY
    # there, a pause after a recent change) is an error or a warning about the server.
    said = [l for l in out.replace("\r", "\n").splitlines()
            if l.strip() and not l.startswith("C: ") and not l.startswith("Maildir notice: ")]
    assert not said, f"mbsync said:\n{out}"
    last = out.replace("\r", "\n").strip().splitlines()[-1]
    m = re.fullmatch(r"C: 1/1  B: (\d+)/\1  F: \+(\d+)/\2 \*(\d+)/\3 #(\d+)/\4  "
                     r"N: \+(\d+)/\5 \*(\d+)/\6 #(\d+)/\7", last)
    assert m, f"mbsync's last counters: {last!r}\n{out}"
    n = [int(x) for x in m.groups()[1:]]
    return {"F": tuple(n[0:3]), "N": tuple(n[3:6])}


@pytest.mark.parametrize("tls", ["implicit", "starttls"])
def test_mbsync_both_ways_then_nothing(imap, tmp_path, tls):
    need("mbsync", "isync")
    deliver_all(imap, ["one", "two", "three"])
    conf = mbsync_config(imap, tmp_path, tls)
    near, far = tmp_path / "mbsync-near", imap.maildir()

    # 1. Down: the three messages, and the special folders, are created on the near side.
    assert mbsync(conf) == {"F": (0, 0, 0), "N": (3, 0, 0)}
    assert subjects(near / "INBOX") == ["one", "three", "two"]
    for folder in ("Sent", "Drafts", "Trash", "Junk"):
        assert (near / folder / "cur").is_dir(), folder
    # Byte for byte, but for the X-TUID header mbsync adds to the messages it stores (to find
    # them again after an interruption).
    original = {s: without_tuid(body) for s, _, body in folder_messages(near / "INBOX")}
    for s, _, body in folder_messages(far):
        assert original[s] == body, s

    # 2. Both ways: near, flags changed, a message added, one deleted; far, a message
    # delivered and a flag set on a message whose flags changed near too.
    inbox = near / "INBOX"
    renames = {"one": "FS", "two": "RS", "three": "ST"}
    for subject, f in folder_files(inbox):
        set_flags(f, renames[subject])
    added, _ = make_message(subject="written locally", body="Drafted offline.\r\n")
    (inbox / "new" / "1700000000.local1.near").write_bytes(added)
    (near / "Sent" / "cur" / "1700000001.local2.near:2,S").write_bytes(
        make_message(subject="sent locally")[0])
    # A new folder and its child near: created far (Create Both), "/" becoming ".".
    for folder, subject in (("Projects", "project"), ("Projects/2024", "project 2024")):
        for sub in ("cur", "new", "tmp"):
            (near / folder / sub).mkdir(parents=True)
        (near / folder / "cur" / f"1700000002.{subject[-4:]}.near:2,S").write_bytes(
            make_message(subject=subject)[0])
    change_on_server(imap, "\\Flagged")
    assert mbsync(conf) == {"F": (4, 3, 0), "N": (1, 1, 0)}

    # The server's files: flags in the names (both sides' changes to "two"), the new messages
    # appended, the deleted one (T, with Expunge Both) gone on both sides.
    assert subjects(far) == ["four", "one", "two", "written locally"], folder_messages(far)
    assert plain_flags(flags_of(far, "one")) == "FS"
    assert plain_flags(flags_of(far, "two")) == "FRS"
    assert subjects(inbox) == ["four", "one", "two", "written locally"]
    assert plain_flags(flags_of(inbox, "two")) == "FRS"
    assert subjects(imap.maildir() / ".Sent") == ["sent locally"]
    assert subjects(imap.maildir() / ".Projects") == ["project"]
    assert subjects(imap.maildir() / ".Projects.2024") == ["project 2024"]
    c = login(imap)
    c.select("INBOX")
    typ, data = c.uid("SEARCH", "SUBJECT", '"written locally"')
    assert typ == "OK" and data[0].strip(), data
    c.logout()
    # mbsync paired every message with its far UID (APPENDUID for those it appended).
    state = (inbox / ".mbsyncstate").read_text().split("\n\n", 1)[1].split("\n")
    pairs = [tuple(int(x) for x in line.split()[:2]) for line in state if line.strip()]
    assert len(pairs) == 4 and all(far_uid and near_uid for far_uid, near_uid in pairs), state

    # 3. Again: nothing to do, nothing changes on either side.
    before = (message_files(far), message_files(near))
    uidlist = (far / "dovecot-uidlist").read_text()
    r = mbsync(conf)
    after = (message_files(far), message_files(near))
    assert after == before, r
    assert (far / "dovecot-uidlist").read_text() == uidlist
    assert r == {"F": (0, 0, 0), "N": (0, 0, 0)}


# ---- offlineimap3 ----------------------------------------------------------------------------


def offlineimap_config(env, tmp: Path) -> Path:
    der = ssl.PEM_cert_to_DER_cert(cert_file(env).read_text())
    local = tmp / "offlineimap-local"
    conf = tmp / "offlineimaprc"
    conf.write_text(f"""\
[general]
accounts = tambo
metadata = {tmp / "offlineimap-meta"}

[Account tambo]
localrepository = local
remoterepository = remote

[Repository local]
type = Maildir
localfolders = {local}

[Repository remote]
type = IMAP
remotehost = 127.0.0.1
remoteport = {env.imaps_port}
remoteuser = {ALICE}
remotepass = {PASSWORD}
ssl = yes
cert_fingerprint = {hashlib.sha256(der).hexdigest()}
""")
    return conf


def offlineimap(conf: Path) -> str:
    r = run([need("offlineimap", "offlineimap3"), "-c", str(conf), "-o", "-u", "basic"],
            "offlineimap")
    out = r.stdout + r.stderr
    assert r.returncode == 0, f"offlineimap exit {r.returncode}:\n{out}"
    assert not re.search(r"ERROR|WARNING|Traceback", out), out
    return out


def test_offlineimap_sync_change_sync_nothing_duplicated(imap, tmp_path):
    need("offlineimap", "offlineimap3")
    deliver_all(imap, ["one", "two", "three"])
    conf = offlineimap_config(imap, tmp_path)
    local, far = tmp_path / "offlineimap-local" / "INBOX", imap.maildir()

    offlineimap(conf)
    assert subjects(local) == ["one", "three", "two"]
    for folder in ("Sent", "Drafts", "Trash", "Junk"):
        assert (tmp_path / "offlineimap-local" / folder / "cur").is_dir(), folder

    # Changes on both sides: local flags, a local message, a local deletion; on the server a
    # new message and a flag.
    files = dict(folder_files(local))
    set_flags(files["one"], "FS")
    files["three"].unlink()
    added, _ = make_message(subject="written locally", body="Drafted offline.\r\n")
    (local / "new" / "1700000000.local1.near").write_bytes(added)
    change_on_server(imap, "\\Answered")
    out = offlineimap(conf)
    assert "Copy message UID -1 (1/1) local:INBOX -> remote:INBOX" in out, out

    expected = ["four", "one", "two", "written locally"]
    assert subjects(far) == expected, folder_messages(far)
    assert subjects(local) == expected, folder_messages(local)
    assert plain_flags(flags_of(far, "one")) == "FS"
    assert plain_flags(flags_of(local, "two")) == "R"

    # Again: nothing is duplicated, nothing changes.
    before = (message_files(far), message_files(local))
    offlineimap(conf)
    assert (message_files(far), message_files(local)) == before
    c = login(imap)
    typ, data = c.status("INBOX", "(MESSAGES)")
    assert re.fullmatch(rb'"?INBOX"? \(MESSAGES 4\)', data[0]), data
    c.select("INBOX")
    typ, data = c.uid("SEARCH", "ALL")
    c.logout()
    # Each local file names the server's UID of its message (the appended one's from the
    # APPENDUID code), one file per UID.
    local_uids = sorted(int(re.search(r",U=(\d+)", name).group(1))
                        for name in message_files(local))
    assert local_uids == sorted(int(x) for x in data[0].split()), (local_uids, data)


# ---- neomutt in tmux -------------------------------------------------------------------------


class Tmux:
    """A tmux server of the test's own (its socket in the temp folder) running one program in
    a detached session; the screen is read with capture-pane."""

    def __init__(self, tmp: Path, argv: list[str], env: dict[str, str]):
        self.tmux = need("tmux", "tmux")
        self.socket = tmp / "tmux.sock"
        self.env = env
        self.started = False
        r = self.cmd("new-session", "-d", "-s", "t", "-x", "160", "-y", "48",
                     " ".join(shlex.quote(a) for a in argv))
        self.started = True  # kill-server at close() even when new-session half failed
        assert r.returncode == 0, f"tmux new-session: {r.stderr}"

    def cmd(self, *args: str) -> subprocess.CompletedProcess:
        r = run([self.tmux, "-S", str(self.socket), "-f", "/dev/null", *args], "tmux",
                deadline=10, env=self.env)
        return r

    def screen(self) -> str:
        return self.cmd("capture-pane", "-p", "-t", "t").stdout

    def keys(self, *keys: str) -> None:
        r = self.cmd("send-keys", "-t", "t", *keys)
        assert r.returncode == 0, r.stderr

    def wait_for(self, what, deadline: float = SCREEN_DEADLINE) -> str:
        """Polls the screen until `what` (a regex, or a predicate on the screen) holds."""
        pred = what if callable(what) else (lambda s: re.search(what, s))
        last = ""

        def check():
            nonlocal last
            last = self.screen()
            return pred(last)

        if not wait_until(check, deadline, interval=0.1):
            pytest.fail(f"neomutt's screen did not show {what!r} within {deadline}s:\n{last}",
                        pytrace=False)
        return last

    def alive(self) -> bool:
        return self.cmd("has-session", "-t", "t").returncode == 0

    def close(self) -> None:
        if self.started:
            self.cmd("kill-session", "-t", "t")
            self.cmd("kill-server")


def neomutt_config(env, tmp: Path) -> Path:
    certs = tmp / "neomutt-certificates"
    shutil.copy(cert_file(env), certs)  # trusted: the server's certificate itself
    rc = tmp / "neomuttrc"
    rc.write_text(f"""\
set folder = "imaps://alice%40example.test@127.0.0.1:{env.imaps_port}/"
set spoolfile = "+INBOX"
set imap_pass = "{PASSWORD}"
set certificate_file = "{certs}"
set ssl_verify_host = no
set ssl_force_tls = yes
set header_cache = ""
set message_cachedir = ""
set record = ""
set copy = no
set delete = yes
set confirmcreate = no
set confirmappend = no
set move = no
set mark_old = no
set wait_key = no
set sleep_time = 0
set beep = no
set help = no
set sort = subject
set resolve = no
set imap_idle = yes
set mail_check = 1
set timeout = 1
""")
    return rc


def test_neomutt_reads_flags_and_saves_to_a_folder(imap, tmp_path):
    need("neomutt", "neomutt")
    need("tmux", "tmux")
    deliver_all(imap, ["neomutt first", "neomutt second"])
    rc = neomutt_config(imap, tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
           "TERM": "xterm", "LANG": "C.UTF-8", "TMUX_TMPDIR": str(tmp_path)}
    # -n: no system neomuttrc; -d 2 -l: its IMAP dialog logged, for a failure's post-mortem.
    argv = [need("neomutt", "neomutt"), "-n", "-F", str(rc), "-d", "2",
            "-l", str(tmp_path / "neomutt.log")]
    tmux = Tmux(tmp_path, argv, env)
    try:
        # The index of INBOX, sorted by subject: "first" is the first line and has the cursor.
        tmux.wait_for(r"neomutt first(.|\n)*neomutt second")
        # New mail while the index is open: neomutt idles (IDLE) and is told.
        deliver(imap, "neomutt third")
        tmux.wait_for(r"neomutt second(.|\n)*neomutt third")
        # Read it.
        tmux.keys("Enter")
        tmux.wait_for(r"Body of neomutt first\.")
        tmux.keys("q")
        tmux.wait_for(r"neomutt second")
        # Flag it, then save it to =Archive (which neomutt creates).
        tmux.keys("F")
        tmux.wait_for(r"(?m)^ *1 +\S*!\S* .*neomutt first")
        tmux.keys("s")
        tmux.wait_for(r"Save to mailbox")
        tmux.keys("C-u", "=Archive", "Enter")
        # Saved, so marked deleted.
        tmux.wait_for(r"(?m)^ *1 +\S*D\S* .*neomutt first")
        # Quit: the saved message, marked deleted, is expunged.
        tmux.keys("q")
        if not wait_until(lambda: not tmux.alive(), SCREEN_DEADLINE, interval=0.1):
            pytest.fail(f"neomutt did not quit:\n{tmux.screen()}", pytrace=False)
    finally:
        screen = tmux.screen() if tmux.alive() else ""
        tmux.close()

    archive = imap.maildir() / ".Archive"
    assert subjects(imap.maildir()) == ["neomutt second", "neomutt third"], (
        folder_messages(imap.maildir()), screen)
    # The files: the saved copy in the folder .Archive, in cur/ with the info ":2,FS" (read,
    # then flagged: the flags neomutt stored before its COPY), and no keyword letters.
    [(subject, saved)] = folder_files(archive)
    assert subject == "neomutt first" and saved.parent.name == "cur", saved
    assert saved.name.endswith(":2,FS"), saved
    for subject in ("neomutt second", "neomutt third"):
        assert plain_flags(flags_of(imap.maildir(), subject)) == "", folder_files(imap.maildir())


# ---- Dovecot on the same Maildir -------------------------------------------------------------

DOVECOT_IMAP = "/usr/lib/dovecot/imap"
NOBODY = 65534


class Dovecot:
    """Dovecot's IMAP server on the user's Maildir, preauthenticated on stdin and stdout, with
    a configuration of the test's own (as src/mailbox/summary/dovecot.rs runs it). Commands
    are sent one at a time, each answer read to its tagged line within a deadline."""

    def __init__(self, tmp: Path, maildir: Path):
        program = need(DOVECOT_IMAP, "dovecot-imapd")
        home = tmp / "dovecot"
        home.mkdir(exist_ok=True)
        # Dovecot runs mail processes as neither root nor a system user: as root, it runs as
        # nobody, who must own the Maildir (tambo, as root, can still use it).
        uid, gid = os.getuid(), os.getgid()
        if uid == 0:
            uid = gid = NOBODY
            chown_tree(maildir.parent.parent, uid, gid)  # mail/<domain>/: Dovecot creates <user>
        conf = home / "dovecot.conf"
        conf.write_text(
            f"base_dir = {home}/run\nstate_dir = {home}/state\nlog_path = /dev/stderr\n"
            f"mail_location = maildir:{maildir}\nssl = no\nprotocols = imap\nlisten =\n"
            f"mail_uid = {uid}\nmail_gid = {gid}\nfirst_valid_uid = 1\nfirst_valid_gid = 1\n")
        self.proc = subprocess.Popen(
            [program, "-c", str(conf)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, env={"USER": "alice", "HOME": str(home)})
        self.lines: queue.Queue = queue.Queue()
        self.stderr = b""
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        self.n = 0
        try:
            greeting = self._line()
            assert greeting.startswith(b"* PREAUTH"), greeting
        except BaseException:
            self.kill()
            raise

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _read_stderr(self) -> None:
        self.stderr = self.proc.stderr.read()

    def _line(self, deadline: float = 20.0) -> bytes:
        try:
            line = self.lines.get(timeout=deadline)
        except queue.Empty:
            pytest.fail(f"Dovecot said nothing for {deadline}s", pytrace=False)
        if line is None:
            time.sleep(0.2)
            pytest.fail(f"Dovecot's imap ended: {self.stderr.decode(errors='replace')}",
                        pytrace=False)
        return line

    def cmd(self, command: str, literal: bytes | None = None) -> list[bytes]:
        """Sends one command (with a LITERAL+ literal after it, if any); returns the untagged
        lines of its answer; fails unless it ends in OK."""
        self.n += 1
        tag = f"d{self.n}".encode()
        data = tag + b" " + command.encode()
        if literal is not None:
            data += b" {%d+}\r\n" % len(literal) + literal
        self.proc.stdin.write(data + b"\r\n")
        self.proc.stdin.flush()
        untagged = []
        while True:
            line = self._line()
            if line.startswith(tag + b" "):
                assert line.startswith(tag + b" OK"), (command, line, untagged)
                return untagged
            untagged.append(line)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.cmd("LOGOUT")
            finally:
                self.proc.stdin.close()
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.kill()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(5)

    def view(self, folder: str) -> dict:
        """What Dovecot says of a folder: UIDVALIDITY, UIDNEXT, and per UID the flags (less
        \\Recent, a per-session flag), INTERNALDATE and RFC822.SIZE."""
        status = b" ".join(self.cmd(f'STATUS "{folder}" (UIDVALIDITY UIDNEXT MESSAGES)'))
        self.cmd(f'EXAMINE "{folder}"')
        fetched = self.cmd("UID FETCH 1:* (UID FLAGS INTERNALDATE RFC822.SIZE)")
        return folder_view(status, fetched)


def chown_tree(root: Path, uid: int, gid: int) -> None:
    os.chown(root, uid, gid)
    for path in root.rglob("*"):
        os.chown(path, uid, gid, follow_symlinks=False)


def folder_view(status: bytes, fetched: list[bytes]) -> dict:
    """{"uidvalidity", "uidnext", "messages": {uid: (flags, internaldate, size)}} from the
    answers to STATUS and UID FETCH (UID FLAGS INTERNALDATE RFC822.SIZE), whoever gave them."""
    text = status.decode()
    view = {
        "uidvalidity": int(re.search(r"UIDVALIDITY (\d+)", text).group(1)),
        "uidnext": int(re.search(r"UIDNEXT (\d+)", text).group(1)),
        "messages": {},
    }
    count = int(re.search(r"MESSAGES (\d+)", text).group(1))
    for line in fetched:
        line = line.decode()
        if not re.search(r"\(UID \d+ ", line):  # imaplib drops "* n FETCH"
            continue
        uid = int(re.search(r"UID (\d+)", line).group(1))
        flags = re.search(r"FLAGS \(([^)]*)\)", line).group(1).split()
        date = re.search(r'INTERNALDATE "([^"]+)"', line).group(1)
        size = int(re.search(r"RFC822\.SIZE (\d+)", line).group(1))
        view["messages"][uid] = (sorted(f for f in flags if f != "\\Recent"), date, size)
    assert len(view["messages"]) == count, (text, fetched)
    return view


def tambo_view(c: imaplib.IMAP4, folder: str) -> dict:
    typ, status = c.status(folder, "(UIDVALIDITY UIDNEXT MESSAGES)")
    assert typ == "OK", status
    typ, _ = c.select(folder, readonly=True)
    assert typ == "OK"
    typ, fetched = c.uid("FETCH", "1:*", "(UID FLAGS INTERNALDATE RFC822.SIZE)")
    assert typ == "OK", fetched
    return folder_view(status[0], [f for f in fetched if f])


def dovecot_message(subject: str) -> bytes:
    return make_message(subject=subject, body=f"Body of {subject}.\r\n")[0]


@pytest.fixture
def shared(env, tmp_path):
    """`env` not started, its data_dir in a temp folder that Dovecot's user can reach (pytest's
    temp folders are root's alone), and IMAP on free ports."""
    data = Path(tempfile.mkdtemp(prefix="tambo-dovecot-"))
    os.chmod(data, 0o711)
    (data / "mail" / "example.test").mkdir(parents=True)
    os.symlink(data, env.data_dir)
    env.imap_port, env.imaps_port = free_ports(2)
    env.write_config(imap_listen=[f"127.0.0.1:{env.imap_port}"],
                     imaps_listen=[f"127.0.0.1:{env.imaps_port}"])
    yield env
    env.stop()
    shutil.rmtree(data, ignore_errors=True)


# Made by Dovecot: a child folder, and "Entwürfe" in modified UTF-7 (RFC 3501 §5.1.3).
FOLDERS = ("INBOX", "Archive", "Archive.2024", "Entw&APw-rfe")


def test_dovecot_then_tambo_then_dovecot_agree(shared, tmp_path):
    env = shared
    need(DOVECOT_IMAP, "dovecot-imapd")
    maildir = (env.data_dir / "mail" / "example.test" / "alice").resolve()
    date = '"02-Mar-2024 10:11:12 +0000"'

    # 1. Dovecot writes the Maildir: a folder, messages with flags and keywords, expunged
    #    ones (the last UID too: UIDNEXT stays above the highest UID left).
    d = Dovecot(tmp_path, maildir)
    try:
        for folder in FOLDERS[1:]:
            d.cmd(f'CREATE "{folder}"')
        d.cmd('SUBSCRIBE "Archive"')
        d.cmd(f"APPEND Archive.2024 () {date}", dovecot_message("a2024"))
        d.cmd(f'APPEND "Entw&APw-rfe" (\\Draft) {date}', dovecot_message("draft"))
        for subject, flags in (("d1", "\\Seen"), ("d2", ""), ("d3", "\\Flagged $Important"),
                               ("d4", "\\Answered \\Seen"), ("d5", ""), ("d6", "\\Seen")):
            d.cmd(f"APPEND INBOX ({flags}) {date}", dovecot_message(subject))
        d.cmd(f"APPEND Archive (\\Seen $Label1) {date}", dovecot_message("a1"))
        d.cmd("SELECT INBOX")
        d.cmd("STORE 2,6 +FLAGS.SILENT (\\Deleted)")
        d.cmd("EXPUNGE")
        d.cmd("STORE 3 +FLAGS.SILENT (\\Draft $Label1)")
        before = {f: d.view(f) for f in FOLDERS}
    finally:
        d.close()
    assert sorted(before["INBOX"]["messages"]) == [1, 3, 4, 5], before
    assert before["INBOX"]["uidnext"] == 7, before
    assert (maildir / "dovecot-uidlist").is_file() and (maildir / "dovecot-keywords").is_file()

    # 2. tambo sees the same.
    env.start()
    assert wait_until(lambda: port_open(env.imaps_port), 10), env.log()
    c = login(env)
    try:
        for folder in FOLDERS:
            assert tambo_view(c, folder) == before[folder], folder
        typ, subs = c.lsub('""', "*")
        assert any(b"Archive" in s for s in subs), subs
        typ, listed = c.list('""', "*")
        for folder in FOLDERS:
            assert any(s.endswith(f' "{folder}"'.encode()) or s.endswith(f" {folder}".encode())
                       for s in listed), (folder, listed)

        # tambo changes flags and keywords, appends, receives mail, moves and expunges.
        c.select("INBOX")
        assert c.uid("STORE", "1", "+FLAGS", "(\\Flagged $Label2)")[0] == "OK"
        assert c.uid("STORE", "3", "-FLAGS", "(\\Flagged $Important)")[0] == "OK"
        assert c.uid("STORE", "5", "FLAGS", "(\\Seen $Label1)")[0] == "OK"
        typ, data = c.append("INBOX", "(\\Seen $Label3)", None, dovecot_message("t1"))
        assert typ == "OK", data
        assert c.uid("MOVE", "4", "Archive")[0] == "OK"
        deliver(env, "t2")
        c.noop()
        assert c.uid("STORE", "3", "+FLAGS", "(\\Deleted)")[0] == "OK"
        assert c.expunge()[0] == "OK"
        after = {f: tambo_view(c, f) for f in FOLDERS}
    finally:
        c.logout()
    assert sorted(after["INBOX"]["messages"]) == [1, 5, 7, 8], after
    assert after["INBOX"]["uidvalidity"] == before["INBOX"]["uidvalidity"]
    assert len(after["Archive"]["messages"]) == 2, after

    # 3. Dovecot sees what tambo left, the UIDs it gave included, and the bytes it appended.
    # 4. Then, while a tambo session has INBOX open, Dovecot changes it: the session is told.
    c = login(env)
    c.select("INBOX")
    d = Dovecot(tmp_path, maildir)
    try:
        for folder in FOLDERS:
            assert d.view(folder) == after[folder], folder
        d.cmd("SELECT INBOX")
        body = b"".join(d.cmd("UID FETCH 7 BODY.PEEK[]"))
        assert dovecot_message("t1").split(b"Message-ID")[0] in body, body
        d.cmd("UID STORE 1 -FLAGS.SILENT (\\Seen $Label2)")
        d.cmd("UID STORE 8 +FLAGS.SILENT (\\Deleted)")
        d.cmd("EXPUNGE")
        d.cmd(f"APPEND INBOX (\\Flagged) {date}", dovecot_message("d7"))
        last = d.view("INBOX")
    finally:
        d.close()
    try:
        c.noop()
        assert c.untagged_responses.get("EXPUNGE") == [b"4"], c.untagged_responses
        assert tambo_view(c, "INBOX") == last
        assert sorted(last["messages"]) == [1, 5, 7, 9], last
    finally:
        c.logout()
