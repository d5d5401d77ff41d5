"""tambo's IMAP server against Debian's Dovecot 2.3, in one run, on this machine (see
benches/README.md, "IMAP").

Writes a Maildir of realistic messages once (mailgen.py), gives each server its own copy,
then for each round restarts both on fresh copies and measures them alternately: the first
SELECT of INBOX (cold) and the FETCH, BODY.PEEK[] and SEARCH after it; then sessions that
SELECT again (warm) and repeat those commands; a QRESYNC client's SELECT INBOX (QRESYNC ...)
of the unchanged folder; a POP3S session of STAT, UIDL and 200 RETR; IMAPS logins per
second from several client threads; and the memory of idle logged-in sessions (PSS).
Prints a table of medians and
writes every figure to a JSON file. Every wait has a deadline; every process started here is
stopped at the end, also on Ctrl-C, SIGTERM or an error.

Usage: /usr/bin/python3 benches/imap.py [--messages 10000] [--rounds 3]   (as root, after
cargo build --release; needs Debian's dovecot-imapd, dovecot-pop3d, openssl and libcrypt)
"""

import argparse
import json
import os
import re
import shutil
import signal
import ssl
import statistics
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import imapclient  # noqa: E402
import imapservers  # noqa: E402
import mailgen  # noqa: E402
import report  # noqa: E402
from imapclient import Imap  # noqa: E402
from imapservers import LIGHT_USER, PASSWORD, USER  # noqa: E402

FETCH_ALL = "UID FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE ENVELOPE)"
SEARCH = f"SEARCH SUBJECT {mailgen.SEARCH_WORD}"
BODIES = 200
EXISTS = re.compile(rb"^\* (\d+) EXISTS", re.M)
# Sessions per client address in the memory figure: below Dovecot's
# mail_max_userip_connections (10) and tambo's cap per user and address (32).
SESSIONS_PER_ADDRESS = 8


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=10000, help="messages in INBOX")
    p.add_argument("--rounds", type=int, default=3,
                   help="rounds, each on fresh copies, servers alternating; the table shows "
                        "medians over rounds")
    p.add_argument("--reps", type=int, default=5,
                   help="warm sessions per server and round (their median is the round's)")
    p.add_argument("--sessions", type=int, default=48, help="idle sessions of the memory figure")
    p.add_argument("--login-clients", type=int, default=4, help="client threads logging in")
    p.add_argument("--login-seconds", type=float, default=4.0, help="each login phase's length")
    p.add_argument("--seed", type=int, default=1, help="of the generated messages")
    p.add_argument("--tambo-bin", default=os.path.join(REPO, "target", "release", "tambo"))
    p.add_argument("--tmpdir", default=os.environ.get("BENCH_TMPDIR", "/var/tmp"),
                   help="where the temp folder goes; a real disk, as a mail store is")
    p.add_argument("--json", default=os.path.join(REPO, "target", "bench-imap.json"))
    p.add_argument("--keep", action="store_true", help="keep the temp folder (logs, Maildirs)")
    p.add_argument("--only", choices=["tambo", "dovecot"], help="run one server only")
    return p.parse_args()


def preflight(args):
    if os.geteuid() != 0:
        sys.exit("imap: must run as root (Dovecot starts as root and drops privileges)")
    if not os.access(args.tambo_bin, os.X_OK):
        sys.exit(f"imap: {args.tambo_bin} missing: run `cargo build --release` first")
    missing = [t for t in ("dovecot", "openssl") if shutil.which(t) is None]
    if not os.path.exists("/usr/lib/dovecot/imap"):
        missing.append("dovecot-imapd")
    if not os.path.exists("/usr/lib/dovecot/pop3"):
        missing.append("dovecot-pop3d")
    if missing:
        sys.exit(f"imap: missing: {', '.join(missing)} "
                 "(apt-get install dovecot-imapd dovecot-pop3d openssl)")
    if args.sessions > 250 * SESSIONS_PER_ADDRESS:
        sys.exit("imap: --sessions: at most 2000")


# --- one session's figures --------------------------------------------------------------------

class Checks:
    """What a server answered that is not what the data says it must (a count, a size):
    figures of a wrong answer are not comparable, so every mismatch is reported."""

    def __init__(self):
        self.failures = []

    def expect(self, server, what, got, want):
        if got != want:
            self.failures.append(f"{server.name}: {what}: got {got}, want {want}")


def login(server, user=USER, source=None):
    c = Imap(server.port, source=source)
    try:
        c.login(user, PASSWORD)
    except Exception:
        c.close()
        raise
    return c


def commands(c, server, mail, uid_sets, checks):
    """FETCH of every message's summary, BODY.PEEK[] of 200 messages, SEARCH SUBJECT on the
    selected INBOX; returns their times. The first call also learns which UID the server gave
    each message (by INTERNALDATE), so both fetch the same 200 bodies."""
    out = {}
    out["fetch_s"], _, data = c.command(FETCH_ALL)
    checks.expect(server, "FETCH 1:* responses", imapclient.fetch_count(data), len(mail.catalogue))
    if server.name not in uid_sets:
        by_date = imapclient.uids_by_internaldate(data)
        uids = sorted(by_date.get(mail.catalogue[i]["internaldate"], 0) for i in mail.chosen)
        checks.expect(server, "UIDs found for the chosen messages", 0 in uids, False)
        uid_sets[server.name] = ",".join(str(u) for u in uids)
    out["bodies_s"], _, data = c.command(f"UID FETCH {uid_sets[server.name]} BODY.PEEK[]")
    checks.expect(server, "BODY[] (messages, octets)", imapclient.body_octets(data),
                  (len(mail.chosen), mail.chosen_octets))
    out["search_s"], _, data = c.command(SEARCH)
    checks.expect(server, f"{SEARCH} hits", imapclient.search_hits(data), mail.search_hits)
    return out


def select(c, server, mail, checks):
    elapsed, _, data = c.command("SELECT INBOX")
    m = EXISTS.search(data)
    checks.expect(server, "SELECT EXISTS", int(m.group(1)) if m else None, len(mail.catalogue))
    return elapsed


def cold_session(server, mail, uid_sets, checks):
    """The first session after the server started on a fresh copy: SELECT builds the
    server's view of a folder it has never opened (tambo: dovecot-uidlist and tambo-cache;
    Dovecot: dovecot-uidlist and its index), and the commands after it fill caches."""
    with login(server) as c:
        out = {"select_cold_s": select(c, server, mail, checks)}
        first = commands(c, server, mail, uid_sets, checks)
        out.update({f"{k[:-2]}_first_s": v for k, v in first.items()})
        c.logout()
    return out


def warm_session(server, mail, uid_sets, checks):
    """A later session: SELECT of a folder the server has seen, then the same commands."""
    with login(server) as c:
        out = {"select_warm_s": select(c, server, mail, checks)}
        out.update(commands(c, server, mail, uid_sets, checks))
        c.logout()
    return out


# --- POP3 ------------------------------------------------------------------------------------

def pop3_session(server, mail, uid_sets, checks):
    """One POP3S session after the IMAP ones: STAT, UIDL, then RETR of the same 200 messages
    as BODY.PEEK[] (no message was expunged, so message n is UID n on both servers); the
    login is not timed (its scrypt is the login figures' business)."""
    c = imapservers.pop3s(server.pop3_port)
    try:
        c.user(USER)
        c.pass_(PASSWORD)
        t0 = time.perf_counter()
        count, _ = c.stat()
        _, uidls, _ = c.uidl()
        t1 = time.perf_counter()
        octets = 0
        numbers = [int(u) for u in uid_sets[server.name].split(",")]
        for n in numbers:
            _, _, size = c.retr(n)
            octets += size
        t2 = time.perf_counter()
        c.quit()
    except Exception:
        c.close()
        raise
    checks.expect(server, "POP3 STAT count", count, len(mail.catalogue))
    checks.expect(server, "POP3 UIDL lines (unique)", len(set(uidls)), len(mail.catalogue))
    checks.expect(server, "POP3 RETR (messages, octets)", (len(numbers), octets),
                  (len(mail.chosen), mail.chosen_octets))
    return {"pop3_stat_uidl_s": t1 - t0, "pop3_retr_s": t2 - t1, "pop3_session_s": t2 - t0}


HIGHESTMODSEQ = re.compile(rb"\[HIGHESTMODSEQ (\d+)\]")
UIDVALIDITY = re.compile(rb"\[UIDVALIDITY (\d+)\]")


def qresync_resync(server, mail, checks, reps):
    """A QRESYNC client (RFC 7162) coming back to an unchanged INBOX: one session learns
    UIDVALIDITY and HIGHESTMODSEQ, then `reps` sessions each time
    SELECT INBOX (QRESYNC (uidvalidity modseq)), whose answer must hold no change."""
    with login(server) as c:
        c.command("ENABLE QRESYNC")
        _, _, data = c.command("SELECT INBOX (CONDSTORE)")
        v, m = UIDVALIDITY.search(data), HIGHESTMODSEQ.search(data)
        checks.expect(server, "HIGHESTMODSEQ above 0", bool(m) and int(m.group(1)) > 0, True)
        c.logout()
    if not (v and m):
        return {}
    times = []
    for _ in range(reps):
        with login(server) as c:
            c.command("ENABLE QRESYNC")
            elapsed, _, data = c.command(
                f"SELECT INBOX (QRESYNC ({int(v.group(1))} {int(m.group(1))}))")
            changes = len(re.findall(rb"^\* (?:VANISHED|\d+ FETCH)", data, re.M))
            checks.expect(server, "QRESYNC resync of an unchanged INBOX: changes", changes, 0)
            times.append(elapsed)
            c.logout()
    return {"qresync_select_s": statistics.median(times)}


# --- logins per second -----------------------------------------------------------------------

def login_rate(server, user, args):
    """`--login-clients` threads each connect (TLS), LOGIN and LOGOUT in a loop for
    `--login-seconds`; the rate counts every login until the last one finished."""
    stop_at = time.monotonic() + args.login_seconds
    done, errors, lock = [], [], threading.Lock()

    def client():
        while time.monotonic() < stop_at and not errors:
            t0 = time.perf_counter()
            try:
                with Imap(server.port, timeout=30) as c:
                    c.login(user, PASSWORD)
                    c.command("LOGOUT")
            except Exception as e:  # noqa: BLE001 - reported below
                with lock:
                    errors.append(repr(e))
                return
            t1 = time.perf_counter()
            with lock:
                done.append((t1, t1 - t0))

    cpu0, client0 = server.cpu_s(), time.process_time()
    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(args.login_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(args.login_seconds + 60)
    if errors or any(t.is_alive() for t in threads):
        raise RuntimeError(f"{server.name} logins: {errors[0] if errors else 'a client hung'}")
    time.sleep(0.5)  # Dovecot's per-login processes exit and are reaped into its CPU figure
    cpu = server.cpu_s() - cpu0
    last = max(t for t, _ in done)
    ms = sorted(d * 1000 for _, d in done)
    return {
        "logins": len(done),
        "per_s": len(done) / (last - start),
        "latency_p50_ms": statistics.median(ms),
        "latency_max_ms": ms[-1],
        "server_cpu_ms_per_login": cpu * 1000 / len(done),
        "client_cpu_s": time.process_time() - client0,
    }


# --- memory per idle session -----------------------------------------------------------------

def session_memory(server, args, mail, checks):
    """PSS of the server (all its processes) with `--sessions` idle logged-in sessions, minus
    without, per session; then the same with INBOX selected in each. The sessions come from
    several loopback addresses, under both servers' caps per user and address."""
    time.sleep(1.0)
    before = server.memory()
    sessions = []
    try:
        for i in range(args.sessions):
            source = f"127.0.0.{10 + i // SESSIONS_PER_ADDRESS}"
            sessions.append(login(server, source=source))
        time.sleep(1.0)
        logged_in = server.memory()
        for c in sessions:
            select(c, server, mail, checks)
        time.sleep(1.0)
        selected = server.memory()
    finally:
        for c in sessions:
            c.logout()
    n = args.sessions
    return {
        "pss_idle_kib": before["pss_kib"],
        "pss_logged_in_kib": logged_in["pss_kib"],
        "pss_selected_kib": selected["pss_kib"],
        "per_session_kib": (logged_in["pss_kib"] - before["pss_kib"]) / n,
        "per_selected_session_kib": (selected["pss_kib"] - before["pss_kib"]) / n,
        "processes_idle": before["by_process"],
        "processes_logged_in": logged_in["by_process"],
        "processes_selected": selected["by_process"],
    }


# --- the machine -----------------------------------------------------------------------------

def proc_stat():
    """(busy, total) jiffies of all CPUs."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


class MachineLoad:
    """How busy the machine was during a stretch, and how much of that was not this bench
    (other people's builds and tests on a shared machine)."""

    def __init__(self, srvs):
        self.srvs = srvs
        self.loadavg0 = os.getloadavg()
        self.stat0 = proc_stat()
        self.own0 = self._own()

    def _own(self):
        t = os.times()
        servers_cpu = sum(s.cpu_s() for s in self.srvs if s.proc is not None)
        return t.user + t.system + t.children_user + t.children_system + servers_cpu

    def figures(self):
        busy1, total1 = proc_stat()
        busy, total = busy1 - self.stat0[0], total1 - self.stat0[1]
        cpus = os.cpu_count() or 1
        wall = total / cpus / imapservers.servers.CLK_TCK
        busy_cores = cpus * busy / total if total else 0.0
        own_cores = (self._own() - self.own0) / wall if wall else 0.0
        return {
            "loadavg_before": self.loadavg0,
            "loadavg_after": os.getloadavg(),
            "busy_cores": busy_cores,
            "bench_cores": own_cores,
            "others_cores": max(0.0, busy_cores - own_cores),
        }


# --- the run ---------------------------------------------------------------------------------

class Mail:
    """The template Maildir and what the benchmark knows of it."""

    def __init__(self, root, args):
        self.dir = os.path.join(root, "template")
        self.catalogue = mailgen.write_maildir(self.dir, args.messages, args.seed)
        step = max(1, len(self.catalogue) // BODIES)
        self.chosen = list(range(0, len(self.catalogue), step))[:BODIES]
        self.chosen_octets = sum(self.catalogue[i]["size"] for i in self.chosen)
        self.search_hits = mailgen.subject_hits(self.catalogue)
        self.octets = sum(m["size"] for m in self.catalogue)


def run_round(rnd, srvs, mail, args, checks):
    order = srvs if rnd % 2 == 0 else srvs[::-1]
    out = {s.name: {"warm": []} for s in srvs}
    print(f"round {rnd + 1}/{args.rounds}: fresh copies of the Maildir, servers restarted",
          flush=True)
    for s in srvs:
        s.stop()
    for s in srvs:
        s.reset_mail(mail.dir)
    os.sync()  # the copies' write-back must not fall into a measurement
    for s in srvs:
        s.start()
    load = MachineLoad(srvs)
    time.sleep(1.0)
    uid_sets = {}
    for s in order:
        print(f"  [{s.name}] cold SELECT, first FETCH / BODY.PEEK[] / SEARCH", flush=True)
        out[s.name]["cold"] = cold_session(s, mail, uid_sets, checks)
    print(f"  warm sessions x {args.reps}", flush=True)
    for _ in range(args.reps):
        for s in order:
            out[s.name]["warm"].append(warm_session(s, mail, uid_sets, checks))
    for s in order:
        print(f"  [{s.name}] POP3S: STAT, UIDL, {BODIES} x RETR", flush=True)
        out[s.name]["pop3"] = pop3_session(s, mail, uid_sets, checks)
        print(f"  [{s.name}] QRESYNC resync of the unchanged INBOX x {args.reps}", flush=True)
        out[s.name]["qresync"] = qresync_resync(s, mail, checks, args.reps)
    for user, key in ((USER, "logins"), (LIGHT_USER, "logins_light")):
        for s in order:
            print(f"  [{s.name}] logins of {user} for {args.login_seconds:g} s "
                  f"({args.login_clients} clients)", flush=True)
            out[s.name][key] = login_rate(s, user, args)
    for s in order:
        print(f"  [{s.name}] memory: {args.sessions} idle sessions", flush=True)
        out[s.name]["memory"] = session_memory(s, args, mail, checks)
    for s in srvs:
        r = out[s.name]
        r["warm_median"] = {k: statistics.median(w[k] for w in r["warm"]) for k in r["warm"][0]}
    out["machine"] = load.figures()
    return out


# Sections of a round's figures, and the prefix their keys get in the summary.
SECTIONS = {"cold": "", "warm_median": "", "pop3": "", "qresync": "", "logins": "login_",
            "logins_light": "light_login_", "memory": ""}


def summary(rounds, name):
    """Per figure, the median over rounds."""
    rs = [r[name] for r in rounds if name in r]
    out = {}
    for section, prefix in SECTIONS.items():
        for key, value in rs[0][section].items() if rs else ():
            if isinstance(value, (int, float)):
                out[prefix + key] = statistics.median(r[section][key] for r in rs)
    return out


# --- report ----------------------------------------------------------------------------------

# label, key, scale, format, target (">=" or "<=", ratio tambo/dovecot) or None
ROWS = [
    ("IMAPS logins/s (scrypt ln=15, as user-add makes)", "login_per_s", 1, "{:.1f}",
     (">=", 4.0)),
    ("IMAPS logins/s (scrypt ln=4: the servers' own cost)", "light_login_per_s", 1, "{:.1f}",
     (">=", 4.0)),
    ("server CPU ms per login (ln=4)", "light_login_server_cpu_ms_per_login", 1, "{:.2f}",
     None),
    ("SELECT INBOX cold ms", "select_cold_s", 1000, "{:.1f}", ("<=", 1.5)),
    ("SELECT INBOX warm ms", "select_warm_s", 1000, "{:.1f}", ("<=", 1.0)),
    # Target: under 10 ms for 10,000 messages (issue 19), not a ratio.
    ("SELECT INBOX (QRESYNC (v m)), nothing changed ms", "qresync_select_s", 1000, "{:.1f}",
     None),
    ("UID FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE ENVELOPE) ms", "fetch_s", 1000,
     "{:.1f}", ("<=", 1.0)),
    ("  the same, first after the cold SELECT ms", "fetch_first_s", 1000, "{:.1f}", None),
    (f"UID FETCH <{BODIES} uids> BODY.PEEK[] ms", "bodies_s", 1000, "{:.1f}", ("<=", 1.5)),
    ("  the same, first after the cold SELECT ms", "bodies_first_s", 1000, "{:.1f}", None),
    (f"{SEARCH} ms", "search_s", 1000, "{:.1f}", ("<=", 2.0)),
    ("  the same, first after the cold SELECT ms", "search_first_s", 1000, "{:.1f}", None),
    (f"POP3S STAT + UIDL + {BODIES} x RETR, one session ms", "pop3_session_s", 1000, "{:.1f}",
     ("<=", 1.0)),
    ("  of which STAT + UIDL ms", "pop3_stat_uidl_s", 1000, "{:.1f}", None),
    (f"  of which {BODIES} x RETR ms", "pop3_retr_s", 1000, "{:.1f}", None),
    ("PSS per idle logged-in IMAPS session KiB", "per_session_kib", 1, "{:.0f}", ("<=", 0.1)),
    ("PSS per idle session with INBOX selected KiB", "per_selected_session_kib", 1, "{:.0f}",
     None),
    ("PSS idle server MiB (all processes)", "pss_idle_kib", 1 / 1024, "{:.1f}", None),
]


def table(results):
    t, d = results.get("tambo", {}), results.get("dovecot", {})
    rows = []
    for label, key, scale, fmt, target in ROWS:
        a, b = t.get(key), d.get(key)
        rows.append((label, "" if a is None else fmt.format(a * scale),
                     "" if b is None else fmt.format(b * scale), a, b, target))
    return report.ratio_table(["tambo", "dovecot"], rows)


# --- main ------------------------------------------------------------------------------------

def main():
    args = parse_args()
    preflight(args)
    # Ctrl-C and SIGTERM unwind through the finally below, which stops every server.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    root = tempfile.mkdtemp(prefix="tambo-imapbench.", dir=args.tmpdir)
    results = {"command": " ".join(sys.argv), "args": vars(args), "started": time.time(),
               "loadavg_start": os.getloadavg()}
    srvs, checks, rounds = [], Checks(), []
    wall = time.monotonic()
    try:
        with open(os.path.join(root, "setup.log"), "w") as log:
            results["environment"] = report.environment(
                root, dovecot_version=report.command_output(["dovecot", "--version"]),
                openssl=ssl.OPENSSL_VERSION)
            print(f"writing {args.messages} messages (seed {args.seed}) ...", flush=True)
            mail = Mail(root, args)
            results["mail"] = {"messages": len(mail.catalogue), "octets": mail.octets,
                               "search_hits": mail.search_hits,
                               "bodies": len(mail.chosen), "bodies_octets": mail.chosen_octets}
            tambo = imapservers.Tambo(args.tambo_bin, root, log)
            tambo.configure()
            dovecot = imapservers.Dovecot(root, log, *tambo.cert_paths())
            dovecot.configure()
            srvs = [s for s in (tambo, dovecot) if args.only in (None, s.name)]
            for rnd in range(args.rounds):
                rounds.append(run_round(rnd, srvs, mail, args, checks))
            for s in srvs:
                results[s.name] = summary(rounds, s.name)
                results[s.name]["tls"] = s.tls
    except KeyboardInterrupt:
        print("imap: interrupted; stopping everything", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - report any failure, then clean up
        print(f"imap: {e}", file=sys.stderr)
        print(f"imap: logs kept in {root}", file=sys.stderr)
        args.keep = True
        return 1
    finally:
        for s in srvs:
            s.stop()
        results["rounds"] = rounds
        results["checks"] = checks.failures
        results["loadavg_end"] = os.getloadavg()
        results["wall_s"] = time.monotonic() - wall
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)

    print()
    print(table(results))
    print()
    for s in srvs:
        print(f"{s.name}: TLS {s.tls}")
    for rnd, r in enumerate(rounds):
        m = r["machine"]
        print(f"round {rnd + 1}: machine busy {m['busy_cores']:.2f} of {os.cpu_count()} cores, "
              f"this bench {m['bench_cores']:.2f}, others {m['others_cores']:.2f}; load average "
              f"{m['loadavg_before'][0]:.2f} -> {m['loadavg_after'][0]:.2f}")
    for failure in checks.failures:
        print(f"CHECK FAILED: {failure}")
    print(f"raw figures: {args.json}; wall time {results['wall_s']:.0f} s")
    return 1 if checks.failures else 0


if __name__ == "__main__":
    sys.exit(main())
