"""`tambo util queue` (SPEC §4): queued messages with id, age, sender, recipients with their
state and last error; read-only, so it is safe while the server runs."""

from __future__ import annotations

from helpers import make_message, queue_id, send_raw, wait_until


def test_util_queue_lists_a_deferred_message(env):
    # An alias to an outside address: with no DNS server reachable (dns_servers points at a
    # closed port), remote delivery is deferred and the message stays queued.
    env.write_aliases("ext: someone@remote.example\n")
    env.start()
    r = env.cli("util", "queue")
    assert r.returncode == 0 and "queue is empty" in r.stdout, (r.returncode, r.stdout, r.stderr)

    msg, _ = make_message(to="ext@example.test")
    qid = queue_id(send_raw(env.smtp_port, "bob@sender.example", ["ext@example.test"], msg))
    deferred = env.wait_log(lambda l: f"id={qid}" in l and "event=deferred" in l, deadline=20)
    assert deferred, env.log()

    def listed():
        out = env.cli("util", "queue").stdout
        return out if "last_error=" in out else None
    out = wait_until(listed, 10)
    assert out, env.cli("util", "queue").stdout
    lines = out.splitlines()
    head = next(l for l in lines if l.startswith(f"id={qid} "))
    assert "from=<bob@sender.example>" in head and "nrcpt=1" in head, head
    rcpt = lines[lines.index(head) + 1]
    assert rcpt.startswith("  to=<someone@remote.example> state=pending last_error="), rcpt
    # Listing never touches the queue: the message is still there and still the same.
    assert any(p.name == qid for p in env.queue_files()), env.queue_files()
