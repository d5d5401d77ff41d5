"""The idle-connection holder of the memory figure (asyncio, raw sockets); every read has a
deadline. The load itself is `tambo-bench load` (benches/tambo-bench/load.rs)."""

import asyncio
import resource

READ_DEADLINE_S = 30


class SmtpError(Exception):
    pass


def raise_fd_limit(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


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
