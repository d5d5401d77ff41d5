"""Fixtures for tambo's end-to-end tests.

- `env`: a config folder in tmp_path with domain example.test and user alice, not started.
  Tests that need other settings, users or aliases change it, then call `env.start()`.
- `server`: the same, started.
- `imap`: the same with IMAP on free ports, STARTTLS (`imap_port`) and implicit TLS
  (`imaps_port`), started.
- `net` / `renv` (peers.py): the shared DNS server and sink MTAs, reset for the test; `renv`
  is `env` pointed at them (dns_servers, outbound_smtp_port, TAMBO_SMTP_TIMEOUT_SECS).

Every server is stopped at teardown (SIGTERM, 5 s, SIGKILL). A server that exited by itself
or panicked during the test turns the teardown into an error carrying the log.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers import Tambo, free_ports, port_open, wait_until  # noqa: E402
# Fixtures of the delivery tests' peers (DNS, sink MTAs), shared by the session.
from peers import net, network, renv  # noqa: E402,F401


@pytest.fixture
def env(tmp_path, request):
    t = Tambo(tmp_path)
    t.add_domain("example.test")

    def finish():
        t.stop()
        log = t.log()
        problems = list(t.died)
        if "panicked at" in log:
            problems.append("the server panicked")
        if problems:
            pytest.fail("; ".join(problems) + f"\nlog:\n{log}", pytrace=False)

    request.addfinalizer(finish)
    t.user_add("alice@example.test")
    return t


@pytest.fixture
def server(env):
    return env.start()


@pytest.fixture
def imap(env):
    """`env` with IMAP on 143-style (STARTTLS) and 993-style (implicit TLS) free ports."""
    env.imap_port, env.imaps_port = free_ports(2)
    env.write_config(imap_listen=[f"127.0.0.1:{env.imap_port}"],
                     imaps_listen=[f"127.0.0.1:{env.imaps_port}"])
    env.start()
    assert wait_until(lambda: port_open(env.imap_port) and port_open(env.imaps_port), 10), env.log()
    return env


def pytest_runtest_logreport(report):
    """A skipped test is also written to the file named by TAMBO_SKIP_LOG, which tests/run.sh
    lists at the end beside the unit tests' skips (src/testsupport.rs)."""
    log = os.environ.get("TAMBO_SKIP_LOG")
    if not log or not report.skipped or hasattr(report, "wasxfail"):
        return
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    with open(log, "a") as f:
        f.write(f"skipped: {report.nodeid}: {reason.removeprefix('Skipped: ')}\n")
