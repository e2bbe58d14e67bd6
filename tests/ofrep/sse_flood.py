"""An SSE server that floods: run as a subprocess, it prints its port, then answers every
GET with ``text/event-stream`` and writes ``refetchEvaluation`` events (a new etag each)
at ``--rate`` events/s for ``--seconds``, then ends the stream. 127.0.0.1 only.

A process of its own, so the flood costs the provider's process nothing but reading.

    python -m tests.ofrep.sse_flood --rate 77000 --seconds 2
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import time

TICK_S = 0.01
_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Connection: close\r\n\r\n"
)


async def _serve(rate: int, seconds: float) -> None:
    counter = itertools.count()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            writer.write(_HEAD)
            per_tick = max(1, int(rate * TICK_S))
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                started = time.monotonic()
                chunk = b"".join(
                    b'data: {"type":"refetchEvaluation","etag":"e%d"}\n\n' % next(counter)
                    for _ in range(per_tick)
                )
                writer.write(chunk)
                await writer.drain()
                await asyncio.sleep(max(0.0, TICK_S - (time.monotonic() - started)))
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        # Bounded: the process ends by itself even if nobody connects.
        await asyncio.sleep(seconds + 30)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=int, default=77_000)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    try:
        asyncio.run(_serve(args.rate, args.seconds))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
