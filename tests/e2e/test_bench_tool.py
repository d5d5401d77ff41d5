"""The benchmark's own tools (benches/tambo-bench): the load generator against the sink, and
the load generator's handling of 4xx (retried, counted) and 5xx (the run fails) against a
scripted peer. The figures in the README come from these, so they must count right."""

import json
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from helpers import TAMBO_BIN, free_ports

BENCH_BIN = TAMBO_BIN.parent / "tambo-bench"
DEADLINE = 30


def bench_bin() -> str:
    if not BENCH_BIN.is_file():
        pytest.fail(f"tambo-bench not found at {BENCH_BIN} (cargo build --release)")
    return str(BENCH_BIN)


def load(port: int, messages: int, connections: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        [bench_bin(), "load", "--server", f"127.0.0.1:{port}", "--messages", str(messages),
         "--connections", str(connections), "--size", "2048", "--from", "load@client.test",
         "--to", "fwd@bench.test", "--deadline-s", "20"],
        capture_output=True, text=True, timeout=DEADLINE,
    )


class SinkProc:
    def __init__(self, port: int):
        self.proc = subprocess.Popen(
            [bench_bin(), "sink", "--listen", f"127.0.0.1:{port}"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        assert self.line() == "ready"

    def line(self) -> str:
        box = []
        t = threading.Thread(target=lambda: box.append(self.proc.stdout.readline()))
        t.start()
        t.join(DEADLINE)
        assert box, "the sink did not answer in time"
        return box[0].strip()

    def ask(self, what: str) -> str:
        self.proc.stdin.write(what + "\n")
        self.proc.stdin.flush()
        return self.line()

    def stop(self):
        self.proc.stdin.close()
        try:
            self.proc.wait(DEADLINE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(DEADLINE)
            pytest.fail("the sink did not exit when its stdin closed")


def test_every_message_of_the_load_reaches_the_sink_and_is_counted_once():
    (port,) = free_ports(1)
    sink = SinkProc(port)
    try:
        r = load(port, 300, 7)
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert out["accepted"] == 300
        assert out["temp_failures"] == 0 and out["first_temp_failure"] is None
        assert len(out["latencies_s"]) == 300
        assert all(0 < x < DEADLINE for x in out["latencies_s"])
        assert out["start"] < out["last_250"]
        assert sink.ask("count") == "300"
        assert sink.ask("reset") == "ok"
        assert sink.ask("count") == "0"
    finally:
        sink.stop()
    assert sink.proc.returncode == 0


class ScriptedPeer:
    """An SMTP peer that answers the first RCPT with `first_rcpt` and every other command
    as a sink does; it records each message's data."""

    def __init__(self, first_rcpt: bytes):
        self.first_rcpt = first_rcpt
        self.rcpts = 0
        self.messages: list[bytes] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(DEADLINE)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        conn, _ = self.sock.accept()
        try:
            conn.settimeout(DEADLINE)
            self.session(conn, conn.makefile("rb"))
        finally:
            conn.close()

    def session(self, conn, f):
        conn.sendall(b"220 peer\r\n")
        while line := f.readline():
            verb = line[:4].upper()
            if verb == b"EHLO":
                conn.sendall(b"250-peer\r\n250 PIPELINING\r\n")
            elif verb == b"RCPT":
                self.rcpts += 1
                conn.sendall(self.first_rcpt if self.rcpts == 1 else b"250 ok\r\n")
            elif verb == b"DATA":
                conn.sendall(b"354 go\r\n")
                data = b""
                while (chunk := f.readline()) != b".\r\n":
                    if not chunk:
                        return
                    data += chunk
                self.messages.append(data)
                conn.sendall(b"250 ok\r\n")
            elif verb == b"QUIT":
                conn.sendall(b"221 bye\r\n")
                return
            else:
                conn.sendall(b"250 ok\r\n")


def test_a_4xx_is_counted_and_the_message_retried_on_the_same_session():
    peer = ScriptedPeer(b"451 4.3.0 queue full, try later\r\n")
    r = load(peer.port, 5, 1)
    peer.thread.join(DEADLINE)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["accepted"] == 5
    assert out["temp_failures"] == 1
    assert "451 4.3.0 queue full" in out["first_temp_failure"]
    # The pipelined DATA after the refused RCPT was ended empty (RFC 2920 §3.1); the five
    # real messages arrived whole, each of the size asked for.
    real = [m for m in peer.messages if m]
    assert len(real) == 5
    assert all(len(m) == 2048 for m in real)
    assert len({m.split(b"Subject: ")[1].split(b"\r\n")[0] for m in real}) == 5


def test_a_5xx_ends_the_run_with_the_reply():
    peer = ScriptedPeer(b"550 5.1.1 no such user\r\n")
    r = load(peer.port, 3, 1)
    assert r.returncode != 0
    assert "550 5.1.1 no such user" in r.stderr
    peer.sock.close()


def test_the_profile_puts_each_sample_by_its_system_call_or_its_innermost_known_frame():
    """benches/profile.py: the README's "where the CPU goes" table is its sorting."""
    import importlib.util
    path = Path(__file__).resolve().parents[2] / "benches" / "profile.py"
    spec = importlib.util.spec_from_file_location("bench_profile", path)
    profile = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(profile)
    k, t, libc = "[kernel.kallsyms]", "tambo", "libc.so.6"

    def where(*frames):
        return profile.category(list(frames))

    # A kernel sample goes by its system call, wherever its leaf is.
    assert where(("_raw_spin_unlock_irqrestore", k), ("ext4_sync_file", k),
                 ("__x64_sys_fdatasync", k), ("do_syscall_64", k),
                 ("fdatasync", libc), ("tambo::mailbox::writer::copy_converted", t)
                 ).startswith("kernel: fsync")
    # A write is a file's or a socket's by what is under it.
    assert where(("tcp_sendmsg", k), ("sock_write_iter", k), ("__x64_sys_write", k)
                 ).startswith("kernel: network")
    assert where(("ext4_buffered_write_iter", k), ("__x64_sys_write", k)
                 ).startswith("kernel: file calls")
    assert where(("handle_softirqs", k), ("irq_exit_rcu", k)).startswith(
        "kernel: outside a system call")
    # User space: the allocator first, else the innermost known frame.
    assert where(("_int_malloc", libc), ("mail_auth::dkim::verify", t)).startswith(
        "user: allocator")
    assert where(("memchr::find", t), ("mail_auth::dkim::verify", t),
                 ("tambo::smtpd::conn::Conn::run", t)).startswith("user: SPF, DKIM")
    assert where(("<tambo::proto::session::Session<R> as X>::poll", t),
                 ("async_executor::run", t)).startswith("user: SMTP session")
    assert where(("core::fmt::write", t), ("tambo::smtpd::conn::Conn::log", t)).startswith(
        "user: logging")
    assert where(("tambo::mailbox::summary::summarize", t),
                 ("tambo::mailbox::deliver::deliver_flagged", t)).startswith(
        "user: IMAP summary")
    assert where(("something_unknown", t)) == "user: other"
