#!/usr/bin/env python3
"""The varied part of bench/soak.sh's load, beside `herald bench fanout`'s steady subscribers.

- a publisher of mixed sizes (100 B to 64 KB) on topic soak/mixed, ids m-1, m-2, ...; each
  update's data starts with its sequence number and send time;
- reconnecting subscribers of soak/mixed: each reads for a random 5-30 s, disconnects, and
  reconnects with Last-Event-ID; every update must arrive exactly once and in order across
  reconnections (a gap or a duplicate is counted);
- slow readers of soak/mixed: each reads 1 KB every 2 s (the hub closes those that fall out of
  history or stall past its write timeout; they then reconnect with Last-Event-ID too).

Every --window seconds it prints one JSON line: publishes, deliveries, gaps, duplicates,
reconnections, closes by the hub, and the p50/p99 publish-to-receive latency of the window
(reconnecting subscribers only, so replays after a reconnection are left out).
Standard library only.
"""

import argparse
import asyncio
import json
import random
import resource
import time
import urllib.parse

TOPIC = "soak/mixed"


class Stats:
    def __init__(self):
        self.reset()
        self.gaps = 0
        self.duplicates = 0

    def reset(self):
        self.published = 0
        self.delivered = 0
        self.reconnects = 0
        self.closed_by_hub = 0
        self.latencies = []


async def publish_loop(host, port, token, rate, stats, stop):
    seq = 0
    interval = 1.0 / rate
    while not stop.is_set():
        started = time.monotonic()
        seq += 1
        size = random.choice([100, 100, 1000, 1000, 4000, 16000, 64000])
        head = f"{seq} {time.time():.6f} "
        data = head + "x" * max(0, size - len(head))
        body = urllib.parse.urlencode({"topic": TOPIC, "id": f"m-{seq}", "data": data})
        try:
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(
                (
                    f"POST /.well-known/mercure HTTP/1.1\r\nhost: {host}\r\n"
                    f"authorization: Bearer {token}\r\n"
                    "content-type: application/x-www-form-urlencoded\r\n"
                    f"content-length: {len(body)}\r\nconnection: close\r\n\r\n{body}"
                ).encode()
            )
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), 10)
            writer.close()
            if answer.startswith(b"HTTP/1.1 200"):
                stats.published += 1
            else:
                print(json.dumps({"publish_failed": answer[:200].decode(errors="replace")}))
        except Exception as err:  # noqa: BLE001 - reported, the soak goes on
            print(json.dumps({"publish_error": str(err)}))
        await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))


async def subscriber(host, port, token, stats, stop, slow):
    """One subscriber of soak/mixed, for the whole run, across reconnections."""
    last_seq = None  # the sequence number of the last update received
    while not stop.is_set():
        query = urllib.parse.urlencode({"topic": TOPIC})
        head = f"GET /.well-known/mercure?{query} HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {token}\r\n"
        if last_seq is not None:
            head += f"last-event-id: m-{last_seq}\r\n"
        try:
            reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
        except OSError:
            await asyncio.sleep(1)
            continue
        writer.write((head + "\r\n").encode())
        await writer.drain()
        resumed = last_seq is not None
        deadline = time.monotonic() + random.uniform(5, 30)
        buf = b""
        ended_by_hub = False
        try:
            status = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            if not status.startswith(b"HTTP/1.1 200"):
                await asyncio.sleep(1)
                writer.close()
                continue
            while not stop.is_set() and (slow or time.monotonic() < deadline):
                if slow:
                    chunk = await reader.read(1024)
                    await asyncio.sleep(2)
                else:
                    chunk = await asyncio.wait_for(reader.read(65536), max(0.1, deadline - time.monotonic()))
                if not chunk:
                    ended_by_hub = True
                    break
                buf += chunk
                # Chunked framing lines are not SSE lines; data lines are what matter.
                *events, buf = buf.split(b"\n\n")
                for event in events:
                    for line in event.split(b"\n"):
                        if not line.startswith(b"data: "):
                            continue
                        fields = line[6:].split(b" ", 2)
                        try:
                            seq, sent = int(fields[0]), float(fields[1])
                        except (ValueError, IndexError):
                            continue
                        if last_seq is not None and seq <= last_seq:
                            stats.duplicates += 1
                            continue
                        if last_seq is not None and seq != last_seq + 1:
                            stats.gaps += seq - last_seq - 1
                        last_seq = seq
                        stats.delivered += 1
                        if not slow and not resumed:
                            stats.latencies.append(time.time() - sent)
                        resumed = False
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, OSError):
            pass
        if ended_by_hub:
            stats.closed_by_hub += 1
        writer.close()
        stats.reconnects += 1


def percentile(values, p):
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--publisher-token", required=True)
    parser.add_argument("--subscriber-token", required=True)
    parser.add_argument("--rate", type=float, default=5)
    parser.add_argument("--reconnecting", type=int, default=500)
    parser.add_argument("--slow", type=int, default=500)
    parser.add_argument("--seconds", type=int, default=3600)
    parser.add_argument("--window", type=int, default=60)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    stats = Stats()
    stop = asyncio.Event()
    tasks = [asyncio.create_task(publish_loop(args.host, args.port, args.publisher_token, args.rate, stats, stop))]
    for i in range(args.reconnecting + args.slow):
        tasks.append(
            asyncio.create_task(
                subscriber(args.host, args.port, args.subscriber_token, stats, stop, i >= args.reconnecting)
            )
        )
        if i % 100 == 99:
            await asyncio.sleep(0.1)
    started = time.monotonic()
    while time.monotonic() - started < args.seconds:
        await asyncio.sleep(args.window)
        p50, p99 = percentile(stats.latencies, 0.5), percentile(stats.latencies, 0.99)
        print(
            json.dumps(
                {
                    "t": round(time.monotonic() - started),
                    "published": stats.published,
                    "delivered": stats.delivered,
                    "reconnects": stats.reconnects,
                    "closed_by_hub": stats.closed_by_hub,
                    "gaps_total": stats.gaps,
                    "duplicates_total": stats.duplicates,
                    "p50_ms": None if p50 is None else round(p50 * 1000, 2),
                    "p99_ms": None if p99 is None else round(p99 * 1000, 2),
                }
            ),
            flush=True,
        )
        stats.reset()
    stop.set()
    await asyncio.sleep(3)
    for task in tasks:
        task.cancel()


if __name__ == "__main__":
    asyncio.run(main())
