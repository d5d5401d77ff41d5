"""Peak memory of tambo while large messages arrive at once (see benches/README.md).

Starts the benchmark's DNS server and sink MTA on loopback and one tambo whose domain has a
DKIM key and a post-data hook, then measures, with the peak resident set size (`VmHWM`, reset
through /proc/<pid>/clear_refs before each phase):

- port 25: N messages of SIZE at once, each carrying a DKIM signature (so its body is hashed),
  through the hook, to an alias that forwards them (SRS, ARC seal) to the sink;
- submission: N messages of SIZE at once from the domain's user (so each is DKIM-signed on
  its way out) to the sink;
- mailbox: N messages of SIZE at once on port 25 to the domain's user, delivered into its
  Maildir before the 250.

Every message must reach the sink, or the Maildir's new/. Prints idle RSS, the peak of each phase, and the growth over
idle against the bound (64 MiB for 16 messages of 40 MB); the raw figures go to a JSON file.
Needs no root: the DNS server listens on a free port of 127.0.0.1, the sink on 127.0.0.2.

Usage: /usr/bin/python3 benches/memory.py [--messages 16] [--size 40000000] [--tambo-bin PATH]
(Debian's python3, which has python3-dnspython for the DNS server.)
"""

import argparse
import json
import os
import shutil
import smtplib
import ssl
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import servers  # noqa: E402
from sink import Sink  # noqa: E402

SENDER = f"load@{servers.SENDER_DOMAIN}"
BOUND_MIB = 64
LINE = b"All work and no play makes Jack a dull boy, all work and no play, Jack.\r\n"
HOOK = "#!/bin/sh\n# Reads the whole message, as a spam filter would.\ncat > /dev/null\n"


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=16)
    p.add_argument("--size", type=int, default=40_000_000, help="bytes per message")
    p.add_argument("--tambo-bin", default=os.path.join(REPO, "target", "release", "tambo"))
    p.add_argument("--bench-bin", default=os.path.join(REPO, "target", "release", "tambo-bench"))
    p.add_argument("--tmpdir", default=os.environ.get("BENCH_TMPDIR", "/var/tmp"))
    p.add_argument("--json", default=os.path.join(REPO, "target", "bench-memory.json"))
    p.add_argument("--keep", action="store_true", help="keep the temp folder")
    return p.parse_args()


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} for pid {pid}")


def reset_peak(pid):
    # proc(5): writing 5 to clear_refs resets the peak resident set size (VmHWM) to VmRSS.
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


def message_head(frm, to, signed):
    """Headers of a test message; with `signed`, a DKIM-Signature whose body hash the server
    must compute over the whole body (its value does not matter: the check fails, harmlessly)."""
    head = [f"From: <{frm}>", f"To: <{to}>", "Subject: large message",
            "Message-ID: <large@client.test>", "Date: Mon, 07 Dec 2026 10:00:00 +0000"]
    if signed:
        head.insert(0, "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=client.test;"
                       " s=sel; h=from:to:subject; bh=YmFkYm9keWhhc2g=; b=YmFkc2lnbmF0dXJl")
    return ("\r\n".join(head) + "\r\n\r\n").encode()


def send_data(smtp, head, size):
    """DATA, streamed: the message is never built whole here either."""
    code, text = smtp.docmd("DATA")
    if code != 354:
        raise RuntimeError(f"DATA: {code} {text!r}")
    block = LINE * (64 * 1024 // len(LINE))
    smtp.sock.sendall(head)
    left = max(size - len(head), 0)
    while left > 0:
        piece = block if left >= len(block) else LINE * (left // len(LINE) + 1)
        smtp.sock.sendall(piece)
        left -= len(piece)
    smtp.sock.sendall(b".\r\n")
    code, text = smtp.getreply()
    if code != 250:
        raise RuntimeError(f"end of DATA: {code} {text!r}")


def send_one(port, mode, size, ready, go, errors):
    """One session: set up to the point of DATA (STARTTLS and AUTH on submission), wait at
    `ready` and `go` so every message is sent at the same moment, then DATA."""
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=120) as smtp:
            smtp.ehlo("client.test")
            submission = mode == "submission"
            if submission:
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
                smtp.starttls(context=ctx)
                smtp.ehlo("client.test")
                smtp.login(f"{servers.USER}@{servers.DOMAIN}", servers.PASSWORD)
                frm, to = f"{servers.USER}@{servers.DOMAIN}", servers.FORWARD_TARGET
            elif mode == "mailbox":
                frm, to = SENDER, f"{servers.USER}@{servers.DOMAIN}"
            else:
                frm, to = SENDER, f"{servers.FORWARD_ALIAS}@{servers.DOMAIN}"
            code, text = smtp.mail(frm)
            if code != 250:
                raise RuntimeError(f"MAIL: {code} {text!r}")
            code, text = smtp.rcpt(to)
            if code != 250:
                raise RuntimeError(f"RCPT: {code} {text!r}")
            ready.wait(300)
            go.wait(300)
            send_data(smtp, message_head(frm, to, signed=not submission), size)
    except threading.BrokenBarrierError:
        errors.append("another session failed before DATA")
    except Exception as e:  # noqa: BLE001 - reported by the phase
        errors.append(repr(e))
        ready.abort()
        go.abort()


def phase(name, pid, port, mode, arrived, sink, args):
    """The sessions log in first; the peak is reset once they are all at DATA, so it measures
    what the messages cost (password checks are bounded on their own: one per core at once,
    32 MiB each with the default scrypt cost)."""
    sink.reset()
    before = arrived()
    errors = []
    ready, go = threading.Barrier(args.messages + 1), threading.Barrier(args.messages + 1)
    threads = [threading.Thread(target=send_one,
                                args=(port, mode, args.size, ready, go, errors))
               for _ in range(args.messages)]
    for t in threads:
        t.start()
    try:
        ready.wait(300)
        reset_peak(pid)
        start = time.monotonic()
        go.wait(300)
    except threading.BrokenBarrierError:
        pass
    for t in threads:
        t.join(600)
    if errors:
        raise RuntimeError(f"{name}: {errors[0]} ({len(errors)} failed)")
    accepted = time.monotonic()
    end = accepted + 600
    while arrived() - before < args.messages:
        if time.monotonic() > end:
            raise RuntimeError(f"{name}: {arrived() - before}/{args.messages} arrived after 600 s")
        time.sleep(0.2)
    done = time.monotonic()
    return {
        "peak_kib": status_kib(pid, "VmHWM"),
        "accepted_s": accepted - start,
        "arrived_s": done - start,
        "mb_per_s": args.messages * args.size / 1e6 / (done - start),
    }


def start_dns(root, port):
    """dnsserver.py on 127.0.0.1:`port`; waits until it says it is bound."""
    log_path = os.path.join(root, "dns.log")
    proc = servers.Proc("dns", [sys.executable, os.path.join(HERE, "dnsserver.py"), "127.0.0.1",
                                str(port), servers.SINK_IP, servers.SENDER_DOMAIN], log_path)
    end = time.monotonic() + 10
    while time.monotonic() < end:
        if not proc.alive():
            raise RuntimeError(f"dnsserver.py exited:\n{proc.log_tail()}")
        with open(log_path, "rb") as f:
            if b"ready" in f.read():
                return proc
        time.sleep(0.1)
    proc.stop()
    raise RuntimeError("dnsserver.py did not start in 10 s")


def configure(tambo, log):
    tambo.configure()
    subprocess.run([tambo.binary, "-C", tambo.dir, "util", "dkim-keygen", servers.DOMAIN, "mem"],
                   check=True, stdout=log, stderr=log, timeout=60)
    hooks = os.path.join(tambo.dir, "hooks")
    os.makedirs(hooks)
    with open(os.path.join(hooks, "post-data"), "w") as f:
        f.write(HOOK)
    os.chmod(os.path.join(hooks, "post-data"), 0o755)
    path = os.path.join(tambo.dir, "conf", "tambo.json")
    with open(path) as f:
        settings = json.load(f)
    # Room for the messages asked for, and a DNS server on a free port (no root needed).
    settings["max_message_size_mb"] = max(50, tambo.size // (1024 * 1024) + 2)
    settings["dns_servers"] = [f"127.0.0.1:{tambo.dns_port}"]
    with open(path, "w") as f:
        json.dump(settings, f, indent=2)
    return settings


def main():
    args = parse_args()
    for path in (args.tambo_bin, args.bench_bin):
        if not os.access(path, os.X_OK):
            sys.exit(f"memory: {path} missing: run `cargo build --release` first")
    root = tempfile.mkdtemp(prefix="tambo-memory.", dir=args.tmpdir)
    procs, sink, results = [], None, {"command": " ".join(sys.argv), "args": vars(args)}
    try:
        with open(os.path.join(root, "setup.log"), "w") as log:
            dns_port = servers.free_port()
            procs.append(start_dns(root, dns_port))
            sink = Sink(args.bench_bin, servers.SINK_IP, servers.free_port(servers.SINK_IP),
                        os.path.join(root, "sink.log"))
            sink.start()
            tambo = servers.Tambo(args.tambo_bin, root, sink.port, None, log)
            tambo.size, tambo.dns_port = args.size, dns_port
            settings = configure(tambo, log)
            env = dict(os.environ, RUST_LOG="info")
            tambo.proc = servers.Proc("tambo", [tambo.binary, "-C", tambo.dir, "serve"],
                                      os.path.join(tambo.dir, "tambo.log"), env=env)
            procs.append(tambo.proc)
            servers.wait_smtp(tambo.port, tambo.proc)
            submission = int(settings["submission_listen"][0].rsplit(":", 1)[1])
            time.sleep(1.0)
            pid = tambo.proc.pid
            results["idle_kib"] = status_kib(pid, "VmRSS")
            print(f"tambo idle RSS {results['idle_kib'] / 1024:.1f} MiB; "
                  f"{args.messages} x {args.size / 1e6:.0f} MB at once", flush=True)
            new = tambo.maildir_new()

            def in_maildir():
                return len(os.listdir(new)) if os.path.isdir(new) else 0

            results["port25"] = phase("port 25", pid, tambo.port, "alias", sink.count, sink, args)
            results["submission"] = phase("submission", pid, submission, "submission",
                                          sink.count, sink, args)
            results["mailbox"] = phase("mailbox", pid, tambo.port, "mailbox", in_maildir, sink,
                                       args)
    except KeyboardInterrupt:
        print("memory: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - report, then clean up
        print(f"memory: {e}\nmemory: logs kept in {root}", file=sys.stderr)
        args.keep = True
        return 1
    finally:
        for p in reversed(procs):
            p.stop()
        if sink is not None:
            sink.stop()
        os.makedirs(os.path.dirname(args.json), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)

    idle = results["idle_kib"] / 1024
    print(f"{'phase':<12} {'peak RSS MiB':>12} {'growth MiB':>11} {'bound':>6} {'met':>4} "
          f"{'MB/s':>13}")
    for name in ("port25", "submission", "mailbox"):
        r = results[name]
        peak = r["peak_kib"] / 1024
        growth = peak - idle
        print(f"{name:<12} {peak:12.1f} {growth:11.1f} {BOUND_MIB:6d} "
              f"{'yes' if growth <= BOUND_MIB else 'NO':>4} {r['mb_per_s']:13.0f}")
    print(f"raw figures: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
