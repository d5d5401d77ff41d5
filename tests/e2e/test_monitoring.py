"""The monitoring endpoint (SPEC §3 `monitoring_listen`, issue 6 §3 and §5): `/metrics` in the
Prometheus text format, read with Prometheus's own Python parser; `/healthz`; `/queue` as JSON,
the same data as `tambo util queue`; 404 for anything else."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from helpers import (PASSWORD, SmtpConn, free_ports, make_message, port_open, queue_id, send_raw,
                     wait_until)

HTTP_TIMEOUT = 10.0


def start_monitored(env):
    [port] = free_ports(1)
    env.write_config(monitoring_listen=f"127.0.0.1:{port}")
    env.start()
    # The SMTP ports are open before the monitoring one is bound: wait for it too.
    if not wait_until(lambda: port_open(port), 10):
        pytest.fail(f"monitoring port {port} not open; log:\n{env.log()}", pytrace=False)
    env.monitoring_port = port
    return env


def get(env, path: str, method: str = "GET") -> tuple[int, str, str]:
    """(status, content type, body) of one request."""
    req = urllib.request.Request(f"http://127.0.0.1:{env.monitoring_port}{path}", method=method)
    try:
        with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read().decode()


class Scrape:
    """One /metrics scrape, parsed by prometheus_client."""

    def __init__(self, env):
        status, ctype, text = get(env, "/metrics")
        assert status == 200, (status, text)
        assert ctype.startswith("text/plain; version=0.0.4"), ctype
        self.text = text
        self.families = {f.name: f for f in text_string_to_metric_families(text)}

    def value(self, sample: str, **labels) -> float:
        for family in self.families.values():
            for s in family.samples:
                if s.name == sample and s.labels == labels:
                    return s.value
        raise AssertionError(f"no sample {sample}{labels} in:\n{self.text}")


def test_endpoints_and_format(env):
    start_monitored(env)
    status, ctype, body = get(env, "/healthz")
    assert (status, body) == (200, "ok"), (status, body)

    for path in ("/", "/nope", "/metrics/extra", "/queue/x"):
        status, _, _ = get(env, path)
        assert status == 404, (path, status)
    status, _, _ = get(env, "/metrics", method="POST")
    assert status == 405, status

    status, ctype, body = get(env, "/queue")
    assert status == 200 and ctype.startswith("application/json"), (status, ctype)
    assert json.loads(body) == []

    scrape = Scrape(env)
    # Every family is documented, typed, and ours; counters are named ..._total (the parser
    # strips that suffix from the family name and keeps it on the samples).
    assert len(scrape.families) >= 15, sorted(scrape.families)
    for name, family in scrape.families.items():
        assert name.startswith("tambo_"), name
        assert family.documentation, name
        assert family.type in ("counter", "gauge"), (name, family.type)
        for s in family.samples:
            if family.type == "counter":
                assert s.name == name + "_total", (name, s.name)
    assert scrape.value("tambo_queue_messages") == 0
    assert scrape.value("tambo_queue_oldest_message_age_seconds") == 0
    for listener in ("smtp", "submission", "submission_tls"):
        assert scrape.value("tambo_connections_total", listener=listener) >= 0
    for result in ("pass", "fail", "none"):
        scrape.value("tambo_spf_results_total", result=result)
        scrape.value("tambo_dkim_results_total", result=result)
        scrape.value("tambo_dmarc_results_total", result=result)
    for outcome in ("accept", "reject", "tempfail"):
        scrape.value("tambo_hook_results_total", outcome=outcome)


def test_counters_follow_the_mail_and_queue_matches_util_queue(env):
    # ext: an outside address, deferred (no DNS server answers: dns_servers is a closed port).
    # fail: a command that exits 1, a permanent failure: the sender gets a DSN, which is itself
    # deferred (the sender is outside too).
    env.write_aliases("ext: someone@remote.example\nfail: | /bin/false\n")
    start_monitored(env)
    before = Scrape(env)

    msg, _ = make_message(to="alice@example.test")
    delivered_id = queue_id(send_raw(env.smtp_port, "bob@sender.example",
                                     ["alice@example.test"], msg))
    msg, _ = make_message(to="ext@example.test")
    deferred_id = queue_id(send_raw(env.smtp_port, "bob@sender.example",
                                    ["ext@example.test"], msg))
    msg, _ = make_message(to="fail@example.test")
    failed_id = queue_id(send_raw(env.smtp_port, "bob@sender.example",
                                  ["fail@example.test"], msg))
    env.wait_messages(1)
    for qid, event in ((delivered_id, "event=delivered"), (deferred_id, "event=deferred"),
                       (failed_id, "event=bounced")):
        assert env.wait_log(lambda l: f"id={qid}" in l and event in l, deadline=20), \
            (event, env.log())

    # Implicit TLS on 465, then a wrong password.
    with SmtpConn(env.submission_tls_port, tls=True) as c:
        c.ehlo()
        r = c.auth_plain("alice@example.test", PASSWORD + "x")
        assert r.code == 535, str(r)
        c.cmd("QUIT")

    def moved():
        after = Scrape(env)
        return after if after.value("tambo_auth_failures_total", reason="password") > \
            before.value("tambo_auth_failures_total", reason="password") else None
    after = wait_until(moved, 10)
    assert after, Scrape(env).text

    def delta(sample, **labels):
        return after.value(sample, **labels) - before.value(sample, **labels)

    assert delta("tambo_messages_received_total") == 3
    assert delta("tambo_messages_delivered_total") == 1
    assert delta("tambo_messages_deferred_total") >= 1
    assert delta("tambo_messages_failed_total") == 1
    assert delta("tambo_messages_bounced_total") == 1
    assert delta("tambo_messages_discarded_total") == 0
    assert delta("tambo_connections_total", listener="smtp") == 3
    assert delta("tambo_connections_total", listener="submission_tls") == 1
    assert delta("tambo_connections_total", listener="submission") == 0
    assert delta("tambo_tls_handshakes_total") == 1
    assert delta("tambo_tls_handshake_failures_total") == 0
    assert delta("tambo_auth_failures_total", reason="password") == 1
    # Three messages went in; the replies came out.
    assert delta("tambo_smtp_bytes_received_total") > 3 * len(msg)
    assert delta("tambo_smtp_bytes_sent_total") > 0
    assert after.value("tambo_connections_open", listener="smtp") == 0
    # Still queued: the deferred message and the DSN.
    assert after.value("tambo_queue_messages") == 2
    assert after.value("tambo_queue_oldest_message_age_seconds") >= 0

    def same_listing():
        status, _, body = get(env, "/queue")
        assert status == 200, (status, body)
        listed = json.loads(body)
        text = env.cli("util", "queue").stdout
        return (listed, text) if matches(listed, text) else None
    found = wait_until(same_listing, 10)
    assert found, (get(env, "/queue"), env.cli("util", "queue").stdout)
    listed, _ = found
    by_id = {m["id"]: m for m in listed}
    assert set(by_id) >= {deferred_id}, by_id
    [ext] = by_id[deferred_id]["recipients"]
    assert ext["to"] == "someone@remote.example" and ext["state"] == "pending", ext
    assert ext["original"] == "ext@example.test", ext
    assert ext["last_error"], ext
    dsn = [m for m in listed if m["id"] != deferred_id]
    assert len(dsn) == 1 and dsn[0]["from"] == "", listed


HEAD_RE = re.compile(r"^id=(\S+) age=(\d+)s from=<(.*)> nrcpt=(\d+)$")
RCPT_RE = re.compile(r"^  to=<(.*)> state=(\w+)(?: reason=(\".*?\"))?(?: last_error=(\".*\"))?$")


def matches(listed: list[dict], text: str) -> bool:
    """Whether the JSON listing and `util queue`'s text say the same (ages within 2 s)."""
    lines = text.splitlines()
    if not listed:
        return lines == ["queue is empty"]
    if len(lines) != len(listed) + sum(len(m["recipients"]) for m in listed):
        return False
    it = iter(lines)
    for m in listed:
        head = HEAD_RE.match(next(it))
        if not head:
            return False
        qid, age, sender, nrcpt = head.groups()
        if (qid, sender, int(nrcpt)) != (m["id"], m["from"], len(m["recipients"])):
            return False
        if abs(int(age) - m["age_secs"]) > 2:
            return False
        for r in m["recipients"]:
            line = RCPT_RE.match(next(it))
            if not line:
                return False
            to, state, reason, last_error = line.groups()
            if (to, state) != (r["to"], r["state"]):
                return False
            # util queue quotes with Rust's {:?}: the same as JSON for ordinary text.
            want = None if r["last_error"] is None else json.dumps(r["last_error"],
                                                                   ensure_ascii=False)
            if last_error != want:
                return False
    return True
