"""tambo against Debian's chasquid and Postfix, in one run, on this machine (see
benches/README.md).

Builds tambo (release), writes a temporary config folder for each server, starts a DNS server and a
sink MTA on loopback, then for each server in turn: idle RSS, RSS with 1,000 idle connections,
pipelined inbound load to a Maildir, forwarded load to the sink, lockstep inbound over the
domain's 10 mailboxes (smtp-source), forwarding of 5-recipient messages, 1 MiB and 25 MiB
messages; then the floor (floor.c) and tambo's memory bound (memory.py); stops everything
(also on Ctrl-C or an error) and prints a table plus a JSON file of the raw figures.
"""

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import types

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import domain  # noqa: E402
import postfixserver  # noqa: E402
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
SERVERS = ("tambo", "chasquid", "postfix")
MIB = 1024 * 1024


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
    p.add_argument("--only", default=",".join(SERVERS),
                   help="the servers to run, comma-separated (default: all three)")
    p.add_argument("--domain-sessions", type=int, default=16,
                   help="lockstep sessions of the smtp-source phases")
    p.add_argument("--forward-recipients", type=int, default=5,
                   help="recipients per message of the multi-recipient forwarding phase")
    p.add_argument("--large-1m-messages", type=int, default=160,
                   help="messages of the 1 MiB phase (0: skip it)")
    p.add_argument("--large-25m-messages", type=int, default=16,
                   help="messages of the 25 MiB phase (0: skip it)")
    p.add_argument("--no-floor", action="store_true", help="skip floor.c")
    p.add_argument("--perf", metavar="PREFIX",
                   help="record each of tambo's round phases with perf: "
                        "PREFIX.PHASE.roundN.data (benches/profile.py reads them)")
    p.add_argument("--no-memory-bound", action="store_true", help="skip memory.py")
    p.add_argument("--bound-messages", type=int, default=16, help="memory.py --messages")
    p.add_argument("--bound-size", type=int, default=40_000_000, help="memory.py --size")
    args = p.parse_args()
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(args.only) - set(SERVERS)
    if unknown or not args.only:
        p.error(f"--only: choose among {', '.join(SERVERS)}")
    return args


def preflight(args):
    if args.no_build and not os.access(args.bench_bin, os.X_OK):
        sys.exit(f"bench: {args.bench_bin} is missing; build it (cargo build --release) "
                 "or leave out --no-build")
    if os.geteuid() != 0:
        sys.exit("bench: must run as root (unshare -m, bind mount, DNS on port 53)")
    missing = [t for t in ("chasquid", "chasquid-util", "unshare", "cc", "openssl", "postfix",
                           "/usr/sbin/smtp-source")
               if shutil.which(t) is None]
    try:
        import dns.message  # noqa: F401 - dnsserver.py needs it
    except ImportError:
        missing.append("python3-dnspython")
    if missing:
        sys.exit(f"bench: missing tools: {', '.join(missing)} "
                 "(apt-get install chasquid postfix python3-dnspython util-linux gcc openssl)")
    if args.perf and shutil.which("perf") is None:
        sys.exit("bench: --perf needs perf (apt-get install linux-perf)")


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


def measure_memory(server, args):
    time.sleep(1.0)
    idle = servers.tree_rss_kib(server.proc.pid)
    pss = servers.tree_pss_kib(server.proc.pid)
    if server.name == "postfix":
        # One smtpd process per connection, at most default_process_limit (100) of them: the
        # other connections wait unanswered in the listen queue.
        return {"rss_idle_kib": idle, "pss_idle_kib": pss,
                "note": "n/a (a process per connection)"}
    with_conns = asyncio.run(smtpload.hold_idle(
        "127.0.0.1", server.port, args.idle_connections,
        lambda: servers.tree_rss_kib(server.proc.pid),
    ))
    return {
        "rss_idle_kib": idle,
        "pss_idle_kib": pss,
        "rss_idle_conns_kib": with_conns,
        "rss_per_conn_kib": (with_conns - idle) / args.idle_connections,
    }


def measure_inbound(server, args):
    rcpt = f"{servers.USER}@{servers.DOMAIN}"
    before = count_files(server.maildir_new())
    cpu = domain.Window(server)
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
    cpu = domain.Window(server, sink)
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
    """All servers up at once (an idle server costs nothing), phases interleaved and the
    order flipped every round, so load drifting on a shared machine hits all alike."""
    results = {}
    for server in srvs:
        print(f"[{server.name}] configuring and starting in {server.dir}", flush=True)
        server.configure()
        server.start()
        procs.append(server.proc)
        results[server.name] = {f"{p}_rounds": [] for p in ROUND_PHASES}
    for server in srvs:
        print(f"[{server.name}] memory: idle, then {args.idle_connections} idle connections",
              flush=True)
        results[server.name]["memory"] = measure_memory(server, args)
    for rnd in range(args.rounds):
        order = srvs if rnd % 2 == 0 else srvs[::-1]
        for phase in ROUND_PHASES:
            for server in order:
                done = results[server.name][f"{phase}_rounds"]
                if done and done[-1].get("note") == "n/a (not implemented)":
                    continue
                print(f"[{server.name}] round {rnd + 1}/{args.rounds} {phase}: "
                      f"{describe(phase, args)}", flush=True)
                recorder = (domain.PerfRecord(f"{args.perf}.{phase}.round{rnd + 1}.data")
                            if args.perf and server.name == "tambo" else None)
                try:
                    done.append(ROUND_PHASES[phase](server, sink, args))
                finally:
                    if recorder is not None:
                        recorder.stop()
    for size, count in ((MIB, args.large_1m_messages), (25 * MIB, args.large_25m_messages)):
        if count <= 0:
            continue
        for server in srvs:
            print(f"[{server.name}] large: {count} x {size // MIB} MiB over "
                  f"{args.domain_sessions} lockstep sessions to 10 mailboxes", flush=True)
            results[server.name][f"large_{size // MIB}m"] = domain.inbound(
                server, SENDER, args.domain_sessions, count, size, peak=True)
    for server in srvs:
        r = results[server.name]
        for phase in ROUND_PHASES:
            r[phase] = median_round(r[f"{phase}_rounds"])
        server.proc.stop()
    return results


def describe(phase, args):
    return {
        "inbound": f"{args.messages} x {args.size} B pipelined over {args.connections} "
                   "connections to one Maildir",
        "forward": f"{args.messages} messages pipelined to an alias of the sink",
        "domain": f"{args.messages} x {args.size} B over {args.domain_sessions} lockstep "
                  "sessions (smtp-source) to 10 mailboxes",
        "forward_multi": f"{forward_multi_messages(args)} x {args.forward_recipients} "
                         "recipients (aliases of the sink), lockstep",
    }[phase]


def forward_multi_messages(args):
    """As many deliveries at the sink as the other phases have messages."""
    return max(1, args.messages // args.forward_recipients)


ROUND_PHASES = {
    "inbound": lambda server, sink, args: measure_inbound(server, args),
    "forward": lambda server, sink, args: measure_forward(server, sink, args),
    "domain": lambda server, sink, args: domain.inbound(
        server, SENDER, args.domain_sessions, args.messages, args.size),
    "forward_multi": lambda server, sink, args: domain.forward_multi(
        server, sink, SENDER, args.domain_sessions, forward_multi_messages(args),
        args.forward_recipients, args.size),
}


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
    # label, section, key, scale, format, target (kind, ratio) or None, floor key or None
    ("domain: 10 mailboxes, lockstep msg/s (until last 250)", "domain", "rate_smtp_per_s", 1,
     "{:.0f}", None, None),
    ("domain: 10 mailboxes, msg/s (until all in Maildirs)", "domain", "rate_maildir_per_s", 1,
     "{:.0f}", (">=", TARGET_THROUGHPUT), "rate_maildir_per_s"),
    ("domain: 10 mailboxes, CPU s / 1000 msg", "domain", "cpu_s_per_1000", 1, "{:.2f}",
     ("<=", TARGET_CPU), "cpu_s_per_1000"),
    ("domain: forwarded x{rcpts} rcpt, msg/s (until all at sink)", "forward_multi",
     "rate_sink_per_s", 1, "{:.0f}", None, None),
    ("domain: forwarded x{rcpts} rcpt, CPU s / 1000 msg", "forward_multi", "cpu_s_per_1000", 1,
     "{:.2f}", None, None),
    ("1 MiB messages: MB/s (until all in Maildirs)", "large_1m", "mb_per_s", 1, "{:.0f}", None,
     None),
    ("1 MiB messages: peak PSS MiB (all processes)", "large_1m", "peak_pss_kib", 1 / 1024,
     "{:.1f}", None, None),
    ("1 MiB messages: peak RSS MiB (main process)", "large_1m", "main_vmhwm_kib", 1 / 1024,
     "{:.1f}", None, None),
    ("1 MiB messages: CPU s / 1000 msg", "large_1m", "cpu_s_per_1000", 1, "{:.1f}", None, None),
    ("25 MiB messages: MB/s (until all in Maildirs)", "large_25m", "mb_per_s", 1, "{:.0f}",
     None, None),
    ("25 MiB messages: peak PSS MiB (all processes)", "large_25m", "peak_pss_kib", 1 / 1024,
     "{:.1f}", None, None),
    ("25 MiB messages: peak RSS MiB (main process)", "large_25m", "main_vmhwm_kib", 1 / 1024,
     "{:.1f}", None, None),
    ("25 MiB messages: CPU s / 1000 msg", "large_25m", "cpu_s_per_1000", 1, "{:.1f}", None,
     None),
    ("pipelined inbound msg/s (until last 250)", "inbound", "rate_250_per_s", 1, "{:.0f}",
     (">=", TARGET_THROUGHPUT), None),
    ("pipelined inbound msg/s (until all in Maildir)", "inbound", "rate_maildir_per_s", 1,
     "{:.0f}", (">=", TARGET_THROUGHPUT), None),
    ("pipelined forwarded msg/s (until all at sink)", "forward", "rate_sink_per_s", 1, "{:.0f}",
     (">=", TARGET_THROUGHPUT), None),
    ("CPU s / 1000 msg, pipelined inbound", "inbound", "cpu_s_per_1000", 1, "{:.2f}",
     ("<=", TARGET_CPU), None),
    ("CPU s / 1000 msg, pipelined forwarded", "forward", "cpu_s_per_1000", 1, "{:.2f}",
     ("<=", TARGET_CPU), None),
    ("latency to 250 p50 ms, pipelined inbound", "inbound", "latency_p50_ms", 1, "{:.1f}",
     None, None),
    ("latency to 250 p99 ms, pipelined inbound", "inbound", "latency_p99_ms", 1, "{:.1f}",
     None, None),
    ("latency to 250 p50 ms, pipelined forwarded", "forward", "latency_p50_ms", 1, "{:.1f}",
     None, None),
    ("latency to 250 p99 ms, pipelined forwarded", "forward", "latency_p99_ms", 1, "{:.1f}",
     None, None),
    ("RSS idle MiB (all processes)", "memory", "rss_idle_kib", 1 / 1024, "{:.1f}", None, None),
    ("PSS idle MiB (all processes)", "memory", "pss_idle_kib", 1 / 1024, "{:.1f}", None, None),
    ("RSS with {idle} idle conns MiB", "memory", "rss_idle_conns_kib", 1 / 1024, "{:.1f}", None,
     None),
    ("RSS per idle connection KiB", "memory", "rss_per_conn_kib", 1, "{:.1f}",
     ("<=", TARGET_MEM_PER_CONN), None),
]


def figure(results, name, section, key):
    return (results.get(name) or {}).get(section, {}).get(key)


def cell(results, name, section, key, scale, fmt):
    if name not in results:
        return "-"
    v = figure(results, name, section, key)
    if v is not None:
        return fmt.format(v * scale)
    return results.get(name, {}).get(section, {}).get("note", "n/a")


def table(results, args):
    rows = []
    floor = results.get("floor") or {}
    for label, section, key, scale, fmt, target, floor_key in ROWS:
        cells = [cell(results, n, section, key, scale, fmt) for n in SERVERS]
        values = [figure(results, n, section, key) for n in SERVERS]
        floor_cell = ""
        if floor_key and floor.get(floor_key) is not None:
            floor_cell = fmt.format(floor[floor_key] * scale)
        elif floor_key:
            floor_cell = floor.get("note", "n/a" if floor else "-")
        rows.append((label.format(idle=args.idle_connections, rcpts=args.forward_recipients),
                     cells, values, floor_cell, target))
    return report.three_way_table(list(SERVERS), rows)


def bound_lines(bound):
    """tambo's memory bound (memory.py): peak over idle against 64 MiB, per phase."""
    if not bound:
        return []
    if "idle_kib" not in bound:
        return [f"memory bound: {bound.get('note', 'n/a')}"]
    idle = bound["idle_kib"] / 1024
    args = bound.get("args", {})
    lines = [f"tambo memory bound, {args.get('messages')} x {args.get('size', 0) / 1e6:.0f} MB "
             f"at once (memory.py): idle RSS {idle:.1f} MiB"]
    for phase in ("port25", "submission", "mailbox"):
        r = bound.get(phase)
        if not r:
            continue
        growth = r["peak_kib"] / 1024 - idle
        met = "met" if growth <= 64 else "NOT met"
        lines.append(f"  {phase}: peak {r['peak_kib'] / 1024:.1f} MiB, growth {growth:.1f} MiB "
                     f"(bound 64 MiB: {met}), {r['mb_per_s']:.0f} MB/s")
    if bound.get("note"):
        lines.append(f"  {bound['note']}")
    return lines


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
            floor_bin = domain.build_floor(root, log)
            resolv = servers.write_resolv_conf(root)
            procs.append(servers.start_dns(root))
            sink = Sink(args.bench_bin, servers.SINK_IP, servers.free_port(servers.SINK_IP),
                        os.path.join(root, "sink.log"))
            sink.start()
            results["environment"] = report.environment(
                root, chasquid_version=report.command_output(["chasquid", "-version"]),
                postfix_version=report.command_output(["postconf", "-d", "-h",
                                                       "mail_version"]))
            # Write back what earlier work left dirty (a previous run's cleanup above all), so
            # it is not flushed in the middle of a measurement. See benches/README.md on
            # running benches back to back.
            os.sync()
            srvs = [
                servers.Tambo(args.tambo_bin, root, sink.port, resolv, log),
                servers.Chasquid(mda, root, sink.port, resolv, log),
                postfixserver.Postfix(root, sink.port, log,
                                      [servers.USER, *servers.DOMAIN_USERS], servers.ALIASES),
            ]
            srvs = [s for s in srvs if s.name in args.only]
            results.update(run_all(srvs, sink, args, procs))
            if not args.no_floor:
                print(f"[floor] {args.messages} x {args.size} B: write, fsync, link, shared "
                      f"fsync of new/, {args.domain_sessions} threads, 10 Maildirs", flush=True)
                results["floor"] = domain.floor(floor_bin, root, args.domain_sessions,
                                                args.messages, args.size)
            if not args.no_memory_bound and "tambo" in args.only:
                print(f"[tambo] memory bound: memory.py, {args.bound_messages} x "
                      f"{args.bound_size / 1e6:.0f} MB at once", flush=True)
                results["memory_bound"] = domain.memory_bound(args, root)
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
    print(table(results, args))
    print()
    for line in bound_lines(results.get("memory_bound")):
        print(line)
    print(f"raw figures: {args.json}; bench wall time {results['wall_s']:.0f} s"
          + ("" if results.get("build_s") is None else f" (build {results['build_s']:.0f} s)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
