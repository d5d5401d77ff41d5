"""The sink MTA of the forwarding benchmark: `tambo-bench sink` (benches/tambo-bench/sink.rs).

It accepts everything and keeps nothing; we ask it how many messages, and how many
recipients of them, it has received over its stdin (`count`, `recipients`, `reset`), and it
exits when its stdin closes. It runs in its own process
group, so a Ctrl-C to the bench reaches the bench only, which then stops it.
"""

import os
import select
import signal
import subprocess


class Sink:
    def __init__(self, binary, host, port, log_path):
        self.binary = binary
        self.host = host
        self.port = port
        self.log_path = log_path
        self.proc = None

    @property
    def pid(self):
        return self.proc.pid

    def start(self, deadline_s=10):
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, "sink", "--listen", f"{self.host}:{self.port}"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                start_new_session=True,
            )
        line = self._line(deadline_s)
        if line != "ready":
            self.stop()
            raise RuntimeError(f"sink did not start on {self.host}:{self.port} "
                               f"(said {line!r}; see {self.log_path})")

    def _ask(self, question, deadline_s=5):
        self.proc.stdin.write(question.encode() + b"\n")
        self.proc.stdin.flush()
        return self._line(deadline_s)

    def _line(self, deadline_s):
        ready, _, _ = select.select([self.proc.stdout], [], [], deadline_s)
        if not ready:
            raise RuntimeError(f"sink did not answer within {deadline_s}s")
        return self.proc.stdout.readline().decode().strip()

    def count(self):
        return int(self._ask("count"))

    def recipients(self):
        """The recipients of the messages counted (one message may carry several)."""
        return int(self._ask("recipients"))

    def reset(self):
        if self._ask("reset") != "ok":
            raise RuntimeError("sink did not reset its count")

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            self.proc = None
            return
        try:
            self.proc.stdin.close()
            self.proc.wait(5)
        except (OSError, subprocess.TimeoutExpired):
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        self.proc = None
