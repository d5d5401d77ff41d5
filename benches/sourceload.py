"""The lockstep load of the domain phases: Postfix's smtp-source (one message at a time per
session, each message on its own connection: connect, HELO, MAIL, RCPT, DATA, QUIT, as most
mail from the Internet arrives).

smtp-source sends to one recipient address per run (or, with -r N, to N numbered recipients
in every message), so a load spread over the domain's mailboxes is one smtp-source per
mailbox, all started at once: `sessions` over the mailboxes as evenly as they go (16 over
10: six mailboxes get 2, four get 1), and the messages in proportion to the sessions, so
every process has about the same work and they end together. Each mailbox's count is known
exactly, so each Maildir is checked on its own.
"""

import subprocess
import time

SMTP_SOURCE = "/usr/sbin/smtp-source"
HELO = "client.test"


def spread(users, sessions, messages):
    """[(user, sessions, messages)]: `sessions` and `messages` over `users`, the messages in
    proportion to the sessions; users left without a session get nothing."""
    per = [sessions // len(users) + (i < sessions % len(users)) for i in range(len(users))]
    counts = [messages * s // sessions for s in per]
    for i in range(messages - sum(counts)):
        counts[i % len(users)] += 1
    return [(u, s, m) for u, s, m in zip(users, per, counts) if s and m]


def run(port, sender, jobs, size, recipients=1, deadline_s=600):
    """Runs one smtp-source per (rcpt, sessions, messages) of `jobs` at once; returns the
    instant they started and the one the last ended (time.perf_counter), and the failures
    (text of each smtp-source that exited non-zero: any unexpected reply stops it)."""
    procs = []
    start = time.perf_counter()
    for rcpt, sessions, messages in jobs:
        argv = [SMTP_SOURCE, "-s", str(sessions), "-m", str(messages), "-l", str(size),
                "-M", HELO, "-f", sender, "-t", rcpt]
        if recipients > 1:
            argv += ["-r", str(recipients)]
        argv.append(f"127.0.0.1:{port}")
        procs.append((rcpt, subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)))
    failures = []
    end = time.monotonic() + deadline_s
    try:
        for rcpt, p in procs:
            try:
                out, _ = p.communicate(timeout=max(1.0, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                out, _ = p.communicate()
                failures.append(f"{rcpt}: no end after {deadline_s} s")
                continue
            if p.returncode != 0:
                text = out.decode(errors="replace").strip().splitlines()
                failures.append(f"{rcpt}: {text[-1] if text else f'exit {p.returncode}'}")
    finally:
        # Interrupted (Ctrl-C, SIGTERM): none of them outlives the bench.
        for _, p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return start, time.perf_counter(), failures
