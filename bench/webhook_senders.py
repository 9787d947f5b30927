"""The sending side of bench/webhook_bench.py, in its own process (stdlib only).

    python bench/webhook_senders.py PORT SENDERS DELIVERIES.jsonl

Each line of the file is ``[body, stripe_signature_header]``. ``SENDERS``
keep-alive HTTP/1.1 connections on one asyncio loop each send their share
(``deliveries[i::SENDERS]``) one after the other, as Stripe waits for an answer
before its next attempt. Prints JSON: every delivery's latency (seconds), the
count of each status, when sending began (``time.time()``) and the wall time
until the last answer. A minimal client on purpose: its CPU per request is a
small fraction of the server's, so the latencies measure the server.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter


def main(port: int, senders: int, path: str) -> None:
    """The sending process: ``senders`` connections, latencies and statuses as JSON."""
    with open(path) as f:
        deliveries = [json.loads(line) for line in f]
    chunks = [deliveries[i::senders] for i in range(senders)]
    latencies: list[float] = []
    statuses: Counter[int] = Counter()

    async def run(chunk: list) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for body, header in chunk:
                data = body.encode()
                request = (
                    "POST /api/payments/webhook HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    "Content-Type: application/json\r\n"
                    f"Stripe-Signature: {header}\r\nContent-Length: {len(data)}\r\n\r\n"
                ).encode() + data
                began = time.perf_counter()
                writer.write(request)
                await writer.drain()
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.split(b"\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in lines
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
                latencies.append(time.perf_counter() - began)
                statuses[int(lines[0].split()[1])] += 1
        finally:
            writer.close()

    async def all_senders() -> None:
        await asyncio.gather(*(run(c) for c in chunks))

    began, started = time.time(), time.perf_counter()
    asyncio.run(all_senders())
    elapsed = time.perf_counter() - started
    print(
        json.dumps(
            {"latencies": latencies, "statuses": statuses, "began": began, "elapsed": elapsed}
        )
    )


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
