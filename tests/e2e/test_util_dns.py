"""`util dns-records` and `util dns-check` (issue 6 §2, SPEC §4) against dnsmasq on loopback.

The zone output is parsed with dnspython's zone-file parser (so it can be pasted), then served
by a dnsmasq built from it: `dns-check` must find every record ok. Zones with missing and
wrong records must be reported line by line, with exit 1.

The server's addresses are documentation addresses (192.0.2.0/24): they are only DNS data here
(nothing connects to them), and hickory answers `localhost` for any PTR under 127/8 itself.
"""

from __future__ import annotations

import os
import re

import dns.name
import dns.rdatatype
import dns.zone
import pytest

from helpers import HOSTNAME, Tambo
from peers import ZoneDns, make_dkim_key

DOMAIN = "example.test"
PROBE = "probe.example.test"  # a TXT name every zone has, so we can tell dnsmasq answers
REVERSE_ZONE = "2.0.192.in-addr.arpa"


@pytest.fixture(scope="module")
def rsa_key():
    return make_dkim_key("sel1", "rsa")


@pytest.fixture
def tambo(tmp_path, rsa_key):
    t = Tambo(tmp_path)
    key_path = t.add_domain(DOMAIN) / "dkim:sel1.pem"
    key_path.write_bytes(rsa_key.private_pem)
    os.chmod(key_path, 0o600)
    return t


@pytest.fixture
def zones(tmp_path):
    """Starts dnsmasq zones on demand; stops them all at teardown."""
    started: list[ZoneDns] = []

    def start(args: list[str]) -> ZoneDns:
        workdir = tmp_path / f"dns{len(started)}"
        workdir.mkdir()
        server = ZoneDns(workdir, mx=[], hosts=[], txt=[(PROBE, "probe")], probe=PROBE)
        # Unknown reverse names of our test addresses are NXDOMAIN, not REFUSED.
        server.args += [f"--local=/{REVERSE_ZONE}/", *args]
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


def parse_zone(text: str) -> list[tuple[str, str, object]]:
    """(owner, type, rdata) of every record, through a real zone-file parser."""
    zone = dns.zone.from_text(text, origin=dns.name.root, relativize=False, check_origin=False)
    return [(str(name), dns.rdatatype.to_text(rd.rdtype), rd)
            for name, _ttl, rd in zone.iterate_rdatas()]


def dnsmasq_args(records: list[tuple[str, str, object]]) -> list[str]:
    """The same records as dnsmasq options (character-strings comma-separated, as given)."""
    args = []
    for owner, rtype, rd in records:
        owner = owner.rstrip(".")
        if rtype == "MX":
            args.append(f"--mx-host={owner},{str(rd.exchange).rstrip('.')},{rd.preference}")
        elif rtype == "TXT":
            strings = [s.decode() for s in rd.strings]
            assert all("," not in s for s in strings), strings
            args.append(f"--txt-record={owner},{','.join(strings)}")
        elif rtype == "A":
            # --address creates no PTR, so the PTR served is the one from the output.
            args.append(f"--address=/{owner}/{rd.address}")
        elif rtype == "PTR":
            args.append(f"--ptr-record={owner},{str(rd.target).rstrip('.')}")
        elif rtype == "SRV" and str(rd.target) == ".":
            # dnsmasq: no target is RFC 2782's "." (service not available here).
            args.append(f"--srv-host={owner}")
        elif rtype == "SRV":
            args.append(f"--srv-host={owner},{str(rd.target).rstrip('.')},{rd.port},"
                        f"{rd.priority},{rd.weight}")
        else:
            raise AssertionError(f"unexpected record type {rtype} for {owner}")
    return args


def run_ok(t: Tambo, *args: str):
    r = t.cli(*args)
    assert r.returncode == 0, f"{args}: exit {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    return r


def check_comments(text: str) -> None:
    """Every record line comes right after a `;` comment line saying why."""
    lines = [l for l in text.splitlines() if l.strip()]
    for i, line in enumerate(lines):
        if not line.startswith(";"):
            assert i > 0 and lines[i - 1].startswith("; "), f"no comment before {line!r}:\n{text}"


def test_dns_records_with_outbound_bind(tambo, rsa_key):
    tambo.write_config(outbound_bind="192.0.2.5")
    out = run_ok(tambo, "util", "dns-records", DOMAIN).stdout
    check_comments(out)
    records = parse_zone(out)
    by_type: dict[tuple[str, str], list] = {}
    for owner, rtype, rd in records:
        by_type.setdefault((owner, rtype), []).append(rd)

    [mx] = by_type[(f"{DOMAIN}.", "MX")]
    assert str(mx.exchange) == f"{HOSTNAME}."
    txt = {owner: [b"".join(rd.strings).decode() for rd in rds]
           for (owner, rtype), rds in by_type.items() if rtype == "TXT"}
    assert txt[f"{DOMAIN}."] == ["v=spf1 mx ip4:192.0.2.5 -all"]
    assert txt[f"_smtp._tls.{DOMAIN}."] == [f"v=TLSRPTv1; rua=mailto:postmaster@{DOMAIN}"]
    [dmarc] = txt[f"_dmarc.{DOMAIN}."]
    assert re.fullmatch(r"v=DMARC1; p=(quarantine|reject); rua=mailto:postmaster@example\.test",
                        dmarc), dmarc
    [sts] = txt[f"_mta-sts.{DOMAIN}."]
    assert re.fullmatch(r"v=STSv1; id=[A-Za-z0-9]{1,32}", sts), sts

    # The DKIM key: our public key, in character-strings of at most 255 octets.
    [dkim_rd] = by_type[(f"sel1._domainkey.{DOMAIN}.", "TXT")]
    assert len(dkim_rd.strings) >= 2 and all(len(s) <= 255 for s in dkim_rd.strings)
    tags = dict(t.strip().split("=", 1) for t in b"".join(dkim_rd.strings).decode().split(";"))
    assert tags["v"] == "DKIM1" and tags["k"] == "rsa"
    assert tags["p"] == rsa_key.public_b64

    [a] = by_type[(f"{HOSTNAME}.", "A")]
    assert a.address == "192.0.2.5"
    [ptr] = by_type[(f"5.{REVERSE_ZONE}.", "PTR")]
    assert str(ptr.target) == f"{HOSTNAME}."
    assert re.search(r"^; PTR: .*hosting provider", out, re.M), out

    # The MTA-STS policy to serve, as comment lines.
    policy = dict(m.groups() for m in re.finditer(r"^;\s+(version|mode|mx|max_age): (\S+)$",
                                                  out, re.M))
    assert policy["version"] == "STSv1"
    assert policy["mode"] in ("enforce", "testing")
    assert policy["mx"] == HOSTNAME
    assert 86400 <= int(policy["max_age"]) <= 31557600
    assert f"https://mta-sts.{DOMAIN}/.well-known/mta-sts.txt" in out

    # The same output twice: the MTA-STS id only changes with the policy.
    assert run_ok(tambo, "util", "dns-records", DOMAIN).stdout == out


def test_dns_records_address_from_dns_or_placeholder(tambo, zones):
    server = zones([f"--host-record={HOSTNAME},192.0.2.2"])
    tambo.write_config(dns_servers=[server.address])
    out = run_ok(tambo, "util", "dns-records", DOMAIN).stdout
    records = parse_zone(out)
    assert (f"2.{REVERSE_ZONE}.", "PTR") in [(o, t) for o, t, _ in records], out
    assert "v=spf1 mx -all" in out

    # The hostname does not resolve: a placeholder comment, no PTR record.
    empty = zones([])
    tambo.write_config(dns_servers=[empty.address])
    out = run_ok(tambo, "util", "dns-records", DOMAIN).stdout
    check_comments(out)
    assert not [r for r in parse_zone(out) if r[1] == "PTR"], out
    assert re.search(r"^; PTR: the server's address is unknown .*outbound_bind", out, re.M), out
    assert re.search(rf"^; <reverse name of the server's address>.*PTR\s+{HOSTNAME}\.$", out,
                     re.M), out


def test_dns_check_all_ok_with_the_printed_zone(tambo, zones):
    tambo.write_config(outbound_bind="192.0.2.5")
    out = run_ok(tambo, "util", "dns-records", DOMAIN).stdout
    server = zones(dnsmasq_args(parse_zone(out)))
    tambo.write_config(dns_servers=[server.address])
    r = tambo.cli("util", "dns-check", DOMAIN)
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stdout}\n{r.stderr}\ndnsmasq:\n{server.log()}"
    lines = r.stdout.splitlines()
    verdicts = [l for l in lines if re.match(r"^(ok|missing|wrong)\s", l)]
    assert all(l.startswith("ok ") for l in verdicts), r.stdout
    whats = " ".join(verdicts)
    for what in (f"MX {DOMAIN}", f"SPF {DOMAIN}", f"DKIM sel1._domainkey.{DOMAIN}", f"DMARC _dmarc.{DOMAIN}",
                 f"MTA-STS _mta-sts.{DOMAIN}", f"TLS-RPT _smtp._tls.{DOMAIN}",
                 f"PTR 5.{REVERSE_ZONE} (192.0.2.5)",
                 # RFC 6186: submission on, the mailbox ports off (target ".").
                 f"SRV _submissions._tcp.{DOMAIN}", f"SRV _submission._tcp.{DOMAIN}",
                 f"SRV _imaps._tcp.{DOMAIN}", f"SRV _imap._tcp.{DOMAIN}",
                 f"SRV _pop3s._tcp.{DOMAIN}", f"SRV _pop3._tcp.{DOMAIN}"):
        assert what in whats, f"no verdict for {what}:\n{r.stdout}"
    assert len(verdicts) == 13, r.stdout
    assert "all 13 records ok" in r.stdout, r.stdout
    # The _mta-sts record is published, so the policy is fetched as a sender would; nothing
    # serves it here (mta-sts.example.test has no address), which is said but not counted.
    policy = f"https://mta-sts.{DOMAIN}/.well-known/mta-sts.txt"
    assert re.search(rf"^note    MTA-STS policy {re.escape(policy)}: not served \(mta-sts\."
                     rf"{re.escape(DOMAIN)}: .*\); senders apply no policy until it is$",
                     r.stdout, re.M), r.stdout


def test_dns_check_reports_missing_and_wrong(tambo, zones):
    other = make_dkim_key("sel1", "rsa")
    # mx.example.test is 192.0.2.2 with a PTR to another name; outbound_bind 192.0.2.7 has a
    # PTR to us but the hostname does not resolve back to it.
    server = zones([
        f"--mx-host={DOMAIN},other.example.net,10",
        f"--txt-record={DOMAIN},v=spf1 -all",
        f"--txt-record=sel1._domainkey.{DOMAIN},{other.txt[:255]},{other.txt[255:]}",
        f"--txt-record=_mta-sts.{DOMAIN},v=STSv1; id=not-alnum!",
        f"--address=/{HOSTNAME}/192.0.2.2",
        f"--ptr-record=2.{REVERSE_ZONE},other.example.test",
        f"--ptr-record=7.{REVERSE_ZONE},{HOSTNAME}",
    ])
    tambo.write_config(dns_servers=[server.address], outbound_bind="192.0.2.7")
    r = tambo.cli("util", "dns-check", DOMAIN)
    assert r.returncode == 1, f"exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    out = r.stdout
    expected = [
        rf"^wrong   MX {DOMAIN}: found other\.example\.net; expected MX 10 {HOSTNAME}$",
        rf'^wrong   SPF {DOMAIN}: found "v=spf1 -all", which does not authorise us '
        r"\(192\.0\.2\.7: fail, 192\.0\.2\.2: fail\); expected \"v=spf1 mx ip4:192\.0\.2\.7 -all\"$",
        rf"^wrong   DKIM sel1\._domainkey\.{DOMAIN}: found another key: .*expected \"v=DKIM1; k=rsa; p=",
        rf"^missing DMARC _dmarc\.{DOMAIN}: found .*; expected \"v=DMARC1; p=",
        rf"^wrong   MTA-STS _mta-sts\.{DOMAIN}: found \"v=STSv1; id=not-alnum!\" \(invalid id\)",
        rf"^missing TLS-RPT _smtp\._tls\.{DOMAIN}: found .*; expected \"v=TLSRPTv1; rua=",
        rf"^wrong   PTR 7\.{REVERSE_ZONE} \(192\.0\.2\.7\): found {HOSTNAME}, but {HOSTNAME} "
        r"resolves to 192\.0\.2\.2; expected",
        rf"^wrong   PTR 2\.{REVERSE_ZONE} \(192\.0\.2\.2\): found other\.example\.test; "
        rf"expected {HOSTNAME}, which resolves back to 192\.0\.2\.2",
        rf"^missing SRV _submissions\._tcp\.{DOMAIN}: found no SRV record; expected SRV 0 1 "
        rf"{tambo.submission_tls_port} {HOSTNAME}\.$",
        rf"^missing SRV _submission\._tcp\.{DOMAIN}: found no SRV record; expected SRV 0 1 "
        rf"{tambo.submission_port} {HOSTNAME}\.$",
    ]
    for pattern in expected:
        assert re.search(pattern, out, re.M), f"no line matching {pattern!r} in:\n{out}"
    # Only the services that are off are fine without a record (RFC 6186 §4).
    oks = re.findall(r"^ok .*$", out, re.M)
    assert len(oks) == 4 and all("(service off)" in l for l in oks), out
    assert "10 of 14 records are missing or wrong" in r.stderr, r.stderr


def test_dns_check_no_records_at_all(tambo, zones):
    server = zones([])
    tambo.write_config(dns_servers=[server.address])
    r = tambo.cli("util", "dns-check", DOMAIN)
    assert r.returncode == 1, f"exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    assert re.search(rf"^missing MX {DOMAIN}: found no MX record; expected MX 10 {HOSTNAME}$",
                     r.stdout, re.M), r.stdout
    assert re.search(rf"^missing address of {HOSTNAME}: .*expected an A/AAAA record for {HOSTNAME}",
                     r.stdout, re.M), r.stdout


@pytest.mark.parametrize("command", ["dns-records", "dns-check"])
def test_dns_bad_input(tambo, command):
    r = tambo.cli("util", command, "nofolder.test")
    assert r.returncode == 2, r
    assert r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1 and "nofolder.test" in r.stderr, r.stderr

    # A key file that is not a key: named, exit 2.
    bad = tambo.add_domain(DOMAIN) / "dkim:broken.pem"
    bad.write_text("not a key\n")
    r = tambo.cli("util", command, DOMAIN)
    assert r.returncode == 2, r
    assert r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1 and "dkim:broken.pem" in r.stderr, r.stderr


def test_dns_records_warns_of_a_short_hostname_and_a_missing_dkim_key(tmp_path):
    t = Tambo(tmp_path)
    t.add_domain(DOMAIN)  # no DKIM key
    t.write_config(hostname="vm")
    r = run_ok(t, "util", "dns-records", DOMAIN)
    out = r.stdout
    check_comments(out)
    [mx] = [rd for owner, rtype, rd in parse_zone(out) if rtype == "MX"]
    assert str(mx.exchange) == "vm.", out
    short = re.search(r'^; warning: hostname "vm" is not a fully qualified name: .*cannot resolve.*'
                      r'"hostname" in conf/tambo\.json', out, re.M)
    assert short, out
    no_key = re.search(rf"^; warning: DKIM: {re.escape(DOMAIN)} has no key.*"
                       rf"tambo util dkim-keygen {re.escape(DOMAIN)}$", out, re.M)
    assert no_key, out
    assert not [rd for owner, rtype, rd in parse_zone(out) if "_domainkey" in owner], out
    # The same warnings on stderr, where they are seen even when stdout goes to a file.
    warnings = [l for l in r.stderr.splitlines() if l.startswith("warning: ")]
    assert len(warnings) == 2, r.stderr
    assert short.group(0).removeprefix("; ") in r.stderr and no_key.group(0).removeprefix("; ") in r.stderr

    # A fully qualified hostname and a key: no warning at all.
    t.write_config(hostname=HOSTNAME)
    r = run_ok(t, "util", "dkim-keygen", DOMAIN)
    r = run_ok(t, "util", "dns-records", DOMAIN)
    assert "warning" not in r.stdout and r.stderr == "", r
