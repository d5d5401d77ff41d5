"""`tambo util ...` and the config errors of `tambo serve` (SPEC §3, §4, §5, §6)."""

from __future__ import annotations

import json
import subprocess
import re

import pytest

from helpers import PASSWORD, SPEC_KEYS, TAMBO_BIN, Tambo, port_open


def one_line(stderr: str) -> str:
    lines = [l for l in stderr.splitlines() if l.strip()]
    assert len(lines) == 1, f"expected exactly one line on stderr, got {len(lines)}: {stderr!r}"
    return lines[0]


# ---- user-add ------------------------------------------------------------------------------


def test_user_add_prints_path_and_writes_scrypt_hash(env):
    r = env.cli("util", "user-add", "bob@example.test", "--password", PASSWORD)
    assert r.returncode == 0, r.stderr
    assert "domains/example.test/users" in r.stdout, f"stdout does not name the users file: {r.stdout!r}"
    users = json.loads(env.users_path().read_text())
    assert set(users) == {"alice", "bob"}
    assert users["bob"].startswith("$scrypt$"), users["bob"]
    assert users["alice"] != users["bob"], "salts must differ"


def test_users_file_one_user_a_line(env):
    for name in ["carol", "bob", "dave"]:
        env.user_add(f"{name}@example.test")
    text = env.users_path().read_text()
    users = json.loads(text)
    assert set(users) == {"alice", "bob", "carol", "dave"}
    for name in users:
        lines = [l for l in text.splitlines() if f'"{name}"' in l]
        assert len(lines) == 1, f"user {name} spans or repeats lines: {text!r}"
        assert lines[0].count('"$scrypt$') == 1, f"more than one user on a line: {lines[0]!r}"


def test_user_add_stores_normalised_local_part(env):
    r = env.cli("util", "user-add", "Bob@EXAMPLE.TEST", "--password", PASSWORD)
    assert r.returncode == 0, r.stderr
    users = json.loads(env.users_path().read_text())
    assert "bob" in users and "Bob" not in users, users.keys()


@pytest.mark.parametrize(
    "address,password,why",
    [
        ("bob@example.test", "abc", "weak password"),
        ("bob@example.test", "", "empty password"),
        ("bob", PASSWORD, "address without a domain"),
        ("bob@nofolder.test", PASSWORD, "domain without a folder"),
    ],
)
def test_user_add_bad_input_exit_2_one_line_nothing_written(env, address, password, why):
    before = env.users_path().read_bytes()
    r = env.cli("util", "user-add", address, "--password", password)
    assert r.returncode == 2, f"{why}: exit {r.returncode}, stdout {r.stdout!r}, stderr {r.stderr!r}"
    one_line(r.stderr)
    assert env.users_path().read_bytes() == before, f"{why}: users file changed"
    assert not (env.dir / "domains" / "nofolder.test").exists(), "a domain folder was created"


def test_user_add_receive_only_writes_bang(env):
    r = env.cli("util", "user-add", "noreply@example.test", "--receive-only")
    assert r.returncode == 0, r.stderr
    users = json.loads(env.users_path().read_text())
    assert users["noreply"] == "!"
    r = env.cli("util", "authenticate", "noreply@example.test", "--password", "!")
    assert r.returncode == 1, f"receive-only user authenticated with '!': exit {r.returncode}"


def test_authenticate_right_and_wrong(env):
    r = env.cli("util", "authenticate", "alice@example.test", "--password", PASSWORD)
    assert r.returncode == 0, f"right password: exit {r.returncode}, stderr {r.stderr!r}"
    r = env.cli("util", "authenticate", "alice@example.test", "--password", PASSWORD + "x")
    assert r.returncode == 1, f"wrong password: exit {r.returncode}, stderr {r.stderr!r}"
    r = env.cli("util", "authenticate", "nobody@example.test", "--password", PASSWORD)
    assert r.returncode == 1, f"unknown user: exit {r.returncode}, stderr {r.stderr!r}"


def test_password_from_stdin_line(env):
    pw = "another fine passphrase"
    r = env.cli("util", "user-add", "bob@example.test", input=pw + "\n")
    assert r.returncode == 0, f"user-add via stdin: exit {r.returncode}, stderr {r.stderr!r}"
    assert "bob" in json.loads(env.users_path().read_text())
    r = env.cli("util", "authenticate", "bob@example.test", input=pw + "\n")
    assert r.returncode == 0, f"authenticate via stdin (right): exit {r.returncode}, {r.stderr!r}"
    r = env.cli("util", "authenticate", "bob@example.test", input="wrong password here\n")
    assert r.returncode == 1, f"authenticate via stdin (wrong): exit {r.returncode}, {r.stderr!r}"


def test_user_remove(env):
    env.user_add("bob@example.test")
    r = env.cli("util", "user-remove", "bob@example.test")
    assert r.returncode == 0, r.stderr
    text = env.users_path().read_text()
    assert '"bob"' not in text
    assert set(json.loads(text)) == {"alice"}
    r = env.cli("util", "authenticate", "bob@example.test", "--password", PASSWORD)
    assert r.returncode == 1


def test_check_userdb_good_file(env):
    r = env.cli("util", "check-userdb", "example.test")
    assert r.returncode == 0, f"exit {r.returncode}, stdout {r.stdout!r}, stderr {r.stderr!r}"


def test_aliases_resolve(env):
    env.write_aliases("# comment\ninfo: alice, bob@remote.example\n")
    r = env.cli("util", "aliases-resolve", "info@example.test")
    assert r.returncode == 0, r.stderr
    lines = sorted(l.strip() for l in r.stdout.splitlines() if l.strip())
    assert lines == ["forward bob@remote.example", "mailbox alice@example.test"], r.stdout


def test_aliases_resolve_user_itself(env):
    r = env.cli("util", "aliases-resolve", "a.lice+tag@Example.Test")
    assert r.returncode == 0, r.stderr
    lines = [l.strip() for l in r.stdout.splitlines() if l.strip()]
    assert lines == ["mailbox alice@example.test"], r.stdout


def test_print_config_has_every_key(env):
    r = env.cli("util", "print-config")
    assert r.returncode == 0, r.stderr
    cfg = json.loads(r.stdout)
    missing = [k for k in SPEC_KEYS if k not in cfg]
    assert not missing, f"print-config lacks {missing}"
    assert cfg["hostname"] == "mx.example.test"
    assert cfg["max_recipients"] == 100
    assert cfg["max_message_size_mb"] == 50
    assert cfg["smtp_listen"] == env.settings["smtp_listen"]


# ---- broken config -------------------------------------------------------------------------


def serve_expect_exit(env: Tambo) -> subprocess.CompletedProcess:
    """Runs `serve` on a broken folder, without RUST_LOG, expecting it to give up quickly."""
    Tambo.require_binary()
    try:
        r = subprocess.run([str(TAMBO_BIN), "-C", str(env.dir), "serve"], capture_output=True,
                           text=True, timeout=10, env=Tambo.env(rust_log=None))
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"serve kept running on a broken config; stderr so far: {e.stderr!r}")
    for p in env.ports:
        assert not port_open(p), f"port {p} is listening after serve exited"
    return r


def test_unknown_key_exit_2(env):
    env.write_config(no_such_setting=1)
    r = serve_expect_exit(env)
    assert r.returncode == 2, f"exit {r.returncode}, stderr {r.stderr!r}"
    line = one_line(r.stderr)
    assert "tambo.json" in line and "no_such_setting" in line, line


@pytest.mark.parametrize("key,value", [
    ("acme", {"email": "admin@example.test"}),
    ("acme", {"email": "admin@example.test", "directory": "http://acme.example/dir"}),
    ("https_listen", "0.0.0.0:443"),
])
def test_bad_acme_and_web_settings_name_key_and_file(env, key, value):
    env.write_config(**{key: value})
    r = serve_expect_exit(env)
    assert r.returncode == 2, f"exit {r.returncode}, stderr {r.stderr!r}"
    line = one_line(r.stderr)
    assert "tambo.json" in line and f'"{key}"' in line, line


def test_invalid_json_names_file_and_line(env):
    env.conf_path.write_text('{\n  "hostname": "mx.example.test",\n  "max_recipients": ,\n}\n')
    r = serve_expect_exit(env)
    assert r.returncode == 2, f"exit {r.returncode}, stderr {r.stderr!r}"
    line = one_line(r.stderr)
    assert "tambo.json" in line, line
    assert re.search(r"(:3\b|line 3\b)", line), f"no line number 3 in {line!r}"


@pytest.mark.parametrize("bad", ["this line has no colon", ": alice"])
def test_broken_aliases_line_exit_2(env, bad):
    env.write_aliases(f"# ok\ninfo: alice\n{bad}\n")
    r = serve_expect_exit(env)
    assert r.returncode == 2, f"exit {r.returncode}, stderr {r.stderr!r}"
    line = one_line(r.stderr)
    assert "example.test/aliases" in line, line
    assert re.search(r"(:3\b|line 3\b)", line), f"no line number 3 in {line!r}"


@pytest.mark.parametrize("address", ["../evil@example.test", "a/b@example.test", "bob@../example.test",
                                     "bob@example.test/..", "bo\x01b@example.test"])
def test_user_add_path_like_names_refused(env, address):
    before = env.users_path().read_bytes()
    r = env.cli("util", "user-add", address, "--password", PASSWORD)
    assert r.returncode == 2, f"{address!r}: exit {r.returncode}, stderr {r.stderr!r}"
    one_line(r.stderr)
    assert env.users_path().read_bytes() == before
    assert sorted(p.name for p in env.dir.iterdir()) == ["conf", "domains"], list(env.dir.iterdir())


def test_aliases_exact_local_part_before_normalisation(env):
    # SPEC §6 lookup order: the exact local part first, so this alias wins over user alice.
    env.write_aliases("a.lice: bob@remote.example\n")
    r = env.cli("util", "aliases-resolve", "a.lice@example.test")
    assert r.returncode == 0, r.stderr
    assert [l.strip() for l in r.stdout.splitlines() if l.strip()] == ["forward bob@remote.example"], r.stdout


def test_aliases_suffix_on_alias(env):
    env.write_aliases("info: alice\n")
    r = env.cli("util", "aliases-resolve", "info+news@example.test")
    assert r.returncode == 0, r.stderr
    assert [l.strip() for l in r.stdout.splitlines() if l.strip()] == ["mailbox alice@example.test"], r.stdout


def test_aliases_newer_chasquid_forms(env):
    env.add_domain("other.test")
    env.user_add("carol@other.test")
    env.write_aliases("relayed: bob@remote.example via mx1.remote.example/mx2.remote.example\n"
                      "*: *@other.test\n")
    r = env.cli("util", "aliases-resolve", "carol@example.test")
    assert r.returncode == 0, r.stderr
    assert [l.strip() for l in r.stdout.splitlines() if l.strip()] == ["mailbox carol@other.test"], r.stdout
    r = env.cli("util", "aliases-resolve", "relayed@example.test")
    assert r.returncode == 0, r.stderr
    lines = [l.strip() for l in r.stdout.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("forward bob@remote.example"), r.stdout


# ---- version and help ----------------------------------------------------------------------


def run_bare(*args: str) -> subprocess.CompletedProcess:
    """tambo without -C: what a new user types first."""
    Tambo.require_binary()
    return subprocess.run([str(TAMBO_BIN), *args], capture_output=True, text=True, timeout=10,
                          env=Tambo.env(rust_log=None), stdin=subprocess.DEVNULL)


def cargo_version() -> str:
    import tomllib
    from helpers import REPO_ROOT
    return tomllib.loads((REPO_ROOT / "Cargo.toml").read_text())["package"]["version"]


@pytest.mark.parametrize("args", [["--version"], ["-V"], ["-C", "/nonexistent", "--version"]])
def test_version(args):
    r = run_bare(*args)
    assert r.returncode == 0, f"{args}: exit {r.returncode}, stderr {r.stderr!r}"
    assert r.stdout == f"tambo {cargo_version()}\n", r.stdout
    assert r.stderr == ""


@pytest.mark.parametrize("command", [[], ["util"], ["serve"], ["util", "user-add"],
                                     ["util", "dns-records"]])
def test_dash_h_is_help(command):
    short, long = run_bare(*command, "-h"), run_bare(*command, "--help")
    assert long.returncode == 0 and "Usage:" in long.stdout, long
    assert (short.returncode, short.stdout, short.stderr) == (0, long.stdout, long.stderr), short
    assert "-h, --help" in short.stdout, short.stdout


def test_no_command_is_a_usage_error():
    r = run_bare()
    assert r.returncode == 2, f"exit {r.returncode}, stdout {r.stdout!r}, stderr {r.stderr!r}"
    line = one_line(r.stderr)
    assert "serve" in line and "util" in line, line


def test_util_help_describes_every_command():
    out = run_bare("util", "--help").stdout
    description = out.split("Options:")[0]
    for topic in ["users", "aliases", "DKIM", "DNS", "queue", "chasquid"]:
        assert topic in description, f"util --help does not mention {topic}: {description!r}"
    commands = out.split("Commands:")[1]
    assert "SPEC" not in commands, commands
    for line in commands.splitlines():
        if line.startswith("  ") and not line.startswith("   "):
            name, _, text = line.strip().partition(" ")
            assert text.strip(), f"{name}: no description"
