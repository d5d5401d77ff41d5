"""tambo against Debian's chasquid, in one run, on this machine (see benches/README.md).

Builds tambo (release), writes a temporary config folder for each server, starts a DNS server and a
sink MTA on loopback, then for each server in turn: idle RSS, RSS with 1,000 idle connections,
inbound load to a Maildir, forwarded load to the sink; stops everything (also on Ctrl-C or an
error) and prints a table plus a JSON file of the raw figures.
"""

import argparse
import asyncio
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import types

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import report  # noqa: E402
import servers  # noqa: E402
import smtpload  # noqa: E402
from sink import Sink  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SENDER = f"load@{servers.SENDER_DOMAIN}"
# Targets from the issue, as tambo/chasquid ratios measured in the same run.
TARGET_THROUGHPUT = 4.0
TARGET_CPU = 0.25
TARGET_MEM_PER_CONN = 0.5


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=2000)
    p.add_argument("--size", type=int, default=4096, help="message size in bytes")
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--idle-connections", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=3,
                   help="load rounds per server, interleaved; the table shows medians")
    p.add_argument("--no-build", action="store_true",
                   help="use target/release/tambo and tambo-bench as they are")
    p.add_argument("--tambo-bin", default=os.path.join(REPO, "target", "release", "tambo"))
    p.add_argument("--bench-bin", default=os.path.join(REPO, "target", "release", "tambo-bench"),
                   help="the load generator and sink (benches/tambo-bench)")
    p.add_argument("--tmpdir", default=os.environ.get("BENCH_TMPDIR", "/var/tmp"),
                   help="where the temp folders go; must be a real disk (fsync is measured)")
    p.add_argument("--json", default=os.path.join(REPO, "target", "bench-results.json"))
    p.add_argument("--keep", action="store_true", help="keep the temp folder (logs, Maildirs)")
    p.add_argument("--only", choices=["tambo", "chasquid"], help="run one server only")
    return p.parse_args()


def preflight(args):
    if args.no_build and not os.access(args.bench_bin, os.X_OK):
        sys.exit(f"bench: {args.bench_bin} is missing; build it (cargo build --release) "
                 "or leave out --no-build")
    if os.geteuid() != 0:
        sys.exit("bench: must run as root (unshare -m, bind mount, DNS on port 53)")
    missing = [t for t in ("chasquid", "chasquid-util", "unshare", "cc", "openssl")
               if shutil.which(t) is None]
    try:
        import dns.message  # noqa: F401 - dnsserver.py needs it
    except ImportError:
        missing.append("python3-dnspython")
    if missing:
        sys.exit(f"bench: missing tools: {', '.join(missing)} "
                 "(apt-get install chasquid python3-dnspython util-linux gcc openssl)")


def build_tambo(log):
    print("building tambo and tambo-bench (cargo build --release) ...", flush=True)
    start = time.monotonic()
    r = subprocess.run(["cargo", "build", "--release", "--bin", "tambo", "--bin", "tambo-bench"],
                       cwd=REPO,
                       stdout=log, stderr=log, timeout=900)
    if r.returncode != 0:
        raise RuntimeError(f"cargo build --release failed (see {log.name})")
    return time.monotonic() - start


def build_mda(root, log):
    out = os.path.join(root, "maildir-mda")
    subprocess.run(["cc", "-O2", "-o", out, os.path.join(HERE, "maildir-mda.c")],
                   check=True, stdout=log, stderr=log, timeout=60)
    return out


def count_files(path):
    try:
        return len(os.listdir(path))
    except FileNotFoundError:
        return 0


def wait_count(count_fn, want, deadline_s, stall_s=None):
    """Polls until count_fn() >= want; returns (time reached or None, last count).
    Gives up early when nothing at all has arrived after `stall_s`."""
    start = time.monotonic()
    n = 0
    while time.monotonic() - start < deadline_s:
        n = count_fn()
        if n >= want:
            return time.perf_counter(), n
        if stall_s is not None and n == 0 and time.monotonic() - start > stall_s:
            break
        time.sleep(0.05)
    return None, n


def percentile(values, q):
    if not values:
        return None
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


def load(server, rcpt, args):
    """Runs `tambo-bench load`; returns its figures and the instant it started (both on
    CLOCK_MONOTONIC, the clock of time.perf_counter)."""
    deadline_s = 240
    argv = [args.bench_bin, "load", "--server", f"127.0.0.1:{server.port}",
            "--messages", str(args.messages), "--connections", str(args.connections),
            "--size", str(args.size), "--from", SENDER, "--to", rcpt,
            "--deadline-s", str(deadline_s)]
    r = subprocess.run(argv, capture_output=True, timeout=deadline_s + 30)
    if r.returncode != 0:
        raise RuntimeError(f"load generator: {r.stderr.decode(errors='replace').strip()}")
    out = json.loads(r.stdout)
    stats = types.SimpleNamespace(
        accepted=out["accepted"],
        last_250=out["last_250"],
        latencies=out["latencies_s"],
        temp_failures=out["temp_failures"],
        first_temp_failure=out["first_temp_failure"],
    )
    return stats, out["start"]


def latency_figures(stats):
    ms = [x * 1000 for x in stats.latencies]
    return {
        "latency_p50_ms": percentile(ms, 50),
        "latency_p99_ms": percentile(ms, 99),
        "latency_mean_ms": statistics.fmean(ms) if ms else None,
        "temp_failures": stats.temp_failures,
        "first_temp_failure": stats.first_temp_failure,
    }


class CpuWindow:
    """CPU used by the server (with its children), by the load generator (our reaped child)
    and by the sink over a phase."""

    def __init__(self, pid, sink=None):
        self.pid = pid
        self.sink = sink
        self.server0 = servers.cpu_times(pid)
        self.client0 = self._client()
        self.sink0 = self._sink()

    @staticmethod
    def _client():
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        return r.ru_utime + r.ru_stime

    def _sink(self):
        return sum(servers.cpu_times(self.sink.pid)) if self.sink else 0.0

    def figures(self, messages, complete):
        user, sys_ = (b - a for a, b in zip(self.server0, servers.cpu_times(self.pid)))
        cpu = user + sys_
        return {
            "cpu_s": cpu,
            "cpu_user_s": user,
            "cpu_sys_s": sys_,
            "cpu_s_per_1000": cpu / messages * 1000 if complete else None,
            "loadgen_cpu_s": self._client() - self.client0,
            "sink_cpu_s": self._sink() - self.sink0 if self.sink else None,
        }


def measure_memory(server, args):
    time.sleep(1.0)
    idle = servers.rss_kib(server.proc.pid)
    with_conns = asyncio.run(smtpload.hold_idle(
        "127.0.0.1", server.port, args.idle_connections,
        lambda: servers.rss_kib(server.proc.pid),
    ))
    return {
        "rss_idle_kib": idle,
        "rss_idle_conns_kib": with_conns,
        "rss_per_conn_kib": (with_conns - idle) / args.idle_connections,
    }


def measure_inbound(server, args):
    rcpt = f"{servers.USER}@{servers.DOMAIN}"
    before = count_files(server.maildir_new())
    cpu = CpuWindow(server.proc.pid)
    stats, start = load(server, rcpt, args)
    done, n = wait_count(lambda: count_files(server.maildir_new()) - before, args.messages, 120)
    time.sleep(1.0)  # lets the last MDA children be reaped into cutime
    out = {
        "accepted": stats.accepted,
        "in_maildir": n,
        "rate_250_per_s": stats.accepted / (stats.last_250 - start),
        "rate_maildir_per_s": args.messages / (done - start) if done else None,
    }
    out.update(cpu.figures(args.messages, done is not None))
    out.update(latency_figures(stats))
    return out


def measure_forward(server, sink, args):
    rcpt = f"{servers.FORWARD_ALIAS}@{servers.DOMAIN}"
    sink.reset()
    cpu = CpuWindow(server.proc.pid, sink)
    stats, start = load(server, rcpt, args)
    done, n = wait_count(sink.count, args.messages, 120, stall_s=15)
    time.sleep(1.0)
    out = {
        "accepted": stats.accepted,
        "at_sink": n,
        "rate_250_per_s": stats.accepted / (stats.last_250 - start),
        "rate_sink_per_s": args.messages / (done - start) if done else None,
    }
    out.update(cpu.figures(args.messages, done is not None))
    if done is None:
        if n == 0 and server.says_forwarding_missing():
            out["note"] = "n/a (not implemented)"
        elif n == 0:
            out["note"] = "n/a (nothing reached the sink; see its log)"
        else:
            out["note"] = f"incomplete: {n}/{args.messages} at the sink after 120 s"
    out.update(latency_figures(stats))
    return out


def run_all(srvs, sink, args, procs):
    """Both servers up at once (an idle server costs nothing), phases interleaved and the
    order flipped every round, so load drifting on a shared machine hits both alike."""
    results = {}
    for server in srvs:
        print(f"[{server.name}] configuring and starting in {server.dir}", flush=True)
        server.configure()
        server.start()
        procs.append(server.proc)
        results[server.name] = {"inbound_rounds": [], "forward_rounds": []}
    for server in srvs:
        print(f"[{server.name}] memory: idle, then {args.idle_connections} idle connections",
              flush=True)
        results[server.name]["memory"] = measure_memory(server, args)
    for rnd in range(args.rounds):
        order = srvs if rnd % 2 == 0 else srvs[::-1]
        for server in order:
            print(f"[{server.name}] round {rnd + 1}/{args.rounds} inbound: {args.messages} x "
                  f"{args.size} B over {args.connections} connections to a Maildir", flush=True)
            results[server.name]["inbound_rounds"].append(measure_inbound(server, args))
        for server in order:
            done = results[server.name]["forward_rounds"]
            if done and done[-1].get("note") == "n/a (not implemented)":
                continue
            print(f"[{server.name}] round {rnd + 1}/{args.rounds} forwarded: {args.messages} "
                  "messages to the sink", flush=True)
            done.append(measure_forward(server, sink, args))
    for server in srvs:
        r = results[server.name]
        r["inbound"] = median_round(r["inbound_rounds"])
        r["forward"] = median_round(r["forward_rounds"])
        server.proc.stop()
    return results


def median_round(rounds):
    """Per figure, the median over rounds; a figure missing in any round stays missing, and
    text (a note, the first 4xx seen) is taken from the first round that has it."""
    out = {}
    for key in rounds[0] if rounds else ():
        values = [r.get(key) for r in rounds]
        if all(isinstance(v, (int, float)) for v in values):
            out[key] = statistics.median(values)
        else:
            out[key] = next((v for v in values if isinstance(v, str)), None)
    if rounds:
        out["rounds"] = len(rounds)
    return out


# --- report ----------------------------------------------------------------------------------

ROWS = [
    # label, section, key, scale, format, target (kind, ratio) or None
    ("inbound msg/s (until last 250)", "inbound", "rate_250_per_s", 1, "{:.0f}",
     (">=", TARGET_THROUGHPUT)),
    ("inbound msg/s (until all in Maildir)", "inbound", "rate_maildir_per_s", 1, "{:.0f}",
     (">=", TARGET_THROUGHPUT)),
    ("forwarded msg/s (until all at sink)", "forward", "rate_sink_per_s", 1, "{:.0f}",
     (">=", TARGET_THROUGHPUT)),
    ("CPU s / 1000 msg, inbound", "inbound", "cpu_s_per_1000", 1, "{:.2f}",
     ("<=", TARGET_CPU)),
    ("CPU s / 1000 msg, forwarded", "forward", "cpu_s_per_1000", 1, "{:.2f}",
     ("<=", TARGET_CPU)),
    ("latency to 250 p50 ms, inbound", "inbound", "latency_p50_ms", 1, "{:.1f}", None),
    ("latency to 250 p99 ms, inbound", "inbound", "latency_p99_ms", 1, "{:.1f}", None),
    ("latency to 250 p50 ms, forwarded", "forward", "latency_p50_ms", 1, "{:.1f}", None),
    ("latency to 250 p99 ms, forwarded", "forward", "latency_p99_ms", 1, "{:.1f}", None),
    ("RSS idle MiB", "memory", "rss_idle_kib", 1 / 1024, "{:.1f}", None),
    ("RSS with {idle} idle conns MiB", "memory", "rss_idle_conns_kib", 1 / 1024, "{:.1f}", None),
    ("RSS per idle connection KiB", "memory", "rss_per_conn_kib", 1, "{:.1f}",
     ("<=", TARGET_MEM_PER_CONN)),
]


def figure(results, name, section, key):
    return results.get(name, {}).get(section, {}).get(key)


def cell(results, name, section, key, scale, fmt):
    v = figure(results, name, section, key)
    if v is not None:
        return fmt.format(v * scale)
    return results.get(name, {}).get(section, {}).get("note", "n/a")


def table(results, idle):
    rows = []
    for label, section, key, scale, fmt, target in ROWS:
        rows.append((label.format(idle=idle),
                     cell(results, "tambo", section, key, scale, fmt),
                     cell(results, "chasquid", section, key, scale, fmt),
                     figure(results, "tambo", section, key),
                     figure(results, "chasquid", section, key), target))
    return report.ratio_table(["tambo", "chasquid"], rows)


# --- main ------------------------------------------------------------------------------------

def main():
    args = parse_args()
    preflight(args)
    smtpload.raise_fd_limit(args.idle_connections + 1024)
    # Ctrl-C and SIGTERM unwind through the finally below, which stops every child.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    signal.signal(signal.SIGINT, signal.default_int_handler)

    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    root = tempfile.mkdtemp(prefix="tambo-bench.", dir=args.tmpdir)
    procs = []
    sink = None
    results = {"command": " ".join(sys.argv), "args": vars(args), "started": time.time()}
    wall = time.monotonic()
    try:
        with open(os.path.join(root, "setup.log"), "w") as log:
            if args.no_build:
                results["build_s"] = None
            else:
                results["build_s"] = build_tambo(log)
            mda = build_mda(root, log)
            resolv = servers.write_resolv_conf(root)
            procs.append(servers.start_dns(root))
            sink = Sink(args.bench_bin, servers.SINK_IP, servers.free_port(servers.SINK_IP),
                        os.path.join(root, "sink.log"))
            sink.start()
            results["environment"] = report.environment(
                root, chasquid_version=report.command_output(["chasquid", "-version"]))
            # Write back what earlier work left dirty (a previous run's cleanup above all), so
            # it is not flushed in the middle of a measurement. See benches/README.md on
            # running benches back to back.
            os.sync()
            srvs = [
                servers.Tambo(args.tambo_bin, root, sink.port, resolv, log),
                servers.Chasquid(mda, root, sink.port, resolv, log),
            ]
            srvs = [s for s in srvs if args.only in (None, s.name)]
            results.update(run_all(srvs, sink, args, procs))
    except KeyboardInterrupt:
        print("bench: interrupted; stopping everything", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - report any failure, then clean up
        print(f"bench: {e}", file=sys.stderr)
        print(f"bench: logs kept in {root}", file=sys.stderr)
        args.keep = True
        return 1
    finally:
        for p in reversed(procs):
            p.stop()
        if sink is not None:
            sink.stop()
        results["wall_s"] = time.monotonic() - wall
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)

    print()
    print(table(results, args.idle_connections))
    print()
    print(f"raw figures: {args.json}; bench wall time {results['wall_s']:.0f} s"
          + ("" if results.get("build_s") is None else f" (build {results['build_s']:.0f} s)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
