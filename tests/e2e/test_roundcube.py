"""Roundcube (SPEC §10's webmail client) against tambo: Debian's roundcube run by PHP's
built-in server with a configuration of the test's own (ROUNDCUBE_CONFIG_DIR, a sqlite
database in the test's temp folder), IMAP over implicit TLS and SMTP submission with
STARTTLS to tambo on loopback, driven by headless chromium through selenium: log in, see a
delivered message in INBOX, open it, the threaded list (needs IMAP THREAD: skipped while
tambo's CAPABILITY lacks THREAD=REFERENCES), and send a message from the compose screen.

Every wait has a deadline; php, chromedriver and chromium are stopped by their process ids.
A test whose program is not installed is skipped, naming the Debian package
(tests/install-deps.sh lists them); with TAMBO_REQUIRE_PEERS=1 it fails.
"""

from __future__ import annotations

import os
import signal
import smtplib
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from helpers import (PASSWORD, free_ports, make_message, need, port_open, stop_process,
                     wait_until)
from test_imap_clients import deliver, login

ALICE = "alice@example.test"
BOB = "bob@example.test"
ROUNDCUBE = Path("/usr/share/roundcube")
PHP = "/usr/bin/php"
CHROMEDRIVER = "/usr/bin/chromedriver"
PAGE_DEADLINE = 30.0  # one page or one list of Roundcube to show


@pytest.fixture
def tambo(env):
    """`env` with IMAPS (Roundcube's imap_host) and bob, started."""
    env.imaps_port, = free_ports(1)
    env.write_config(imaps_listen=[f"127.0.0.1:{env.imaps_port}"])
    env.user_add(BOB)
    env.start()
    assert wait_until(lambda: port_open(env.imaps_port), 10), env.log()
    return env


def roundcube_config(tmp: Path, env) -> Path:
    """A config folder for Roundcube: Debian's defaults, then ours; sqlite in `tmp`."""
    conf = tmp / "roundcube-config"
    conf.mkdir()
    for name in ("defaults.inc.php", "mimetypes.php"):
        (conf / name).symlink_to(Path("/etc/roundcube") / name)
    db = tmp / "roundcube.db"
    with sqlite3.connect(db) as c:
        c.executescript((ROUNDCUBE / "SQL" / "sqlite.initial.sql").read_text())
    for sub in ("logs", "temp"):
        (tmp / sub).mkdir()
    # The test's own certificate is not one chromium or PHP trust: no peer verification, on
    # loopback only.
    no_verify = "['ssl' => ['verify_peer' => false, 'verify_peer_name' => false]]"
    (conf / "config.inc.php").write_text(f"""<?php
$config = [];
$config['db_dsnw'] = 'sqlite:///{db}?mode=0600';
$config['imap_host'] = 'ssl://127.0.0.1:{env.imaps_port}';
$config['imap_conn_options'] = {no_verify};
$config['smtp_host'] = 'tls://127.0.0.1:{env.submission_port}';
$config['smtp_conn_options'] = {no_verify};
$config['smtp_user'] = '%u';
$config['smtp_pass'] = '%p';
$config['log_dir'] = '{tmp}/logs/';
$config['temp_dir'] = '{tmp}/temp/';
$config['des_key'] = 'tambo-test-des-key-24char';
$config['plugins'] = [];
$config['skin'] = 'elastic';
$config['language'] = 'en_US';
$config['enable_installer'] = false;
$config['messages_cache'] = false;
""")
    return conf


class Browser:
    """php -S serving Roundcube, and chromium through chromedriver; `close` stops all three."""

    def __init__(self, tmp: Path, env):
        need(PHP, "php-cli")
        need(CHROMEDRIVER, "chromium-driver")
        if not (ROUNDCUBE / "index.php").is_file():
            need(str(ROUNDCUBE / "index.php"), "roundcube-core")
        webdriver = pytest.importorskip("selenium.webdriver", reason="python3-selenium")
        from selenium.webdriver.chrome.service import Service

        conf = roundcube_config(tmp, env)
        self.port, = free_ports(1)
        self.url = f"http://127.0.0.1:{self.port}/"
        self.php_log = tmp / "php.log"
        php_env = dict(os.environ, ROUNDCUBE_CONFIG_DIR=str(conf))
        self.php = subprocess.Popen(
            [PHP, "-S", f"127.0.0.1:{self.port}", "-t", str(ROUNDCUBE)],
            stdout=self.php_log.open("wb"), stderr=subprocess.STDOUT, env=php_env)
        self.driver = None
        self.service = None
        try:
            assert wait_until(lambda: port_open(self.port), 10), self.log()
            options = webdriver.ChromeOptions()
            for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                        "--disable-gpu", f"--user-data-dir={tmp / 'chromium'}",
                        "--window-size=1400,1000"):
                options.add_argument(arg)
            self.service = Service(CHROMEDRIVER, log_output=str(tmp / "chromedriver.log"))
            self.driver = webdriver.Chrome(service=self.service, options=options)
            self.driver.set_page_load_timeout(PAGE_DEADLINE)
            self.driver.set_script_timeout(PAGE_DEADLINE)
        except BaseException:
            self.close()
            raise

    def log(self) -> str:
        text = self.php_log.read_text(errors="replace") if self.php_log.exists() else ""
        logs = self.php_log.parent / "logs" / "errors.log"
        if logs.exists():
            text += "\nRoundcube's errors.log:\n" + logs.read_text(errors="replace")
        return text

    def close(self) -> None:
        # chromium is chromedriver's child: quit ends it; then chromedriver, by its pid.
        if self.driver is not None:
            try:
                self.driver.quit()
            except Exception:
                pass
        if self.service is not None and self.service.process is not None:
            proc = self.service.process
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait(5)
        stop_process(self.php)

    # ---- waiting -----------------------------------------------------------------------------

    def wait(self, what: str, pred, deadline: float = PAGE_DEADLINE):
        """The first true value of pred() within the deadline; else fails with the logs."""
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            try:
                value = pred()
            except Exception:  # an element not there yet, a page being replaced
                value = None
            if value:
                return value
            time.sleep(0.2)
        pytest.fail(f"Roundcube: no {what} within {deadline}s\n{self.log()}", pytrace=False)

    def js(self, script: str, *args):
        return self.driver.execute_script(script, *args)

    # ---- pages -------------------------------------------------------------------------------

    def log_in(self, user: str) -> None:
        from selenium.webdriver.common.by import By

        self.driver.get(self.url)
        self.wait("login form", lambda: self.driver.find_element(By.ID, "rcmloginuser"))
        self.driver.find_element(By.ID, "rcmloginuser").send_keys(user)
        self.driver.find_element(By.ID, "rcmloginpwd").send_keys(PASSWORD)
        self.driver.find_element(By.ID, "rcmloginsubmit").click()
        self.wait("mail view after login (IMAP login through tambo)",
                  lambda: self.js("return window.rcmail && rcmail.env.task == 'mail' "
                                  "&& rcmail.message_list && !rcmail.busy"))

    def subjects(self) -> dict[str, int]:
        """Subject → UID of the rows of the message list as shown."""
        rows = self.js("""
            var out = {};
            var rows = rcmail.message_list ? rcmail.message_list.rows : {};
            for (var uid in rows) {
                var a = rows[uid].obj && rows[uid].obj.querySelector('span.subject a, td.subject a');
                if (a) out[a.textContent.trim()] = parseInt(uid, 10);
            }
            return out;""")
        return rows or {}

    def list_shows(self, subject: str) -> int:
        """Reloads the list until `subject` is in it; its UID."""
        def seen():
            self.js("if (!rcmail.busy) rcmail.command('checkmail')")
            return self.subjects().get(subject)
        return self.wait(f"row {subject!r} in the message list", seen)


@pytest.fixture
def browser(tmp_path, tambo):
    b = Browser(tmp_path, tambo)
    yield b
    b.close()


def tambo_capabilities(env) -> str:
    c = login(env)
    try:
        typ, caps = c.capability()
        return caps[0].decode()
    finally:
        c.logout()


def test_roundcube_lists_opens_and_sends(tambo, browser):
    from selenium.webdriver.common.by import By

    env = tambo
    deliver(env, "Hello from the test")
    env.wait_messages(1)
    browser.log_in(ALICE)

    # INBOX lists the delivered message; opening it shows its body.
    uid = browser.list_shows("Hello from the test")
    browser.driver.get(f"{browser.url}?_task=mail&_mbox=INBOX&_uid={uid}&_action=show")
    body = browser.wait("message body", lambda: browser.driver.find_element(
        By.ID, "messagebody").text)
    assert "Body of Hello from the test." in body, body

    # Compose, send through tambo's submission port (STARTTLS, AUTH as alice).
    browser.driver.get(f"{browser.url}?_task=mail&_action=compose")
    browser.wait("compose screen", lambda: browser.js(
        "return rcmail.env.action == 'compose' && !!document.getElementById('composebody')"))
    to = browser.wait("recipient field", lambda: browser.driver.find_element(
        By.CSS_SELECTOR, "#compose_to input, .recipient-input input"))
    to.send_keys(BOB + ", ")
    browser.driver.find_element(By.ID, "compose-subject").send_keys("Sent from Roundcube")
    browser.driver.find_element(By.ID, "composebody").send_keys("Written in a browser.")
    browser.js("rcmail.command('send', {})")
    assert wait_until(lambda: env.messages(user="bob"), 30), \
        f"nothing reached bob's Maildir\n{env.log()}\n{browser.log()}"
    got = env.messages(user="bob")[0]
    assert b"Subject: Sent from Roundcube" in got, got
    assert b"Written in a browser." in got, got
    assert f"From: {ALICE}".encode() in got or ALICE.encode() in got.split(b"\n\n")[0], got
    # Roundcube keeps a copy in Sent by APPEND (SPECIAL-USE tells it which folder).
    sent = env.maildir() / ".Sent"
    assert wait_until(lambda: any((sent / d).iterdir() for d in ("cur", "new")), 20), \
        browser.log()


def test_roundcube_thread_view(tambo, browser):
    env = tambo
    caps = tambo_capabilities(env)
    if "THREAD=REFERENCES" not in caps.split():
        pytest.skip(f"tambo's CAPABILITY has no THREAD=REFERENCES (IMAP THREAD, another "
                    f"branch): {caps}")
    first = deliver(env, "Thread start")
    env.wait_messages(1)
    # A reply to it: In-Reply-To and References name the first message.
    reply, _ = make_message(subject="Re: Thread start", body="The reply.\r\n")
    reply = reply.replace(b"\r\n\r\n", f"\r\nIn-Reply-To: {first}\r\nReferences: {first}"
                          "\r\n\r\n".encode(), 1)
    with smtplib.SMTP("127.0.0.1", env.smtp_port, local_hostname="client.example",
                      timeout=20) as s:
        s.sendmail("sender@remote.example", [ALICE], reply)
    env.wait_messages(2)
    browser.log_in(ALICE)
    browser.list_shows("Re: Thread start")
    browser.js("rcmail.set_list_options(null, undefined, undefined, 1)")
    # Threaded: the reply sits one level under the message it answers.
    depth = browser.wait("threaded list", lambda: browser.js("""
        var rows = rcmail.message_list.rows;
        if (!rcmail.env.threading) return null;
        for (var uid in rows) {
            var a = rows[uid].obj && rows[uid].obj.querySelector('span.subject a, td.subject a');
            if (a && a.textContent.trim() == 'Re: Thread start') return 'd' + rows[uid].depth;
        }
        return null;"""))
    assert depth == "d1", depth
