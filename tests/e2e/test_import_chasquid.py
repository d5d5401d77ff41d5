"""`tambo util import-chasquid` (issue 6 item 4): a chasquid config folder made with Debian's
real `chasquid-util` is converted, the old passwords keep working (util authenticate and SMTP
AUTH on submission), and what could not be converted is reported; bad input exits 2 with
nothing written."""

from __future__ import annotations

import json
import os
import shutil
import smtplib
import ssl
import subprocess
from pathlib import Path

import pytest

from helpers import HOSTNAME, TAMBO_BIN, Tambo, client_tls_context, failing_dns, make_message, mode
from peers import CertAuthority, openssl

CHASQUID_UTIL = shutil.which("chasquid-util") or "/usr/bin/chasquid-util"
DEBIAN_HOOK = Path("/etc/chasquid/hooks/post-data")
DOMAIN = "example.test"
ALICE, BOB, CAROL, DAVE = (f"{u}@{DOMAIN}" for u in ("alice", "bob", "carol", "dave"))
PASSWORDS = {ALICE: "alice's old pw", BOB: 'b0b "quoted" \\ pass', CAROL: "carol plain pw"}

pytestmark = pytest.mark.skipif(not Path(CHASQUID_UTIL).exists(), reason="needs chasquid-util")


def chasquid_util(cdir: Path, *args: str) -> None:
    r = subprocess.run([CHASQUID_UTIL, f"--configdir={cdir}", *args],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"chasquid-util {args}: {r.stdout}{r.stderr}"


def run_import(t: Tambo, src: Path) -> subprocess.CompletedProcess:
    return t.cli("util", "import-chasquid", str(src), timeout=120)


def tree(d: Path) -> dict[str, bytes | str]:
    """Every path under d with its contents (files) or link target, for "nothing changed"."""
    if not d.exists():
        return {}
    out: dict[str, bytes | str] = {}
    for p in sorted(d.rglob("*")):
        rel = str(p.relative_to(d))
        out[rel] = ("-> " + os.readlink(p)) if p.is_symlink() else (
            p.read_bytes() if p.is_file() else "dir")
    return out


def empty_target(tmp_path: Path) -> Tambo:
    """A Tambo whose config folder is empty (the import writes conf/tambo.json itself)."""
    t = Tambo(tmp_path)
    shutil.rmtree(t.dir)
    t.dir.mkdir()
    return t


@pytest.fixture
def chasquid_dir(tmp_path) -> tuple[Path, Tambo, dict]:
    """A chasquid folder as a real installation has it, listening on the test's free ports."""
    t = empty_target(tmp_path)
    src = tmp_path / "etc-chasquid"
    (src / "domains" / DOMAIN).mkdir(parents=True)
    (src / "certs").mkdir()
    (src / "hooks").mkdir()
    (src / "chasquid.conf").write_text(
        "# chasquid.conf as an admin writes it\n"
        f'hostname: "{HOSTNAME}"\n'
        "max_data_size_mb: 20\n"
        f'smtp_address: "127.0.0.1:{t.smtp_port}"\n'
        f'submission_address: "127.0.0.1:{t.submission_port}"\n'
        f'submission_over_tls_address: "127.0.0.1:{t.submission_tls_port}"\n'
        'data_dir: "/var/lib/chasquid"\n'
        'mail_log_path: "<syslog>"\n'
        "dovecot_auth: true\n"
        'suffix_separators: "+-"\n')
    for addr in (ALICE, BOB):
        chasquid_util(src, "user-add", addr, f"--password={PASSWORDS[addr]}")
    users = src / "domains" / DOMAIN / "users"
    # chasquid's other two schemes, in the format its userdb.proto defines: "plain" (which
    # this chasquid-util still reads back), then "denied" (newer than Debian's chasquid).
    with users.open("a") as f:
        f.write('users: {\n  key: "carol"\n  value: {\n    plain: {\n'
                f'      password: "{PASSWORDS[CAROL]}"\n    }}\n  }}\n}}\n')
    chasquid_util(src, "authenticate", CAROL, f"--password={PASSWORDS[CAROL]}")
    with users.open("a") as f:
        f.write('users: {\n  key: "dave"\n  value: {\n    denied: {}\n  }\n}\n')
    (src / "domains" / DOMAIN / "aliases").write_text(
        "# chasquid aliases\ninfo: alice, bob\npostmaster: alice\n")
    dkim = src / "domains" / DOMAIN
    openssl("genpkey", "-algorithm", "ed25519", "-out", str(dkim / "dkim:ed.pem"))
    openssl("genpkey", "-algorithm", "rsa", "-pkeyopt", "rsa_keygen_bits:2048",
            "-out", str(dkim / "dkim:rsa.pem"))
    (dkim / "dkim:broken.pem").write_text("not a key\n")
    # One certificate copied as files, one as certbot's live/ folder linked in.
    ca = CertAuthority(tmp_path)
    cert, key = ca.issue([HOSTNAME], tag="mx")
    (src / "certs" / HOSTNAME).mkdir()
    shutil.copy(cert, src / "certs" / HOSTNAME / "fullchain.pem")
    shutil.copy(key, src / "certs" / HOSTNAME / "privkey.pem")
    live = tmp_path / "letsencrypt" / "live" / "other.example.test"
    live.mkdir(parents=True)
    cert2, key2 = ca.issue(["other.example.test"], tag="other")
    shutil.copy(cert2, live / "fullchain.pem")
    shutil.copy(key2, live / "privkey.pem")
    (src / "certs" / "other.example.test").symlink_to(live)
    (src / "certs" / "README.certs").write_text("certificates go here\n")
    hook = src / "hooks" / "post-data"
    if DEBIAN_HOOK.is_file():
        shutil.copy(DEBIAN_HOOK, hook)
    else:
        hook.write_text("#!/bin/sh\nexit 0\n")
    hook.chmod(0o755)
    (src / "hooks" / "alias-resolve").write_text("#!/bin/sh\n")
    return src, t, {"cert": cert.read_bytes(), "live": live}


def authenticate(t: Tambo, addr: str, password: str) -> int:
    return t.cli("util", "authenticate", addr, "--password", password).returncode


def test_import_keeps_passwords_and_reports(chasquid_dir):
    src, t, extra = chasquid_dir
    r = run_import(t, src)
    assert r.returncode == 0, f"stdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    out = r.stdout
    for line in [
        "converted: chasquid.conf: hostname: -> \"hostname\": \"mx.example.test\"",
        "converted: chasquid.conf: max_data_size_mb: -> \"max_message_size_mb\": 20",
        f"converted: domains/{DOMAIN}/users: alice: scrypt logN=14 r=8 p=1 -> PHC $scrypt$",
        f"converted: domains/{DOMAIN}/users: bob: scrypt logN=14 r=8 p=1",
        f"converted: domains/{DOMAIN}/users: carol: plain-text password, now hashed with scrypt",
        f"converted: domains/{DOMAIN}/users: dave: denied -> receive-only \"!\"",
        f"copied: domains/{DOMAIN}/aliases",
        f"copied: domains/{DOMAIN}/dkim:ed.pem: DKIM key",
        f"copied: domains/{DOMAIN}/dkim:rsa.pem: DKIM key",
        f"copied: certs/{HOSTNAME}: fullchain.pem, privkey.pem",
        f"copied: certs/other.example.test: -> conf/certs/other.example.test, a link to {extra['live']}",
        "copied: hooks/post-data: executable",
        f"not converted: domains/{DOMAIN}/dkim:broken.pem: no private key in the PEM file",
        "not converted: chasquid.conf: dovecot_auth: tambo has no Dovecot authentication",
        "not converted: chasquid.conf: data_dir:",
        "not converted: chasquid.conf: mail_log_path:",
        "not converted: certs/README.certs: not a certificate folder",
        "not converted: hooks/alias-resolve: tambo has no alias-resolve hook",
        "tambo loads the imported configuration: OK",
    ]:
        assert line in out, f"missing {line!r} in:\n{out}"
    assert f"wrote {t.dir}/conf/tambo.json" in out

    # The files, in tambo's layout.
    conf = json.loads(t.conf_path.read_text())
    assert conf == {
        "hostname": HOSTNAME,
        "smtp_listen": [f"127.0.0.1:{t.smtp_port}"],
        "submission_listen": [f"127.0.0.1:{t.submission_port}"],
        "submission_tls_listen": [f"127.0.0.1:{t.submission_tls_port}"],
        "max_message_size_mb": 20,
        "suffix_separators": "+-",
    }, conf
    dom = t.dir / "domains" / DOMAIN
    users = json.loads((dom / "users").read_text())
    assert sorted(users) == ["alice", "bob", "carol", "dave"]
    assert all(users[u].startswith("$scrypt$ln=") for u in ("alice", "bob", "carol")), users
    assert users["dave"] == "!"
    assert mode(dom / "users") == 0o600
    assert (dom / "aliases").read_bytes() == (src / "domains" / DOMAIN / "aliases").read_bytes()
    for sel in ("ed", "rsa"):
        key = dom / f"dkim:{sel}.pem"
        assert key.read_bytes() == (src / "domains" / DOMAIN / f"dkim:{sel}.pem").read_bytes()
        assert mode(key) == 0o600
    assert not (dom / "dkim:broken.pem").exists()
    assert (t.dir / "conf/certs" / HOSTNAME / "fullchain.pem").read_bytes() == extra["cert"]
    assert mode(t.dir / "conf/certs" / HOSTNAME / "privkey.pem") == 0o600
    assert os.readlink(t.dir / "conf/certs/other.example.test") == str(extra["live"])
    hook = t.dir / "hooks" / "post-data"
    assert hook.read_bytes() == (src / "hooks" / "post-data").read_bytes()
    assert mode(hook) == 0o755
    assert not (t.dir / "hooks" / "alias-resolve").exists()

    # Old passwords, through tambo's own check.
    assert authenticate(t, ALICE, PASSWORDS[ALICE]) == 0
    assert authenticate(t, ALICE, PASSWORDS[ALICE] + "x") == 1
    assert authenticate(t, BOB, PASSWORDS[BOB]) == 0
    assert authenticate(t, CAROL, PASSWORDS[CAROL]) == 0
    assert authenticate(t, DAVE, "anything at all") == 1
    resolved = t.cli("util", "aliases-resolve", f"info@{DOMAIN}")
    assert resolved.returncode == 0, resolved.stderr
    assert resolved.stdout.split("\n")[:2] == [f"mailbox {ALICE}", f"mailbox {BOB}"]

    # And over the wire: SMTP AUTH on both submission ports, with the imported certificate.
    conf["dns_servers"] = [failing_dns()]
    t.conf_path.write_text(json.dumps(conf, indent=2) + "\n")
    t.start()
    try:
        msg, msgid = make_message(sender=ALICE, to=ALICE)
        with smtplib.SMTP("127.0.0.1", t.submission_port, local_hostname="client.example",
                          timeout=30) as s:
            s.starttls(context=client_tls_context())
            assert s.sock.getpeercert(binary_form=True) == ssl.PEM_cert_to_DER_cert(
                extra["cert"].decode())
            s.login(ALICE, PASSWORDS[ALICE])
            assert s.sendmail(ALICE, [ALICE], msg) == {}
        assert msgid.encode() in t.wait_messages(1, user="alice", domain=DOMAIN)[0]
        with smtplib.SMTP_SSL("127.0.0.1", t.submission_tls_port, local_hostname="client.example",
                              timeout=30, context=client_tls_context()) as s:
            s.login(BOB, PASSWORDS[BOB])
        with smtplib.SMTP_SSL("127.0.0.1", t.submission_tls_port, local_hostname="client.example",
                              timeout=30, context=client_tls_context()) as s:
            with pytest.raises(smtplib.SMTPAuthenticationError):
                s.login(ALICE, "not the password")
    finally:
        t.stop()


def assert_refused(r: subprocess.CompletedProcess, *fragments: str) -> None:
    assert r.returncode == 2, f"exit {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    for f in fragments:
        assert f in lines[0], lines[0]
    assert r.stdout == "", r.stdout


def test_not_a_chasquid_folder(tmp_path):
    t = empty_target(tmp_path)
    for src in (tmp_path / "missing", tmp_path / "empty"):
        if src.name == "empty":
            src.mkdir()
        assert_refused(run_import(t, src), str(src), "not a chasquid config folder")
    assert tree(t.dir) == {}


@pytest.mark.parametrize("file,text,where", [
    ("chasquid.conf", 'hostname: "mx.example.test"\n\nmax_data_size_mb: "lots"\n',
     "chasquid.conf:3: \"max_data_size_mb\": expected an integer"),
    ("chasquid.conf", 'hostname: "a"\nhostname: "b"\n', "chasquid.conf:2: \"hostname\" appears twice"),
    ("chasquid.conf", "smtp_address: \"unterminated\n", "chasquid.conf:1: unterminated string"),
    (f"domains/{DOMAIN}/users", 'users: {\n  key: "x"\n  value: { md5: {} }\n}\n',
     f"domains/{DOMAIN}/users:3: unknown field \"md5\""),
    (f"domains/{DOMAIN}/aliases", "good: alice\nthis line has no colon\n",
     f"domains/{DOMAIN}/aliases:2: "),
])
def test_parse_errors_write_nothing(tmp_path, file, text, where):
    t = empty_target(tmp_path)
    src = tmp_path / "chasquid"
    (src / "domains" / DOMAIN).mkdir(parents=True)
    (src / "chasquid.conf").write_text("")
    chasquid_util(src, "user-add", ALICE, "--password=pw for alice")
    (src / file).write_text(text)
    assert_refused(run_import(t, src), where)
    assert tree(t.dir) == {}


def test_existing_files_are_never_overwritten(chasquid_dir):
    """Issue 20: an import into an existing folder keeps what is there and says so; an
    existing domain folder is skipped whole (not merged), the rest is added."""
    src, t, _ = chasquid_dir
    (t.dir / "conf").mkdir()
    t.conf_path.write_text('{"hostname": "keep.example"}\n')
    r = run_import(t, src)
    assert r.returncode == 0, r.stdout + r.stderr
    assert t.conf_path.read_text() == '{"hostname": "keep.example"}\n'
    assert "not converted: conf/tambo.json: already in the tambo folder: its settings are " \
        "left as they are" in r.stdout, r.stdout
    assert (t.dir / "domains" / DOMAIN / "users").is_file()

    # A second import changes nothing: every part exists now, each is reported.
    before = tree(t.dir)
    r = run_import(t, src)
    assert r.returncode == 0, r.stdout + r.stderr
    assert tree(t.dir) == before
    assert f"not converted: domains/{DOMAIN}: this domain is already in the tambo folder: " \
        "skipped, not merged" in r.stdout, r.stdout
    assert "\nwrote " not in r.stdout, r.stdout

    # A domain folder with just a users file: skipped whole, even with conf/tambo.json gone.
    shutil.rmtree(t.dir)
    users = t.dir / "domains" / DOMAIN / "users"
    users.parent.mkdir(parents=True)
    users.write_text("{\n}\n")
    r = run_import(t, src)
    assert r.returncode == 0, r.stdout + r.stderr
    assert sorted(p.name for p in users.parent.iterdir()) == ["users"]
    assert users.read_text() == "{\n}\n"
    assert t.conf_path.is_file()
