"""Verified TLS levels and MTA-STS (issue 4 §2, SPEC §8; RFC 8461) against real peers: a test
CA that tambo trusts through SSL_CERT_FILE, aiosmtpd sinks presenting certificates it issued
(or self-signed ones), an HTTPS server on 127.0.0.200:443 serving the policies, and a dnsmasq
with a zone of this module's own (the shared one in peers.py is left as it is):

    lvl.test        MX 10 mx.lvl.test       -> 127.0.0.201 (sink "lvl")
    wrongname.test  MX 10 mx.wrongname.test -> 127.0.0.206 (sink "wrongname": CA-signed,
                                                            but for another name)
    sts.test        MX 5  mx.bad.test       -> 127.0.0.202 (sink "bad", valid cert; not in
                                                            the policy)
                    MX 10 mx.sts.test       -> 127.0.0.203 (sink "sts", valid cert)
                    policy: enforce, mx: mx.sts.test
    stsbad.test     MX 10 mx.stsbad.test    -> 127.0.0.204 (sink "stsbad": CA-signed for
                                                            another name at first)
                    policy: enforce, mx: mx.stsbad.test
    ststest.test    MX 10 mx.ststest.test   -> 127.0.0.205 (sink "ststest": self-signed)
                    policy: testing, mx: mx.ststest.test
    mta-sts.{sts,stsbad,ststest}.test -> 127.0.0.200 (the policy server)

Each test has its own tambo (and so its own data_dir: no domaininfo or policy cache carried
over). A restart attempts every queued message at once: it forces the retries.
"""

from __future__ import annotations

import json
import ssl
import time

import pytest

from helpers import make_message, wait_until
from peers import (ALICE, SMTP_TIMEOUT_SECS, CertAuthority, PolicyServer, SinkGroup, ZoneDns,
                   log_lines, queued_ids, self_signed_cert, submit, wait_log_lines,
                   wait_queue_empty)

QUIET = 1.5  # how long "nothing more happens" is watched for
POLICY_HOST = "127.0.0.200"

SINKS = {
    "lvl": "127.0.0.201",
    "bad": "127.0.0.202",
    "sts": "127.0.0.203",
    "stsbad": "127.0.0.204",
    "ststest": "127.0.0.205",
    "wrongname": "127.0.0.206",
}

MX = [
    ("lvl.test", "mx.lvl.test", 10),
    ("wrongname.test", "mx.wrongname.test", 10),
    ("sts.test", "mx.bad.test", 5),
    ("sts.test", "mx.sts.test", 10),
    ("stsbad.test", "mx.stsbad.test", 10),
    ("ststest.test", "mx.ststest.test", 10),
]

POLICIES = {
    "sts.test": ("enforce", ["mx.sts.test"]),
    "stsbad.test": ("enforce", ["mx.stsbad.test"]),
    "ststest.test": ("testing", ["mx.ststest.test"]),
}
POLICY_ID = "e2e20240101"


def policy_text(mode: str, mx: list[str]) -> str:
    lines = ["version: STSv1", f"mode: {mode}", *[f"mx: {m}" for m in mx], "max_age: 86400"]
    return "\r\n".join(lines) + "\r\n"


class StsNet:
    """This module's peers: CA, zone, sinks, policy server."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.ca = CertAuthority(workdir)
        # Wrong-name and self-signed certificates: TLS works, verification does not.
        self.valid = {name: self.ca.server_context([f"mx.{name}.test"], f"mx-{name}")
                      for name in ["lvl", "bad", "sts", "stsbad", "ststest"]}
        self.wrong_name = self.ca.server_context(["mx.elsewhere.test"], "mx-elsewhere")
        ss_dir = workdir / "selfsigned"
        ss_dir.mkdir()
        from peers import sink_tls_context
        self.self_signed = {
            name: sink_tls_context(*self_signed_cert(_mkdir(ss_dir / name), f"mx.{name}.test"))
            for name in ["lvl", "ststest"]}
        contexts = {
            "lvl": self.valid["lvl"],
            "bad": self.valid["bad"],
            "sts": self.valid["sts"],
            "stsbad": self.wrong_name,
            "ststest": self.self_signed["ststest"],
            "wrongname": self.wrong_name,
        }
        self.sinks = SinkGroup(SINKS, contexts)
        hosts = [(f"mx.{n}.test", ip) for n, ip in SINKS.items()]
        hosts += [(f"mta-sts.{d}", POLICY_HOST) for d in POLICIES]
        txt = [(f"_mta-sts.{d}", f"v=STSv1; id={POLICY_ID}") for d in POLICIES]
        self.dns = ZoneDns(_mkdir(workdir / "dns"), MX, hosts, txt,
                           probe=f"_mta-sts.{next(iter(POLICIES))}")
        policy_ctx = self.ca.server_context([f"mta-sts.{d}" for d in POLICIES], "mta-sts")
        self.policy = PolicyServer(
            POLICY_HOST, policy_ctx,
            {f"mta-sts.{d}": policy_text(*p) for d, p in POLICIES.items()})

    def start(self) -> "StsNet":
        self.dns.start()
        self.sinks.start()
        try:
            self.policy.start()
        except OSError as e:
            raise RuntimeError(f"cannot listen on {POLICY_HOST}:443 (root needed, and no "
                               f"other server there): {e}") from e
        return self

    def stop(self) -> None:
        self.policy.stop()
        self.sinks.stop()
        self.dns.stop()

    def reset(self) -> None:
        self.sinks.reset()
        self.policy.reset()

    def sink(self, name: str):
        return self.sinks.sink(name)

    def stories(self) -> str:
        return self.sinks.stories() + "\n" + self.policy.story()

    def configure(self, tambo) -> None:
        tambo.write_config(dns_servers=[self.dns.address], outbound_smtp_port=self.sinks.port)
        tambo.extra_env["TAMBO_SMTP_TIMEOUT_SECS"] = str(SMTP_TIMEOUT_SECS)
        tambo.extra_env.update(self.ca.tambo_env())


def _mkdir(path):
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def stsnet_session(tmp_path_factory):
    n = StsNet(tmp_path_factory.mktemp("tls-levels"))
    try:
        n.start()
    except Exception:
        n.stop()
        raise
    yield n
    n.stop()


@pytest.fixture
def sts(stsnet_session):
    stsnet_session.reset()
    yield stsnet_session
    stsnet_session.reset()


@pytest.fixture
def tenv(env, sts):
    """A not yet started tambo that trusts the test CA and talks to this module's peers."""
    sts.configure(env)
    return env


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def domaininfo(env, domain: str) -> dict | None:
    path = env.data_dir / "domaininfo" / domain
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def wait_level(env, domain: str, level: str, deadline: float = 5.0) -> None:
    got = wait_until(lambda: (domaininfo(env, domain) or {}).get("outgoing") == level, deadline)
    if not got:
        pytest.fail(f"domaininfo/{domain} is {domaininfo(env, domain)!r}, expected outgoing "
                    f"{level!r}\nlog:\n{env.log()}", pytrace=False)


def sts_cache(env, domain: str) -> dict | None:
    path = env.data_dir / "mta-sts" / domain
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def rcpt_events(sink, rcpt: str) -> list[str]:
    """The sink's RCPT events for rcpt: a transaction that got that far."""
    return [e for e in sink.story().splitlines() if f"RCPT {rcpt}" in e]


def send(env, rcpt: str) -> tuple[str, str]:
    msg, msgid = make_message(sender=ALICE, to=rcpt)
    return submit(env, [rcpt], msg), msgid


def assert_held(env, sts, qid: str, rcpt: str, sink_name: str, why: list[str]) -> None:
    """qid was deferred for rcpt, stays queued, and the sink saw no transaction for it."""
    wait_log_lines(env, "event=deferred", f"id={qid}", f"to=<{rcpt}>")
    assert why, f"no log line explains why {qid} was held:\n{env.log()}"
    time.sleep(0.5)
    sink = sts.sink(sink_name)
    assert rcpt_events(sink, rcpt) == [], \
        f"the transaction reached RCPT although it should have stopped before MAIL:\n" \
        f"{sts.stories()}"
    assert qid in queued_ids(env), f"the held message left the queue: {queued_ids(env)}"


# --------------------------------------------------------------------------------------------
# TLS levels (domaininfo)
# --------------------------------------------------------------------------------------------


def test_verified_level_recorded(tenv, sts):
    tenv.start()
    qid, msgid = send(tenv, "v@lvl.test")
    [t] = sts.sink("lvl").wait(1, msgid, tambo=tenv)
    assert t.tls, "delivered without TLS although the sink offered STARTTLS"
    wait_log_lines(tenv, "event=delivered", f"id={qid}", "to=<v@lvl.test>")
    wait_queue_empty(tenv)
    wait_level(tenv, "lvl.test", "verified")
    assert domaininfo(tenv, "lvl.test") == {"outgoing": "verified"}, domaininfo(tenv, "lvl.test")


def test_ca_signed_certificate_for_another_name_is_insecure(tenv, sts):
    # Trusted issuer, wrong name: RFC 6125 name checks matter, not only the chain.
    tenv.start()
    qid, msgid = send(tenv, "w@wrongname.test")
    [t] = sts.sink("wrongname").wait(1, msgid, tambo=tenv)
    assert t.tls
    wait_queue_empty(tenv)
    wait_level(tenv, "wrongname.test", "insecure")


def test_downgrade_from_verified_refused_until_domaininfo_remove(tenv, sts):
    tenv.start()
    sink = sts.sink("lvl")
    qid1, id1 = send(tenv, "d@lvl.test")
    sink.wait(1, id1, tambo=tenv)
    wait_queue_empty(tenv)
    wait_level(tenv, "lvl.test", "verified")

    # Same MX, now with a self-signed certificate: TLS, but below the level seen before. The
    # restart makes sure the next message opens a new session (tambo keeps idle sessions for
    # reuse, and a kept one was verified) and that the level is read back from disk.
    sink.tls_context = sts.self_signed["lvl"]
    tenv.restart()
    qid2, id2 = send(tenv, "d2@lvl.test")
    wait_log_lines(tenv, "event=deferred", f"id={qid2}", "to=<d2@lvl.test>")
    why = [l for l in log_lines(tenv, qid2)
           if "lvl.test" in l and "insecure" in l and "verified" in l]
    assert_held(tenv, sts, qid2, "d2@lvl.test", "lvl", why)
    assert any("STARTTLS" in e for e in sink.events), \
        f"the refused attempt did not even try TLS:\n{sink.story()}"
    assert domaininfo(tenv, "lvl.test") == {"outgoing": "verified"}, "the level was lowered"

    # A restart alone does not help: the level is on disk.
    tenv.restart()
    again = wait_until(lambda: len(log_lines(tenv, "event=deferred", f"id={qid2}")) >= 2, 10)
    assert again, f"no second attempt after the restart:\n{tenv.log()}"
    assert sink.received(id2) == [], f"delivered below the known level after a restart:\n" \
        f"{sink.story()}"

    tenv.stop()
    r = tenv.cli("util", "domaininfo-remove", "lvl.test")
    assert r.returncode == 0, f"exit {r.returncode}: {r.stdout} {r.stderr}"
    assert domaininfo(tenv, "lvl.test") is None, "domaininfo-remove left the file"
    tenv.start()
    [t2] = sink.wait(1, id2, deadline=15, tambo=tenv)
    assert t2.tls
    wait_log_lines(tenv, "event=delivered", f"id={qid2}", "to=<d2@lvl.test>")
    wait_queue_empty(tenv)
    wait_level(tenv, "lvl.test", "insecure")
    time.sleep(QUIET)
    assert len(sink.received(id2)) == 1, sink.story()


# --------------------------------------------------------------------------------------------
# MTA-STS (RFC 8461)
# --------------------------------------------------------------------------------------------


def test_mta_sts_enforce_uses_only_policy_mx(tenv, sts):
    tenv.start()
    qid, msgid = send(tenv, "s@sts.test")
    [t] = sts.sink("sts").wait(1, msgid, deadline=15, tambo=tenv)
    assert t.tls and t.rcpt_tos == ["s@sts.test"], (t.tls, t.rcpt_tos)
    wait_log_lines(tenv, "event=delivered", f"id={qid}", "to=<s@sts.test>")
    wait_queue_empty(tenv)
    bad = sts.sink("bad")
    assert bad.connections == 0, \
        f"the preferred MX outside the enforced policy was contacted:\n{sts.stories()}"
    assert sts.policy.fetched("mta-sts.sts.test"), f"policy never fetched\n{sts.stories()}"
    cached = sts_cache(tenv, "sts.test")
    assert cached is not None, f"no policy cache at {tenv.data_dir / 'mta-sts' / 'sts.test'}"
    assert cached.get("mode") == "enforce" and cached.get("mx") == ["mx.sts.test"], cached
    assert cached.get("id") == POLICY_ID, cached
    assert log_lines(tenv, "mx.bad.test"), \
        f"no log line says mx.bad.test was skipped for the policy:\n{tenv.log()}"
    wait_level(tenv, "sts.test", "verified")


def test_mta_sts_enforce_invalid_certificate_deferred_then_delivered(tenv, sts):
    tenv.start()
    sink = sts.sink("stsbad")
    qid, msgid = send(tenv, "b@stsbad.test")
    wait_log_lines(tenv, "event=deferred", f"id={qid}", "to=<b@stsbad.test>")
    why = [l for l in log_lines(tenv, "stsbad.test")
           if "MTA-STS" in l.upper() and ("insecure" in l or "verif" in l)]
    assert_held(tenv, sts, qid, "b@stsbad.test", "stsbad", why)
    assert sts.policy.fetched("mta-sts.stsbad.test"), \
        f"deferred, but the policy was never fetched:\n{sts.stories()}"
    assert (sts_cache(tenv, "stsbad.test") or {}).get("mode") == "enforce", \
        sts_cache(tenv, "stsbad.test")
    deferred = log_lines(tenv, "event=deferred", f"id={qid}")[0]
    assert "MTA-STS" in deferred.upper(), \
        f"the deferred line does not say MTA-STS is why: {deferred}"

    sink.tls_context = sts.valid["stsbad"]
    tenv.restart()
    [t] = sink.wait(1, msgid, deadline=15, tambo=tenv)
    assert t.tls
    wait_log_lines(tenv, "event=delivered", f"id={qid}", "to=<b@stsbad.test>")
    wait_queue_empty(tenv)
    wait_level(tenv, "stsbad.test", "verified")
    time.sleep(QUIET)
    assert len(sink.received(msgid)) == 1, sink.story()


def test_mta_sts_testing_mode_delivers_despite_invalid_certificate(tenv, sts):
    tenv.start()
    qid, msgid = send(tenv, "x@ststest.test")
    [t] = sts.sink("ststest").wait(1, msgid, deadline=15, tambo=tenv)
    assert t.tls
    wait_log_lines(tenv, "event=delivered", f"id={qid}", "to=<x@ststest.test>")
    wait_queue_empty(tenv)
    assert sts.policy.fetched("mta-sts.ststest.test"), f"policy never fetched\n{sts.stories()}"
    assert (sts_cache(tenv, "ststest.test") or {}).get("mode") == "testing", \
        sts_cache(tenv, "ststest.test")
    notes = [l for l in log_lines(tenv, "ststest.test") if "testing" in l.lower()]
    assert notes, f"no log line reports the policy failure in testing mode:\n{tenv.log()}"
    wait_level(tenv, "ststest.test", "insecure")


# --------------------------------------------------------------------------------------------
# /metrics: outbound sessions by TLS level
# --------------------------------------------------------------------------------------------


def test_outbound_sessions_are_counted_by_tls_level_in_metrics(tenv, sts, tmp_path):
    from test_monitoring import Scrape, start_monitored
    from peers import sink_tls_context

    # ststest's sink offers STARTTLS but cannot complete a handshake (TLS 1.2 with only an
    # RSA key exchange CBC suite, which rustls does not offer): one failed handshake, then
    # plain text, which the domain's testing-mode policy lets through.
    broken = sink_tls_context(*self_signed_cert(tmp_path, "mx.ststest.test"))
    broken.maximum_version = ssl.TLSVersion.TLSv1_2
    broken.set_ciphers("AES128-SHA")
    sts.sink("ststest").tls_context = broken
    start_monitored(tenv)
    before = Scrape(tenv)
    for rcpt, sink in (("m1@lvl.test", "lvl"), ("m2@wrongname.test", "wrongname"),
                       ("m3@ststest.test", "ststest")):
        qid, msgid = send(tenv, rcpt)
        sts.sink(sink).wait(1, msgid, deadline=15, tambo=tenv)
        wait_log_lines(tenv, "event=delivered", f"id={qid}", f"to=<{rcpt}>")
    [t] = sts.sink("ststest").transactions
    assert not t.tls, sts.sink("ststest").story()
    after = Scrape(tenv)

    def delta(sample, **labels):
        return after.value(sample, **labels) - before.value(sample, **labels)

    assert delta("tambo_outbound_sessions_total", tls="verified") == 1, after.text
    assert delta("tambo_outbound_sessions_total", tls="insecure") == 1, after.text
    assert delta("tambo_outbound_sessions_total", tls="plain") == 1, after.text
    assert delta("tambo_outbound_tls_handshake_failures_total") == 1, after.text
