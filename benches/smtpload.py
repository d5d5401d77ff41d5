"""SMTP load generator and idle-connection holder (asyncio, raw sockets).

Every read has a deadline. A 4xx answer (chasquid 1.11 answers 451 when its in-memory queue
holds 200 messages) is retried on the same session after a short pause, as a real MTA would,
and counted; a 5xx or a broken session is an error that ends the run.
"""

import asyncio
import resource
import time

READ_DEADLINE_S = 30
TEMP_FAIL_PAUSE_S = 0.05


class SmtpError(Exception):
    pass


def raise_fd_limit(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def make_message(index, size, sender, rcpt):
    """A message of exactly `size` bytes on the wire (CRLF lines, none starting with '.')."""
    head = (
        f"From: <{sender}>\r\nTo: <{rcpt}>\r\nSubject: bench message {index}\r\n"
        f"Message-ID: <bench-{index}@client.test>\r\n"
        "Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\n"
    ).encode()
    line = b"x" * 74 + b"\r\n"
    body = bytearray(head)
    while len(body) + len(line) <= size:
        body += line
    pad = size - len(body)
    if pad >= 3:
        body += b"y" * (pad - 2) + b"\r\n"
    return bytes(body)


async def read_reply(reader):
    """One (possibly multi-line) reply: (code, text)."""
    lines = []
    while True:
        raw = await asyncio.wait_for(reader.readline(), READ_DEADLINE_S)
        if not raw:
            raise SmtpError("connection closed by server")
        lines.append(raw.decode("utf-8", "replace").rstrip("\r\n"))
        if len(raw) < 4 or raw[3:4] != b"-":
            break
    try:
        code = int(lines[-1][:3])
    except ValueError:
        raise SmtpError(f"garbage reply: {lines[-1]!r}") from None
    return code, "\n".join(lines)


class Stats:
    def __init__(self):
        self.latencies = []
        self.accepted = 0
        self.temp_failures = 0
        self.first_temp_failure = None
        self.last_250 = None


async def _session(host, port, work, sender, rcpt, stats):
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), READ_DEADLINE_S)
    try:
        code, text = await read_reply(reader)
        if code != 220:
            raise SmtpError(f"greeting: {text}")
        writer.write(b"EHLO loadgen.client.test\r\n")
        code, text = await read_reply(reader)
        if code != 250:
            raise SmtpError(f"EHLO: {text}")
        pipelining = "PIPELINING" in text.upper()
        envelope = f"MAIL FROM:<{sender}>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n".encode()
        while work:
            index = work.pop()
            if not await _one_message(reader, writer, envelope, pipelining, index, stats):
                work.append(index)
                await asyncio.sleep(TEMP_FAIL_PAUSE_S)
        writer.write(b"QUIT\r\n")
        await writer.drain()
        await read_reply(reader)
    finally:
        writer.close()


async def _one_message(reader, writer, envelope, pipelining, index, stats):
    """True when the message got its 250; False on a 4xx (to retry); SmtpError otherwise."""
    # RFC 2920: MAIL, RCPT and DATA may go in one group, DATA last.
    commands = envelope.split(b"\r\n")[:3]
    replies = []
    if pipelining:
        writer.write(envelope)
        for _ in commands:
            replies.append(await read_reply(reader))
    else:
        for cmd in commands:
            writer.write(cmd + b"\r\n")
            replies.append(await read_reply(reader))
            if replies[-1][0] >= 400:
                break
    if replies[-1][0] != 354 or any(c >= 400 for c, _ in replies[:-1]):
        return await _refused(replies, stats, writer, reader)
    writer.write(_MESSAGES[index])
    writer.write(b".\r\n")
    start = time.perf_counter()
    await writer.drain()
    code, text = await read_reply(reader)
    end = time.perf_counter()
    if code == 250:
        stats.latencies.append(end - start)
        stats.accepted += 1
        stats.last_250 = end
        return True
    if 400 <= code < 500:
        _count_temp(stats, text)
        return False
    raise SmtpError(f"end of DATA: {text}")


async def _refused(replies, stats, writer, reader):
    bad = next(((c, t) for c, t in replies if c >= 400), replies[-1])
    if not 400 <= bad[0] < 500:
        raise SmtpError(f"refused: {bad[1]}")
    _count_temp(stats, bad[1])
    if replies[-1][0] == 354:
        # A pipelined DATA got its 354 although RCPT failed (RFC 2920 §3.1): end it empty.
        writer.write(b".\r\n")
        await read_reply(reader)
    writer.write(b"RSET\r\n")
    await read_reply(reader)
    return False


def _count_temp(stats, text):
    stats.temp_failures += 1
    if stats.first_temp_failure is None:
        stats.first_temp_failure = text


# The messages of the current run, built before the clock starts.
_MESSAGES = {}


async def send_load(host, port, count, connections, size, sender, rcpt, deadline_s):
    """Sends `count` messages over `connections` sessions; returns (Stats, start time)."""
    _MESSAGES.clear()
    for i in range(count):
        _MESSAGES[i] = make_message(i, size, sender, rcpt)
    work = list(range(count - 1, -1, -1))
    stats = Stats()
    start = time.perf_counter()
    sessions = [
        _session(host, port, work, sender, rcpt, stats) for _ in range(connections)
    ]
    await asyncio.wait_for(asyncio.gather(*sessions), deadline_s)
    return stats, start


async def hold_idle(host, port, count, sample, settle_s=1.5, parallel=64):
    """Opens `count` connections, reads each greeting, calls `sample()` while all are open."""
    raise_fd_limit(count + 256)
    gate = asyncio.Semaphore(parallel)
    conns = []

    async def one():
        async with gate:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port), READ_DEADLINE_S
            )
            conns.append(writer)
            code, text = await read_reply(reader)
            if code != 220:
                raise SmtpError(f"greeting: {text}")

    try:
        await asyncio.gather(*(one() for _ in range(count)))
        await asyncio.sleep(settle_s)
        return sample()
    finally:
        for w in conns:
            w.close()
        await asyncio.sleep(0.5)
