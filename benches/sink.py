"""A minimal SMTP sink for the forwarding benchmark: accepts everything, keeps nothing.

It must never be the bottleneck, so it is an asyncio Protocol (no stream wrappers), answers
pipelined command groups in one write (RFC 2920), offers no STARTTLS (both servers then send
in plain text, so TLS cost does not blur the comparison) and only counts messages.
"""

import asyncio
import multiprocessing
import os
import signal

EHLO_REPLY = (
    b"250-sink.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n"
    b"250-ENHANCEDSTATUSCODES\r\n250 SIZE 104857600\r\n"
)
END_OF_DATA = b"\r\n.\r\n"


class SinkProtocol(asyncio.Protocol):
    def __init__(self, counter):
        self.counter = counter
        self.buf = b""
        self.in_data = False
        self.scan_from = 0
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport
        transport.write(b"220 sink.test ESMTP bench sink\r\n")

    def data_received(self, data):
        self.buf += data
        out = []
        while self.buf:
            if self.in_data:
                if not self._take_data(out):
                    break
            elif not self._take_command(out):
                break
        if out:
            self.transport.write(b"".join(out))

    def _take_data(self, out):
        # RFC 5321 §4.1.1.4: the data ends with CRLF.CRLF; the CRLF right after DATA's 354
        # counts as the first CRLF, hence the check for a leading ".\r\n".
        if self.buf.startswith(b".\r\n"):
            end = 0
            cut = 3
        else:
            end = self.buf.find(END_OF_DATA, self.scan_from)
            cut = end + len(END_OF_DATA)
        if end < 0:
            self.scan_from = max(0, len(self.buf) - len(END_OF_DATA))
            return False
        self.buf = self.buf[cut:]
        self.scan_from = 0
        self.in_data = False
        with self.counter.get_lock():
            self.counter.value += 1
        out.append(b"250 2.0.0 OK discarded\r\n")
        return True

    def _take_command(self, out):
        end = self.buf.find(b"\r\n")
        if end < 0:
            return False
        line = self.buf[:end]
        self.buf = self.buf[end + 2 :]
        verb = line[:4].upper()
        if verb == b"EHLO":
            out.append(EHLO_REPLY)
        elif verb in (b"HELO", b"MAIL", b"RCPT", b"RSET", b"NOOP"):
            out.append(b"250 2.0.0 OK\r\n")
        elif verb == b"DATA":
            out.append(b"354 go ahead\r\n")
            self.in_data = True
        elif verb == b"QUIT":
            out.append(b"221 2.0.0 bye\r\n")
            self.transport.write(b"".join(out))
            out.clear()
            self.transport.close()
            self.buf = b""
        else:
            out.append(b"502 5.5.1 not implemented\r\n")
        return True


async def _serve(host, port, counter, ready):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SinkProtocol(counter), host, port, backlog=1024, reuse_address=True
    )
    ready.set()
    async with server:
        await server.serve_forever()


def _main(host, port, counter, ready):
    # The parent stops us with SIGTERM (the default action: forked from a parent whose own
    # handler would unwind its cleanup here); Ctrl-C goes to the parent, which cleans up.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    asyncio.run(_serve(host, port, counter, ready))


class Sink:
    """The sink in its own process, so its work does not share the load generator's loop."""

    def __init__(self, host, port):
        self.host = host
        self.port = port
        self.counter = multiprocessing.Value("q", 0)
        self.proc = None

    def start(self, deadline_s=10):
        ready = multiprocessing.Event()
        self.proc = multiprocessing.Process(
            target=_main, args=(self.host, self.port, self.counter, ready), daemon=True
        )
        self.proc.start()
        if not ready.wait(deadline_s):
            self.stop()
            raise RuntimeError(f"sink did not start on {self.host}:{self.port}")

    def count(self):
        return self.counter.value

    def reset(self):
        with self.counter.get_lock():
            self.counter.value = 0

    def stop(self):
        if self.proc is not None and self.proc.is_alive():
            os.kill(self.proc.pid, signal.SIGTERM)
            self.proc.join(5)
            if self.proc.is_alive():
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.join(5)
        self.proc = None
