"""ACME (SPEC §12, issue 20) against Debian's pebble, and the web endpoints of `https_listen`.

Each test runs its own pebble and dnsmasq on loopback. The names resolve to a random
127.x.y.z address of the test's own, where tambo's `https_listen` / `http_listen` listen on
443 / 80, the ports pebble validates on, so parallel tests do not collide. tambo trusts
pebble's API certificate through SSL_CERT_FILE (rustls-platform-verifier reads it); the
clients here trust pebble's issuing root, fetched from its management port.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from helpers import HOSTNAME, Tambo, free_ports, port_open, stop_process, wait_until
from peers import DnsServer, openssl

PEBBLE = "/usr/bin/pebble"
DOMAIN = "example.test"


def need_pebble():
    if not Path(PEBBLE).exists():
        pytest.fail("pebble is not installed (tests/install-deps.sh installs it)")


def make_ca(dir: Path) -> tuple[Path, Path, Path]:
    """A CA and a leaf for 127.0.0.1 / localhost signed by it: (ca, leaf cert, leaf key)."""
    ca_key, ca = dir / "ca-key.pem", dir / "ca.pem"
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=test api CA",
            "-addext", "basicConstraints=critical,CA:TRUE", "-days", "2",
            "-keyout", str(ca_key), "-out", str(ca))
    key, csr, cert = dir / "api-key.pem", dir / "api.csr", dir / "api.pem"
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
            "-keyout", str(key), "-out", str(csr))
    ext = dir / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\n")
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
            "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(cert))
    return ca, cert, key


class Pebble:
    def __init__(self, dir: Path, dns_port: int, http_port: int, tls_port: int,
                 validity: int | None = None):
        need_pebble()
        self.dir = dir
        self.ca, cert, key = make_ca(dir)
        self.port, self.mgmt_port = free_ports(2)
        config = {"pebble": {
            "listenAddress": f"127.0.0.1:{self.port}",
            "managementListenAddress": f"127.0.0.1:{self.mgmt_port}",
            "certificate": str(cert), "privateKey": str(key),
            "httpPort": http_port, "tlsPort": tls_port,
            "ocspResponderURL": "", "externalAccountBindingRequired": False,
        }}
        if validity is not None:
            config["pebble"]["certificateValidityPeriod"] = validity
        (dir / "pebble.json").write_text(json.dumps(config))
        self.log_path = dir / "pebble.log"
        env = {"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_VA_ALWAYS_VALID": "0",
               "PEBBLE_WFE_NONCEREJECT": "0", "PEBBLE_AUTHZREUSE": "0", "PATH": "/usr/bin:/bin"}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [PEBBLE, "-config", str(dir / "pebble.json"), "-dnsserver", f"127.0.0.1:{dns_port}"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=dir)
        if not wait_until(lambda: port_open(self.port) and port_open(self.mgmt_port), 10.0):
            pytest.fail(f"pebble did not start; log:\n{self.log()}")

    @property
    def directory(self) -> str:
        return f"https://127.0.0.1:{self.port}/dir"

    def root(self) -> Path:
        """pebble's issuing root (a new one at each start), for the clients of the tests."""
        ctx = ssl.create_default_context(cafile=str(self.ca))
        with urllib.request.urlopen(f"https://127.0.0.1:{self.mgmt_port}/roots/0",
                                    context=ctx, timeout=10) as r:
            pem = r.read()
        path = self.dir / "issuing-root.pem"
        path.write_bytes(pem)
        return path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self):
        stop_process(self.proc)


def our_address() -> str:
    return f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"


@pytest.fixture
def site(tmp_path, request):
    """tambo for example.test with IMAPS and the web ports on a 127.x.y.z of its own, a dnsmasq
    where mx., mta-sts. and autoconfig.example.test are that address; pebble is started by
    the test (`site.pebble(...)`)."""
    ip = our_address()
    dns = DnsServer(tmp_path, mx=[(DOMAIN, HOSTNAME, 10)],
                    hosts=[(HOSTNAME, ip), (f"mta-sts.{DOMAIN}", ip), (f"autoconfig.{DOMAIN}", ip)],
                    txt=[("sel1._domainkey.example.test", "probe")]).start()
    t = Tambo(tmp_path)
    t.add_domain(DOMAIN)
    [t.imaps_port] = free_ports(1)
    t.ip = ip
    t.dns = dns
    t.write_config(dns_servers=[dns.address], imaps_listen=[f"127.0.0.1:{t.imaps_port}"])
    started = []

    def pebble(**kw) -> Pebble:
        d = tmp_path / f"pebble{len(started)}"
        d.mkdir()
        p = Pebble(d, dns.port, kw.pop("http_port", 80), kw.pop("tls_port", 443), **kw)
        started.append(p)
        t.extra_env["SSL_CERT_FILE"] = str(p.ca)
        return p

    t.pebble = pebble

    def finish():
        t.stop()
        for p in started:
            p.stop()
        dns.stop()
        if "panicked at" in t.log():
            pytest.fail(f"the server panicked\nlog:\n{t.log()}", pytrace=False)

    request.addfinalizer(finish)
    return t


def serving_cert(port: int, name: str, root: Path | None, host: str = "127.0.0.1") -> dict:
    """The certificate served on port for SNI name, verified against root (None: not
    verified; returns the DER's serial through openssl)."""
    if root is not None:
        ctx = ssl.create_default_context(cafile=str(root))
    else:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection((host, port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=name) as tls:
            der = tls.getpeercert(binary_form=True)
    text = openssl("x509", "-inform", "DER", "-noout", "-serial", "-issuer", input=der).decode()
    return {"serial": re.search(r"serial=(\w+)", text).group(1),
            "issuer": re.search(r"issuer=(.*)", text).group(1)}


def https_get(t: Tambo, host: str, path: str, root: Path, method: str = "GET",
              body: bytes | None = None) -> tuple[int, str, str]:
    ctx = ssl.create_default_context(cafile=str(root))
    with socket.create_connection((t.ip, 443), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=host) as tls:
            req = (f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
                   f"Content-Length: {len(body or b'')}\r\n\r\n").encode() + (body or b"")
            tls.sendall(req)
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
    head, _, payload = data.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    ctype = re.search(rb"(?im)^content-type:\s*(.*?)\r?$", head)
    return status, (ctype.group(1).decode() if ctype else ""), payload.decode()


def wait_issued(t: Tambo, name: str, n: int = 1, deadline: float = 40.0) -> None:
    pattern = f"acme: new certificate for {name} in force"
    if not wait_until(lambda: t.log().count(pattern) >= n, deadline):
        pytest.fail(f"no {n} certificate(s) for {name} after {deadline}s; log:\n{t.log()}")


def test_tls_alpn_01_issues_and_the_web_endpoints_serve_with_it(site):
    site.write_config(https_listen=[f"{site.ip}:443"])
    pebble = site.pebble()
    site.write_config(acme={"email": "admin@example.test", "directory": pebble.directory})
    site.start()
    for name in (HOSTNAME, f"mta-sts.{DOMAIN}", f"autoconfig.{DOMAIN}"):
        wait_issued(site, name)
    root = pebble.root()
    # The mail listeners serve the new certificate, verified by pebble's root.
    for port in (site.submission_tls_port, site.imaps_port):
        cert = serving_cert(port, HOSTNAME, root)
        assert "Pebble" in cert["issuer"], cert
    # Account and certificates are private.
    acme = site.data_dir / "acme"
    assert (acme.stat().st_mode & 0o777) == 0o700
    assert ((acme / "account.json").stat().st_mode & 0o777) == 0o600
    assert ((acme / "certs" / HOSTNAME / "privkey.pem").stat().st_mode & 0o777) == 0o600
    # MTA-STS policy: the one dns-records prints, over https with the right certificate.
    status, ctype, policy = https_get(site, f"mta-sts.{DOMAIN}", "/.well-known/mta-sts.txt", root)
    assert status == 200 and ctype.startswith("text/plain"), (status, ctype, policy)
    records = site.cli("util", "dns-records", DOMAIN).stdout
    printed = [l[len(";   "):] for l in records.splitlines() if l.startswith(";   ")]
    assert policy.splitlines() == printed, (policy, records)
    assert "mode: enforce" in printed and f"mx: {HOSTNAME}" in printed
    # util dns-check fetches that policy as a sender would (trusting pebble's root) and
    # judges it ok, once the _mta-sts record dns-records prints is published.
    [sts] = re.findall(rf'^_mta-sts\.{DOMAIN}\.\s.*TXT\s+"(.*)"$', records, re.M)
    zone_dir = site.dir.parent / "zone2"
    zone_dir.mkdir()
    hosts = [(HOSTNAME, site.ip), (f"mta-sts.{DOMAIN}", site.ip)]
    published = DnsServer(zone_dir, mx=[(DOMAIN, HOSTNAME, 10)], hosts=hosts,
                          txt=[(f"_mta-sts.{DOMAIN}", sts), ("sel1._domainkey.example.test", "probe")])
    try:
        published.start()
        site.write_config(dns_servers=[published.address])
        check = site.cli("util", "dns-check", DOMAIN, env={**site.env(), "SSL_CERT_FILE": str(root)})
    finally:
        published.stop()
        site.write_config(dns_servers=[site.dns.address])
    url = re.escape(f"https://mta-sts.{DOMAIN}/.well-known/mta-sts.txt")
    assert re.search(rf"^ok\s+MTA-STS policy {url}", check.stdout, re.M), check.stdout + check.stderr
    assert re.search(rf"^ok\s+MTA-STS _mta-sts\.{DOMAIN}", check.stdout, re.M), check.stdout
    # Thunderbird's autoconfiguration, read as Thunderbird does.
    for host, path in ((f"autoconfig.{DOMAIN}", "/mail/config-v1.1.xml"),
                       (f"autoconfig.{DOMAIN}", "/.well-known/autoconfig/mail/config-v1.1.xml")):
        status, ctype, text = https_get(site, host, path, root)
        assert status == 200 and "xml" in ctype, (status, ctype, text)
        config = ET.fromstring(text)
        assert config.tag == "clientConfig" and config.get("version") == "1.1"
        provider = config.find("emailProvider")
        assert provider.findtext("domain") == DOMAIN
        servers = [(s.tag, s.get("type"), s.findtext("hostname"), int(s.findtext("port")),
                    s.findtext("socketType"), s.findtext("username"), s.findtext("authentication"))
                   for s in provider if s.tag in ("incomingServer", "outgoingServer")]
        assert servers == [
            ("incomingServer", "imap", HOSTNAME, site.imaps_port, "SSL", "%EMAILADDRESS%", "password-cleartext"),
            ("outgoingServer", "smtp", HOSTNAME, site.submission_tls_port, "SSL", "%EMAILADDRESS%", "password-cleartext"),
            ("outgoingServer", "smtp", HOSTNAME, site.submission_port, "STARTTLS", "%EMAILADDRESS%", "password-cleartext"),
        ], text
    # Outlook's autodiscover (POX).
    request = (b'<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="http://schemas.microsoft.com/'
               b'exchange/autodiscover/outlook/requestschema/2006"><Request><EMailAddress>alice@example.test'
               b'</EMailAddress><AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/'
               b'outlook/responseschema/2006a</AcceptableResponseSchema></Request></Autodiscover>')
    # At the host name (its certificate is ours; Outlook gets there via _autodiscover SRV).
    status, ctype, text = https_get(site, HOSTNAME, "/autodiscover/autodiscover.xml",
                                    root, method="POST", body=request)
    assert status == 200, (status, text)
    ns = {"a": "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"}
    protocols = ET.fromstring(text).findall(".//a:Protocol", ns)
    got = [(p.findtext("a:Type", namespaces=ns), int(p.findtext("a:Port", namespaces=ns)),
            p.findtext("a:SSL", namespaces=ns), p.findtext("a:LoginName", namespaces=ns))
           for p in protocols]
    assert got == [("IMAP", site.imaps_port, "on", "alice@example.test"),
                   ("SMTP", site.submission_tls_port, "on", "alice@example.test"),
                   ("SMTP", site.submission_port, "off", "alice@example.test")], text


def test_http_01_issues(site):
    site.write_config(http_listen=[f"{site.ip}:80"])
    pebble = site.pebble()
    site.write_config(acme={"email": "admin@example.test", "directory": pebble.directory})
    site.start()
    wait_issued(site, HOSTNAME)
    cert = serving_cert(site.submission_tls_port, HOSTNAME, pebble.root())
    assert "Pebble" in cert["issuer"], cert
    # Anything else on http_listen goes to https.
    with socket.create_connection((site.ip, 80), timeout=10) as s:
        s.sendall(f"GET /x HTTP/1.1\r\nHost: {HOSTNAME}\r\nConnection: close\r\n\r\n".encode())
        head = s.recv(4096).decode()
    assert head.startswith("HTTP/1.1 301") and f"location: https://{HOSTNAME}/x" in head.lower(), head


def test_renewal_swaps_the_certificate_in_without_restart(site):
    site.write_config(https_listen=[f"{site.ip}:443"])
    # 30 s of validity: renewed when 10 s are left, 20 s after issuance.
    pebble = site.pebble(validity=30)
    site.write_config(acme={"email": "admin@example.test", "directory": pebble.directory})
    site.start()
    wait_issued(site, HOSTNAME)
    root = pebble.root()
    first = serving_cert(site.submission_tls_port, HOSTNAME, root)["serial"]
    pid = site.proc.pid
    wait_issued(site, HOSTNAME, n=2, deadline=45.0)
    second = serving_cert(site.submission_tls_port, HOSTNAME, root)["serial"]
    assert first != second
    assert serving_cert(site.imaps_port, HOSTNAME, root)["serial"] == second
    assert site.proc.pid == pid and site.alive()


def assert_one_failure_line(t: Tambo, pattern: str, subject: str, deadline: float = 20.0) -> None:
    """One ERROR line about subject (the directory, or a name), matching pattern."""
    if not wait_until(lambda: re.search(pattern, t.log(), re.M), deadline):
        pytest.fail(f"no log line matching {pattern!r}; log:\n{t.log()}")
    time.sleep(1)
    lines = [l for l in t.log().splitlines() if f"acme: {subject}:" in l]
    assert len(lines) == 1 and "ERROR" in lines[0], "\n".join(lines)
    # Still serving, with the self-signed certificate.
    cert = serving_cert(t.submission_tls_port, HOSTNAME, None)
    assert "Pebble" not in cert["issuer"], cert
    assert t.alive()


def test_directory_unreachable_logs_once_and_keeps_serving(site):
    site.write_config(https_listen=[f"{site.ip}:443"])
    [closed] = free_ports(1)
    site.write_config(acme={"email": "admin@example.test",
                            "directory": f"https://127.0.0.1:{closed}/dir"})
    site.start()
    assert_one_failure_line(
        site, rf"acme: directory https://127\.0\.0\.1:{closed}/dir: .*keeping the certificates "
              r"in force, next attempt in 60s$",
        f"directory https://127.0.0.1:{closed}/dir")


def test_garbage_directory_logs_once_and_keeps_serving(site, tmp_path):
    site.write_config(https_listen=[f"{site.ip}:443"])
    ca, cert, key = make_ca(tmp_path)
    site.extra_env["SSL_CERT_FILE"] = str(ca)
    [port] = free_ports(1)
    listener = socket.create_server(("127.0.0.1", port))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    stop = threading.Event()

    def serve():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            try:
                with ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.settimeout(5)
                    tls.recv(65536)
                    tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                b"Content-Length: 12\r\nConnection: close\r\n\r\n{not json!!}")
            except OSError:
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        site.write_config(acme={"email": "admin@example.test",
                                "directory": f"https://127.0.0.1:{port}/dir"})
        site.start()
        assert_one_failure_line(site, rf"acme: directory https://127\.0\.0\.1:{port}/dir: .*"
                                      r"keeping the certificates in force",
                                f"directory https://127.0.0.1:{port}/dir")
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def test_failed_challenge_logs_once_and_keeps_serving(site):
    # http-01, but pebble validates on a port where nothing listens.
    site.write_config(http_listen=[f"{site.ip}:80"])
    [closed] = free_ports(1)
    pebble = site.pebble(http_port=closed)
    site.write_config(acme={"email": "admin@example.test", "directory": pebble.directory})
    site.start()
    assert_one_failure_line(
        site, rf"acme: {re.escape(HOSTNAME)}: http-01 challenge refused: .*keeping the certificate "
              r"in force, next attempt in 60s$", HOSTNAME, deadline=40.0)


def test_failed_renewal_keeps_the_previous_certificate(site):
    site.write_config(https_listen=[f"{site.ip}:443"])
    pebble = site.pebble(validity=30)
    site.write_config(acme={"email": "admin@example.test", "directory": pebble.directory})
    site.start()
    wait_issued(site, HOSTNAME)
    first = serving_cert(site.submission_tls_port, HOSTNAME, pebble.root())["serial"]
    pebble.stop()
    # Renewal is due 20 s after issuance; the directory is gone by then.
    pattern = rf"acme: directory {re.escape(pebble.directory)}: .*keeping the certificates in force"
    if not wait_until(lambda: re.search(pattern, site.log(), re.M), 40.0):
        pytest.fail(f"no failed renewal logged; log:\n{site.log()}")
    assert serving_cert(site.submission_tls_port, HOSTNAME, None)["serial"] == first
    assert site.log().count(f"acme: new certificate for {HOSTNAME} in force") == 1
    assert site.alive()
