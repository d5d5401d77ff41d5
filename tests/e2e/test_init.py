"""`util init`, `util check` and `util import-chasquid` into an init-made folder (issue 20,
SPEC §12).

From an empty folder: `util init`, `util user-add`, `serve`; the server receives for the
user and through the catch-all forward, and accepts a submission, with no other change to
the folder than what the commands made. The one exception: `util init` writes the standard
ports (25, 587, 465, on every address) and the system resolver, which a test cannot use; the
test rewrites exactly the keys `smtp_listen`, `submission_listen`, `submission_tls_listen`
(free loopback ports), `dns_servers` and `outbound_smtp_port` (the test network's DNS and
sinks) in the conf/tambo.json init wrote, and checks that nothing else in the folder changed.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from helpers import PASSWORD, TAMBO_BIN, Tambo, make_message, send_raw
from peers import ALICE, send_mx

DOMAIN = "example.test"
FORWARD_TO = "far@remote1.test"
HOSTNAME = "mx.example.test"
HOOK = Path(__file__).resolve().parents[2] / "contrib" / "git-hooks" / "pre-commit"


def fresh(tmp_path: Path) -> Tambo:
    """A Tambo whose config folder does not exist yet (util init makes it)."""
    t = Tambo(tmp_path)
    shutil.rmtree(t.dir)
    return t


def tree(d: Path, skip: str | None = None) -> dict[str, tuple[int, bytes | None]]:
    """Every path under d with its mode and contents (files), for "nothing else changed"."""
    out = {}
    for p in sorted(d.rglob("*")):
        rel = str(p.relative_to(d))
        if skip and (rel == skip or rel.startswith(skip + "/")):
            continue
        st = p.lstat()
        out[rel] = (stat.S_IMODE(st.st_mode), p.read_bytes() if p.is_file() else None)
    return out


def init(t: Tambo, *args: str) -> subprocess.CompletedProcess:
    return t.cli("util", "init", *args)


def use_test_ports(t: Tambo, net) -> None:
    """The documented exception: listeners on free loopback ports, the test DNS and sinks."""
    conf = json.loads(t.conf_path.read_text())
    conf.update({
        "smtp_listen": [f"127.0.0.1:{t.smtp_port}"],
        "submission_listen": [f"127.0.0.1:{t.submission_port}"],
        "submission_tls_listen": [f"127.0.0.1:{t.submission_tls_port}"],
        "dns_servers": [net.dns.address],
        "outbound_smtp_port": net.port,
    })
    t.conf_path.write_text(json.dumps(conf, indent=2) + "\n")


def test_init_user_add_serve(tmp_path, net):
    t = fresh(tmp_path)
    r = init(t, DOMAIN, "--forward-to", FORWARD_TO, "--hostname", HOSTNAME)
    assert r.returncode == 0, r.stderr
    made = tree(t.dir)
    key = next(p for p in made if p.startswith(f"domains/{DOMAIN}/dkim:"))
    assert sorted(made) == sorted([".gitignore", "conf", "conf/tambo.json", "domains",
                                   f"domains/{DOMAIN}", f"domains/{DOMAIN}/users",
                                   f"domains/{DOMAIN}/aliases", key]), made
    # SPEC §11: files 0600, folders 0700 (the folder itself too: init made it).
    assert stat.S_IMODE(t.dir.stat().st_mode) == 0o700
    for rel, (mode, data) in made.items():
        assert mode == (0o700 if data is None else 0o600), (rel, oct(mode))
    for rel in made:
        if made[rel][1] is not None:
            assert f"wrote {t.dir / rel}" in r.stdout, r.stdout
    conf = json.loads(t.conf_path.read_text())
    assert conf["hostname"] == HOSTNAME
    assert conf["smtp_listen"] == ["0.0.0.0:25", "[::]:25"]
    assert conf["submission_listen"] == ["0.0.0.0:587", "[::]:587"]
    assert conf["submission_tls_listen"] == ["0.0.0.0:465", "[::]:465"]
    assert all(conf[k] == [] for k in ("imap_listen", "imaps_listen", "pop3_listen",
                                       "pop3s_listen")), conf
    assert f"*: {FORWARD_TO}" in (t.dir / "domains" / DOMAIN / "aliases").read_text().splitlines()
    assert "/data" in (t.dir / ".gitignore").read_text().splitlines()
    # The records, as `util dns-records` prints them, then the next commands.
    records = t.cli("util", "dns-records", DOMAIN)
    assert records.returncode == 0, records.stderr
    assert records.stdout.strip() in r.stdout
    selector = key.split("dkim:")[1].removesuffix(".pem")
    assert f"{selector}._domainkey.{DOMAIN}." in r.stdout
    for cmd in ("util user-add", " serve", "util dns-check"):
        assert f"tambo -C {t.dir}{' ' if cmd[0] != ' ' else ''}{cmd}" in r.stdout, r.stdout

    t.user_add(ALICE)
    use_test_ports(t, net)
    before = tree(t.dir)
    assert (t.cli("util", "check").returncode) == 0
    t.start()
    try:
        msg, msgid = make_message(sender="someone@sender.test", to=ALICE)
        send_mx(t, "someone@sender.test", [ALICE], msg)
        assert any(msgid.encode() in m for m in t.wait_messages(1))
        # The catch-all forward, through the test network's MX for remote1.test.
        msg, msgid = make_message(sender="someone@sender.test", to=f"anyone@{DOMAIN}")
        send_mx(t, "someone@sender.test", [f"anyone@{DOMAIN}"], msg)
        [fwd] = net.sink("remote1").wait(1, msgid, tambo=t)
        assert fwd.rcpt_tos == [FORWARD_TO]
        # A submission by the new user, out to the world.
        msg, msgid = make_message(sender=ALICE, to="bob@remote2.test")
        r = send_raw(t.submission_port, ALICE, ["bob@remote2.test"], msg, starttls=True,
                     login=(ALICE, PASSWORD))
        assert r.code == 250, r
        net.sink("remote2").wait(1, msgid, tambo=t)
    finally:
        t.stop()
    assert tree(t.dir, skip="data") == before, "serve changed the config folder"


@pytest.mark.parametrize("args, fragment", [
    (["localhost"], "not a domain"),
    (["exa mple.test"], "not a domain"),
    (["../x.test"], "not a domain"),
    ([DOMAIN, "--forward-to", "nobody"], "--forward-to \"nobody\": not an address"),
    ([DOMAIN, "--forward-to", "a b@x.test"], "--forward-to"),
    ([DOMAIN, "--hostname", "mx_1.example.test"], "--hostname"),
])
def test_bad_input_writes_nothing(tmp_path, args, fragment):
    t = fresh(tmp_path)
    r = init(t, *args)
    assert r.returncode == 2, r
    assert r.stdout == ""
    [line] = r.stderr.strip().splitlines()
    assert fragment in line, line
    assert not t.dir.exists()


def test_existing_configuration_is_refused(tmp_path):
    t = fresh(tmp_path)
    assert init(t, DOMAIN, "--hostname", HOSTNAME).returncode == 0
    before = tree(t.dir)
    for domain in (DOMAIN, "other.test"):
        r = init(t, domain)
        assert r.returncode == 2 and r.stdout == "", r
        [line] = r.stderr.strip().splitlines()
        assert "already has a configuration" in line, line
    assert tree(t.dir) == before
    # A folder holding only a git repository (git init first) is fine.
    t2 = Tambo(tmp_path / "t2")
    shutil.rmtree(t2.dir)
    (t2.dir / ".git").mkdir(parents=True)
    assert init(t2, DOMAIN, "--hostname", HOSTNAME).returncode == 0
    # A stray .gitignore is not overwritten: refused, nothing written.
    t3 = Tambo(tmp_path / "t3")
    shutil.rmtree(t3.dir)
    t3.dir.mkdir()
    (t3.dir / ".gitignore").write_text("mine\n")
    r = init(t3, DOMAIN, "--hostname", HOSTNAME)
    assert r.returncode == 2 and "already exists" in r.stderr, r
    assert sorted(os.listdir(t3.dir)) == [".gitignore"]
    assert (t3.dir / ".gitignore").read_text() == "mine\n"


@pytest.fixture
def made(tmp_path) -> Tambo:
    t = fresh(tmp_path)
    assert init(t, DOMAIN, "--forward-to", FORWARD_TO, "--hostname", HOSTNAME).returncode == 0
    return t


def test_check_good_folder(made):
    r = made.cli("util", "check")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OK, serve would start" in r.stdout


def test_check_reports_every_problem_with_file_and_line(made):
    d = made.dir
    aliases = d / "domains" / DOMAIN / "aliases"
    aliases.write_text(aliases.read_text() + "info: alice\nthis line has no colon\n")
    conf = json.loads(made.conf_path.read_text())
    conf["colour"] = "blue"
    made.conf_path.write_text(json.dumps(conf, indent=2) + "\n")
    (d / "domains" / DOMAIN / "dkim:broken.pem").write_text("not a key\n")
    r = made.cli("util", "check")
    assert r.returncode == 2, r.stdout + r.stderr
    conf_line = made.conf_path.read_text().splitlines().index('  "colour": "blue"') + 1
    alias_line = aliases.read_text().splitlines().index("this line has no colon") + 1
    out = r.stdout.splitlines()
    for want in (f"conf/tambo.json:{conf_line}: unknown key \"colour\"",
                 f"domains/{DOMAIN}/aliases:{alias_line}: ",
                 f"domains/{DOMAIN}/dkim:broken.pem: no PEM private key"):
        assert any(line.startswith(want) for line in out), (want, r.stdout)
    assert "3 problem(s), serve would not start" in r.stderr
    # serve agrees: it refuses to start (exit 2) on the first of them.
    s = made.cli("serve", timeout=30)
    assert s.returncode == 2, s


def test_pre_commit_hook(made):
    """contrib/git-hooks/pre-commit: a commit of a broken folder is refused, a good one made."""
    git = shutil.which("git")
    if git is None:
        pytest.skip("needs git")
    d = made.dir
    env = {**made.env(), "PATH": f"{TAMBO_BIN.parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.test",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.test",
           "HOME": str(d.parent), "GIT_CONFIG_NOSYSTEM": "1"}

    def run(*args):
        return subprocess.run([git, *args], cwd=d, env=env, capture_output=True, text=True,
                              timeout=60)

    assert run("init", "-q").returncode == 0
    shutil.copy(HOOK, d / ".git" / "hooks" / "pre-commit")
    assert run("add", "-A").returncode == 0
    r = run("commit", "-qm", "new server")
    assert r.returncode == 0, r.stdout + r.stderr
    aliases = d / "domains" / DOMAIN / "aliases"
    aliases.write_text(aliases.read_text() + "broken line\n")
    run("add", "-A")
    r = run("commit", "-qm", "broken")
    assert r.returncode != 0, r
    assert f"domains/{DOMAIN}/aliases:" in r.stdout + r.stderr, r.stdout + r.stderr
    assert run("rev-list", "--count", "HEAD").stdout.strip() == "1"


CHASQUID_UTIL = shutil.which("chasquid-util") or "/usr/bin/chasquid-util"


@pytest.mark.skipif(not Path(CHASQUID_UTIL).exists(), reason="needs chasquid-util")
def test_import_chasquid_into_init_folder(made, tmp_path):
    src = tmp_path / "etc-chasquid"
    for domain in ("old.test", DOMAIN):
        (src / "domains" / domain).mkdir(parents=True)
        (src / "domains" / domain / "aliases").write_text("info: alice\n")
    (src / "chasquid.conf").write_text('hostname: "mx.chasquid.test"\n')
    r = subprocess.run([CHASQUID_UTIL, f"--configdir={src}", "user-add", "alice@old.test",
                        f"--password={PASSWORD}"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    before = tree(made.dir)
    r = made.cli("util", "import-chasquid", str(src), timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    after = tree(made.dir)
    # Nothing that existed changed: settings and the init-made domain are left as they are.
    assert {k: v for k, v in after.items() if k in before} == before
    added = sorted(set(after) - set(before))
    assert added == ["domains/old.test", "domains/old.test/aliases", "domains/old.test/users"]
    assert "not converted: conf/tambo.json: already in the tambo folder" in r.stdout, r.stdout
    assert f"not converted: domains/{DOMAIN}: this domain is already" in r.stdout, r.stdout
    a = made.cli("util", "authenticate", "alice@old.test", "--password", PASSWORD)
    assert a.returncode == 0, a.stdout + a.stderr
    assert made.cli("util", "check").returncode == 0
