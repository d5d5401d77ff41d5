#!/usr/bin/python3
"""Where tambo's CPU goes in a perf recording of the bench (`run.sh --perf PREFIX`).

Reads each recording with `perf script`, keeps the samples of the tambo process (every thread:
the executor and the blocking pool that writes the Maildirs), and puts each sample in one
category: in the kernel, by the system call it is part of (fsync, the Maildir's file calls, the
network, thread wake-ups) or as an interrupt or fault taken there; in user space, by the
innermost frame that belongs to a known part of tambo or of a crate (the checks, the SMTP
session, the runtime, ...), the allocator and memcpy on their own. Prints each category's share
of the samples and, given the bench's JSON, what that share is in CPU seconds per 1,000
messages of the phase recorded (the figures of the README's table).

    cargo build --profile profiling
    sudo ./benches/run.sh --no-build --rounds 3 --only tambo --tambo-bin target/profiling/tambo \
        --perf /var/tmp/tambo --no-floor --no-memory-bound \
        --large-1m-messages 0 --large-25m-messages 0
    sudo /usr/bin/python3 benches/profile.py --json target/bench-results.json \
        /var/tmp/tambo.domain.round*.data
"""

import argparse
import collections
import json
import re
import subprocess
import sys

# System calls, by what they do for a message. A read or write is a file's or a socket's
# depending on the kernel frames under it.
SYSCALLS = [
    ("kernel: fsync (message files, queue files, folders)", {"fsync", "fdatasync"}),
    ("kernel: file calls (open, write, read, link, unlink, rename, stat, close)",
     {"openat", "open", "link", "linkat", "unlink", "unlinkat", "rename", "renameat",
      "renameat2", "newfstatat", "statx", "fstat", "newfstat", "close", "mkdir", "mkdirat",
      "getdents64", "ftruncate", "lseek", "fallocate"}),
    ("kernel: network (loopback: the TCP work of both ends)",
     {"accept4", "accept", "sendto", "recvfrom", "sendmsg", "recvmsg", "shutdown",
      "epoll_wait", "epoll_pwait", "epoll_ctl", "setsockopt", "getsockname", "getpeername",
      "connect", "socket", "writev", "readv"}),
    ("kernel: thread wake-ups and waits (futex, eventfd)", {"futex", "eventfd2"}),
    ("kernel: clock and timers", {"clock_gettime", "clock_nanosleep", "nanosleep",
                                  "timerfd_settime"}),
    ("kernel: memory mapping (the allocator's mmap, munmap, madvise, brk)",
     {"mmap", "munmap", "madvise", "brk", "mprotect", "mremap"}),
]
SYSCALL_OF = {name: cat for cat, names in SYSCALLS for name in names}
SYS_FRAME = re.compile(r"^__x64_sys_(\w+)$")
FILE_CALLS, NETWORK = SYSCALLS[1][0], SYSCALLS[2][0]


def frames_of(*prefixes):
    """A frame of any of these paths, also as `<path as Trait>::...`."""
    return re.compile(r"^<?(" + "|".join(re.escape(p) for p in prefixes) + ")")


# User-space frames, innermost first: the first frame of a sample that matches names it.
USER = [
    ("user: allocator (malloc, free)", re.compile(
        r"^(malloc|_int_malloc|_int_free|cfree|free|realloc|_int_realloc|calloc|tcache_|"
        r"__GI___libc_(malloc|free|realloc|calloc)|malloc_consolidate|unlink_chunk|"
        r"__rustc::__rd[lr]_|__rust_(alloc|dealloc|realloc))")),
    ("user: memcpy, memmove, memset", re.compile(r"^__(memmove|memcpy|memset|memcmp)")),
    ("user: SPF, DKIM, DMARC, ARC, SRS (checks and signing)",
     frames_of("mail_auth::", "tambo::mailauth")),
    ("user: DNS (hickory)", frames_of("hickory", "tambo::dns")),
    ("user: logging (log lines, formatting)",
     frames_of("log::", "env_logger", "tambo::maillog", "core::fmt", "alloc::fmt")),
    ("user: IMAP summary written at delivery", frames_of("tambo::mailbox::summary")),
    ("user: Maildir delivery", frames_of("tambo::mailbox", "tambo::courier::maildir",
                                          "tambo::fsutil", "tambo::queue::direct")),
    ("user: queue and outbound SMTP", frames_of("tambo::queue", "tambo::courier")),
    ("user: SMTP session and parsing",
     frames_of("tambo::smtpd", "tambo::proto", "tambo::addr", "tambo::message",
               "tambo::aliases", "tambo::userdb", "tambo::hooks", "tambo::net")),
    ("user: TLS", frames_of("rustls", "futures_rustls", "ring::", "aws_lc")),
    ("user: async runtime (executor, reactor, blocking pool)",
     frames_of("async_executor", "async_io", "async_task", "blocking::", "polling",
               "futures_lite", "event_listener", "concurrent_queue", "async_channel",
               "parking")),
]
KERNEL_ONLY = {
    "kernel: page faults": re.compile(r"^(asm_exc_page_fault|exc_page_fault|handle_mm_fault)"),
}


def samples(path, pid):
    """(comm, pid, frames leaf first as (symbol, dso)) of every sample of `pid` in `path`."""
    cmd = ["perf", "script", "-i", path, "-F", "comm,pid,tid,ip,sym,dso"]
    if pid:
        cmd += ["--pid", str(pid)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    head, frames = None, []
    for line in out.splitlines() + [""]:
        if not line.strip():
            if head is not None:
                yield head[0], head[1], frames
            head, frames = None, []
        elif not line.startswith(("\t", " " * 8)) and head is None:
            m = re.match(r"^\s*(.+?)\s+(\d+)/(\d+)", line)
            if m:
                head = (m.group(1), int(m.group(2)))
        else:
            m = re.match(r"^\s*[0-9a-f]+\s+(.+?)\s+\((.*)\)\s*$", line)
            if m:
                frames.append((re.sub(r"\+0x[0-9a-f]+$", "", m.group(1)), m.group(2)))


def tambo_pid(path):
    """The pid of the process whose main thread is named tambo."""
    out = subprocess.run(["perf", "script", "-i", path, "-F", "comm,pid,tid"],
                         capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        m = re.match(r"^\s*tambo\s+(\d+)/(\d+)", line)
        if m and m.group(1) == m.group(2):
            return int(m.group(1))
    raise SystemExit(f"{path}: no sample of a process named tambo")


def category(frames):
    kernel = [s for s, dso in frames if dso == "[kernel.kallsyms]"]
    if frames and frames[0][1] == "[kernel.kallsyms]":
        for sym in kernel:
            m = SYS_FRAME.match(sym)
            if m:
                name = m.group(1)
                if name in ("read", "write", "pread64", "pwrite64"):
                    socket = any(s.startswith(("sock_", "tcp_", "inet_")) for s in kernel)
                    return NETWORK if socket else FILE_CALLS
                return SYSCALL_OF.get(name, f"kernel: other system call ({name})")
        for cat, pattern in KERNEL_ONLY.items():
            if any(pattern.match(s) for s in kernel):
                return cat
        return "kernel: outside a system call (interrupts, scheduling)"
    for sym, _dso in frames:
        for cat, pattern in USER:
            if pattern.match(sym):
                return cat
    return "user: other"


def recorded_cpu_per_1000(results_path, paths):
    """tambo's CPU s per 1,000 messages over the rounds recorded in `paths`
    (PREFIX.PHASE.roundN.data), from the bench's JSON."""
    with open(results_path) as f:
        tambo = json.load(f)["tambo"]
    cpu = messages = 0.0
    for path in paths:
        m = re.search(r"\.(\w+)\.round(\d+)\.data$", path)
        if not m:
            raise SystemExit(f"{path}: not a name run.sh --perf gives (PREFIX.PHASE.roundN.data)")
        figures = tambo[f"{m.group(1)}_rounds"][int(m.group(2)) - 1]
        if not figures.get("cpu_s_per_1000"):
            raise SystemExit(f"{path}: that round has no CPU figure (incomplete?)")
        cpu += figures["cpu_s"]
        messages += figures["cpu_s"] / figures["cpu_s_per_1000"] * 1000
    return cpu / messages * 1000


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", nargs="+", help="perf.data files of one phase (run.sh --perf "
                   "PREFIX writes PREFIX.PHASE.roundN.data)")
    p.add_argument("--json", help="the bench's raw figures: shares become CPU s / 1000 msg "
                   "of the rounds recorded")
    p.add_argument("--top", type=int, default=0,
                   help="also the N leaf symbols most often sampled")
    args = p.parse_args()

    counts = collections.Counter()
    leaves = collections.Counter()
    unplaced = collections.Counter()
    for path in args.data:
        pid = tambo_pid(path)
        for _comm, _pid, frames in samples(path, pid):
            where = category(frames)
            counts[where] += 1
            if frames:
                leaves[frames[0][0]] += 1
                if where == "user: other":
                    unplaced[frames[0][0]] += 1
    total = sum(counts.values())
    if not total:
        raise SystemExit("no samples")
    per_1000 = None
    if args.json:
        per_1000 = recorded_cpu_per_1000(args.json, args.data)
    print(f"{total} samples of tambo"
          + (f"; {per_1000:.2f} CPU s / 1000 messages over the recorded rounds"
             if per_1000 is not None else ""))
    print("| where | share | CPU s / 1000 msg |" if per_1000 is not None else "| where | share |")
    print("| --- | --- | --- |" if per_1000 is not None else "| --- | --- |")
    for cat, n in counts.most_common():
        share = n / total
        cells = [cat, f"{share * 100:.1f}%"]
        if per_1000 is not None:
            cells.append(f"{share * per_1000:.3f}")
        print("| " + " | ".join(cells) + " |")
    if args.top:
        for title, counter in (("leaf symbols", leaves), ('leaves of "user: other"', unplaced)):
            print(f"\n{title}:")
            for sym, n in counter.most_common(args.top):
                print(f"{n / total * 100:5.1f}%  {sym}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
