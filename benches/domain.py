"""The phases that look like a domain's load (benches/README.md, "What it measures"): lockstep
inbound over the domain's 10 mailboxes, multi-recipient forwarding, large messages, and
beside them the floor (floor.c: what the disk and kernel cost per message) and tambo's
memory bound with 16 messages of 40 MB at once (memory.py).

Every phase is checked: each mailbox's `new/` must hold exactly what was sent to it, the sink
exactly the recipients sent to the aliases; a shortfall is reported, never a rate made of it.
"""

import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time

import servers
import sourceload

HERE = os.path.dirname(os.path.abspath(__file__))
DELIVERY_DEADLINE_S = 300


def count_new(server, users):
    """{user: files in that user's new/}."""
    out = {}
    for u in users:
        try:
            out[u] = len(os.listdir(server.maildir_new(u)))
        except FileNotFoundError:
            out[u] = 0
    return out


class Window:
    """CPU of the server's processes (with their reaped children) and of our children (the
    load generators) over a phase."""

    def __init__(self, server, sink=None):
        self.server = server
        self.sink = sink
        self.server0 = servers.tree_cpu_times(server.proc.pid)
        self.client0 = self._client()
        self.sink0 = self._sink()

    @staticmethod
    def _client():
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        return r.ru_utime + r.ru_stime

    def _sink(self):
        return sum(servers.cpu_times(self.sink.pid)) if self.sink else 0.0

    def figures(self, per, complete):
        user, sys_ = (b - a for a, b in zip(self.server0,
                                             servers.tree_cpu_times(self.server.proc.pid)))
        cpu = user + sys_
        return {
            "cpu_s": cpu,
            "cpu_user_s": user,
            "cpu_sys_s": sys_,
            "cpu_s_per_1000": cpu / per * 1000 if complete else None,
            "loadgen_cpu_s": self._client() - self.client0,
            "sink_cpu_s": self._sink() - self.sink0 if self.sink else None,
        }


class PeakRss:
    """The peak of the PSS summed over the server's processes, sampled every 100 ms (the same
    for all three servers; PSS so that Postfix's shared pages count once), and the main
    process's exact peak RSS (VmHWM, reset at the start through clear_refs, proc(5))."""

    def __init__(self, pid):
        self.pid = pid
        self.peak_kib = 0
        self.stop_event = threading.Event()
        try:
            with open(f"/proc/{pid}/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self):
        while not self.stop_event.is_set():
            self.peak_kib = max(self.peak_kib, servers.tree_pss_kib(self.pid))
            self.stop_event.wait(0.1)

    def finish(self):
        self.stop_event.set()
        self.thread.join(5)
        with open(f"/proc/{self.pid}/status") as f:
            hwm = next((int(ln.split()[1]) for ln in f if ln.startswith("VmHWM:")), None)
        return {"peak_pss_kib": self.peak_kib, "main_vmhwm_kib": hwm}


class PerfRecord:
    """`perf record` of the whole machine (`-a`: per-CPU events, so the server's context
    switches do not pay for per-thread ones), user and kernel stacks (DWARF unwinding: the
    release build keeps no frame pointers; run a `--profile profiling` build for symbols), from
    now until stop(). benches/profile.py picks the server's samples out."""

    def __init__(self, output):
        self.proc = subprocess.Popen(
            ["perf", "record", "--quiet", "-a", "-F", "999", "--call-graph", "dwarf,16384",
             "-o", output],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(0.5)  # perf attaches before the load starts
        if self.proc.poll() is not None:
            raise RuntimeError(f"perf record failed: {self.proc.stderr.read().decode().strip()}")

    def stop(self):
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def wait_all(count_fn, want, deadline_s):
    """Polls until count_fn() >= want; (instant reached or None, last count)."""
    end = time.monotonic() + deadline_s
    n = 0
    while time.monotonic() < end:
        n = count_fn()
        if n >= want:
            return time.perf_counter(), n
        time.sleep(0.05)
    return None, n


def inbound(server, sender, sessions, messages, size, users=servers.DOMAIN_USERS, peak=False):
    """`messages` of `size` bytes spread over `users`' mailboxes by `sessions` lockstep
    sessions (sourceload.py); until every file is in its new/. With `peak`, the RSS peak."""
    jobs = sourceload.spread(users, sessions, messages)
    want = {u: m for u, _, m in jobs}
    before = count_new(server, users)

    def arrived():
        now = count_new(server, users)
        return sum(now[u] - before[u] for u in users)

    rss = PeakRss(server.proc.pid) if peak else None
    cpu = Window(server)
    start, last, failures = sourceload.run(
        server.port, sender, [(f"{u}@{servers.DOMAIN}", s, m) for u, s, m in jobs], size)
    done, n = wait_all(arrived, messages, 30 if failures else DELIVERY_DEADLINE_S)
    time.sleep(1.0)  # lets the last MDA children be reaped into cutime
    after = count_new(server, users)
    wrong = {u: after[u] - before[u] for u in users if after[u] - before[u] != want.get(u, 0)}
    complete = done is not None and not failures and not wrong
    out = {
        "messages": messages,
        "size": size,
        "in_maildirs": n,
        "rate_smtp_per_s": messages / (last - start) if not failures else None,
        "rate_maildir_per_s": messages / (done - start) if complete else None,
        "mb_per_s": messages * size / 1e6 / (done - start) if complete else None,
    }
    out.update(cpu.figures(messages, complete))
    if rss is not None:
        peak = rss.finish()
        if server.name == "postfix":
            # Its master is the only process that lives through the phase, and the least of
            # them: its own peak says nothing of Postfix's memory (the PSS sum does).
            peak["master_vmhwm_kib"] = peak.pop("main_vmhwm_kib")
        out.update(peak)
    if failures:
        out["note"] = f"smtp-source failed: {failures[0]} ({len(failures)} of {len(jobs)})"
    elif not complete:
        out["note"] = (f"incomplete: {n}/{messages} in the Maildirs"
                       + (f"; wrong counts {wrong}" if wrong else ""))
    return out


def forward_multi(server, sink, sender, sessions, messages, recipients, size=4096):
    """`messages` of `recipients` recipients each (fwd, 2fwd, ... 5fwd: aliases to the sink)
    over `sessions` lockstep sessions; until the sink has every recipient."""
    sink.reset()
    cpu = Window(server, sink)
    start, last, failures = sourceload.run(
        server.port, sender, [(f"{servers.FORWARD_ALIAS}@{servers.DOMAIN}", sessions, messages)],
        size, recipients=recipients)
    want = messages * recipients
    done, n = wait_all(sink.recipients, want, 30 if failures else DELIVERY_DEADLINE_S)
    time.sleep(1.0)
    complete = done is not None and not failures and sink.recipients() == want
    out = {
        "messages": messages,
        "recipients": want,
        "at_sink_recipients": sink.recipients(),
        "at_sink_messages": sink.count(),
        "rate_smtp_per_s": messages / (last - start) if not failures else None,
        "rate_sink_per_s": messages / (done - start) if complete else None,
    }
    out.update(cpu.figures(messages, complete))
    if failures:
        out["note"] = f"smtp-source failed: {failures[0]}"
    elif not complete:
        out["note"] = f"incomplete: {n}/{want} recipients at the sink"
    return out


def build_floor(root, log):
    out = os.path.join(root, "floor")
    subprocess.run(["cc", "-O2", "-pthread", "-o", out, os.path.join(HERE, "floor.c")],
                   check=True, stdout=log, stderr=log, timeout=60)
    return out


def floor(binary, root, threads, messages, size, maildirs=len(servers.DOMAIN_USERS)):
    """floor.c: the durable work alone, as many threads as sessions, over as many Maildirs;
    checked: every file in a new/."""
    where = os.path.join(root, "floor-maildirs")
    r = subprocess.run([binary, where, str(maildirs), str(threads), str(messages), str(size)],
                       capture_output=True, timeout=600)
    if r.returncode != 0:
        return {"note": f"floor failed: {r.stderr.decode(errors='replace').strip()}"}
    out = json.loads(r.stdout)
    found = sum(len(os.listdir(os.path.join(where, str(i), "new"))) for i in range(maildirs))
    cpu = out["cpu_user_s"] + out["cpu_sys_s"]
    out.update({
        "in_maildirs": found,
        "rate_maildir_per_s": messages / out["seconds"] if found == messages else None,
        "cpu_s": cpu,
        "cpu_s_per_1000": cpu / messages * 1000 if found == messages else None,
    })
    if found != messages:
        out["note"] = f"incomplete: {found}/{messages} in the Maildirs"
    return out


def memory_bound(args, root):
    """benches/memory.py (16 messages of 40 MB at once to tambo, port 25 and submission);
    its JSON, or a note."""
    path = os.path.join(root, "bench-memory.json")
    argv = [sys.executable, os.path.join(HERE, "memory.py"), "--messages",
            str(args.bound_messages), "--size", str(args.bound_size), "--tambo-bin",
            args.tambo_bin, "--bench-bin", args.bench_bin, "--tmpdir", args.tmpdir,
            "--json", path]
    r = subprocess.run(argv, capture_output=True, timeout=1800)
    try:
        with open(path) as f:
            out = json.load(f)
    except (OSError, ValueError):
        out = {}
    if r.returncode != 0:
        out["note"] = "memory.py failed: " + r.stderr.decode(errors="replace").strip()[-300:]
    return out
