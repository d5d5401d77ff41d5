"""The doctor of `serve` (issue 20 item 4): dns-check verdicts, certificate days, PTRs and
the blocklist listing of our own address as /metrics gauges, looked at again periodically
(TAMBO_DOCTOR_INTERVAL_SECS, a hidden test seam, makes the hour 2 seconds here), and a log
warning when a verdict changes.

dnsmasq serves the host's address from an --addn-hosts file, which it rereads on SIGHUP, with
TTL 0: the test moves mx.example.test to another address and watches the PTR verdicts turn.
"""

from __future__ import annotations

import re
import signal
import urllib.request

import pytest

from helpers import HOSTNAME, free_ports, wait_until
from peers import DnsServer

DOMAIN = "example.test"
BIND = "192.0.2.5"


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return r.read().decode()


def gauge(text: str, metric: str, **labels) -> int | None:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    m = re.search(rf"^{metric}\{{{re.escape(want)}\}} (-?\d+)$", text, re.M)
    return int(m.group(1)) if m else None


@pytest.fixture
def dns(tmp_path):
    hosts = tmp_path / "hosts"
    hosts.write_text(f"{BIND} {HOSTNAME}\n")
    server = DnsServer(tmp_path, mx=[(DOMAIN, HOSTNAME, 10)], hosts=[],
                       txt=[("sel1._domainkey.example.test", "probe"),
                            (DOMAIN, "v=spf1 mx ip4:192.0.2.5 -all")])
    # --user=root: dnsmasq drops to nobody otherwise, who cannot read into tmp_path.
    server.args += [f"--addn-hosts={hosts}", "--local-ttl=0", "--user=root",
                    f"--ptr-record=5.2.0.192.in-addr.arpa,{HOSTNAME}", "--local=/2.0.192.in-addr.arpa/",
                    # Our own address is listed by one zone.
                    "--address=/5.2.0.192.bl.test/127.0.0.2"]
    server.hosts_file = hosts
    server.start()
    yield server
    server.stop()


def test_doctor_gauges_and_a_changed_record(env, dns):
    [mon] = free_ports(1)
    env.write_config(dns_servers=[dns.address], outbound_bind=BIND, dnsbl=["bl.test"],
                     monitoring_listen=f"127.0.0.1:{mon}")
    env.extra_env["TAMBO_DOCTOR_INTERVAL_SECS"] = "2"
    env.start()

    def present():
        text = scrape(mon)
        return text if gauge(text, "tambo_ptr_ok", address=BIND) is not None else None

    text = wait_until(present, 20.0)
    assert text, f"no doctor gauges; log:\n{env.log()}"
    assert gauge(text, "tambo_dns_check_ok", domain=DOMAIN, record=f"MX {DOMAIN}") == 1, text
    assert gauge(text, "tambo_dns_check_ok", domain=DOMAIN, record=f"SPF {DOMAIN}") == 1, text
    assert gauge(text, "tambo_dns_check_ok", domain=DOMAIN,
                 record=f"DMARC _dmarc.{DOMAIN}") == 0, text
    ptr_record = f"PTR 5.2.0.192.in-addr.arpa ({BIND})"
    assert gauge(text, "tambo_dns_check_ok", domain=DOMAIN, record=ptr_record) == 1, text
    assert gauge(text, "tambo_ptr_ok", address=BIND) == 1, text
    assert gauge(text, "tambo_dnsbl_self_listed", zone="bl.test", address=BIND) == 1, text
    days = gauge(text, "tambo_certificate_days_left", name=HOSTNAME)
    assert days is not None and days > 300, text

    # The host moves: the PTR of our address no longer resolves back to it.
    dns.hosts_file.write_text(f"192.0.2.9 {HOSTNAME}\n")
    dns.proc.send_signal(signal.SIGHUP)
    turned = wait_until(lambda: gauge(scrape(mon), "tambo_ptr_ok", address=BIND) == 0, 20.0)
    assert turned, f"{scrape(mon)}\nlog:\n{env.log()}"
    # dns-check looks before the PTR check does, so the change may reach it one look later.
    assert wait_until(lambda: gauge(scrape(mon), "tambo_dns_check_ok", domain=DOMAIN,
                                    record=ptr_record) == 0, 5.0), scrape(mon)
    assert wait_until(lambda: f"doctor: PTR of {BIND}: no longer ok" in env.log(), 5.0), env.log()
    assert wait_until(lambda: f"doctor: dns-check {DOMAIN}: {ptr_record}: no longer ok"
                      in env.log(), 5.0), env.log()
