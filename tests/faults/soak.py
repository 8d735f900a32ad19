"""Soak: minutes of mixed load with thousands of live clients; memory, open files,
threads, asyncio tasks and live connections must stay flat and the p99 steady, and
nothing be lost.

    python -m tests.faults.soak --minutes 10 --clients 2000
    python -m tests.faults.soak --minutes 10 --clients 2000 --backend postgres-redis

Every ``--sample`` seconds it prints the server's resident memory, open files,
threads, asyncio tasks and live connections (``/metrics``) and the window's p50/p99 of POST /score and
GET /scores. At the end it compares the last minute with the first one after the
warm-up, runs the fault checker's invariants, and exits 1 when anything grew or broke.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import re
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.faults import checker
from tests.faults.cluster import Cluster, cluster
from tests.faults.history import History
from tests.faults.load import Load, LoadShape

WARM_UP_SECONDS = 60.0
# How much the last minute may exceed the first (after the warm-up) and still be flat.
MEMORY_GROWTH = 1.25
MEMORY_SLACK_MB = 16.0
P99_GROWTH = 2.0
P99_FLOOR_MS = 50.0


@dataclass
class Sample:
    at: float
    rss_mb: float
    files: int
    threads: int
    tasks: int
    live: int
    post_p50: float
    post_p99: float
    get_p99: float
    events: int


def _proc(pid: int) -> tuple[float, int, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]
    threads = int(re.search(r"Threads:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    return rss, len(list(Path(f"/proc/{pid}/fd").iterdir())), threads


def _quantile(values: list[float], q: float) -> float:
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100)[int(q * 100) - 1]


class LiveClients:
    """``count`` raw SSE connections that read everything and count the events."""

    def __init__(self, port: int, count: int) -> None:
        self.port = port
        self.count = count
        self.events = 0
        self.reconnects = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._running = True

    async def start(self) -> None:
        for n in range(self.count):
            self._tasks.append(asyncio.create_task(self._client()))
            if n % 100 == 99:
                await asyncio.sleep(0.1)  # connect in waves, not one burst

    async def _client(self) -> None:
        while self._running:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                try:
                    writer.write(b"GET /scores/stream HTTP/1.1\r\nHost: soak\r\n\r\n")
                    while chunk := await reader.read(65536):
                        self.events += chunk.count(b"event: scores")
                finally:
                    writer.close()
            self.reconnects += 1
            await asyncio.sleep(1 + random.random())

    async def stop(self) -> None:
        self._running = False
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def _reader(c: Cluster, latencies: list[float], running: asyncio.Event) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        while not running.is_set():
            started = time.monotonic()
            with contextlib.suppress(httpx.HTTPError):
                await client.get(c.urls[0] + "/scores")
                latencies.append(time.monotonic() - started)
            await asyncio.sleep(0.02)


async def soak(root: Path, minutes: float, clients: int, backend: str,
               sample_seconds: float) -> int:
    env = {"SCOREBOARD_LIVE_MAX_PER_ADDRESS": str(clients + 100)}
    history = History()
    samples: list[Sample] = []
    async with cluster(root, backend, 1, env=env) as c:
        load = Load(c, history, LoadShape(users=20, readers=2, watchers=2, think_seconds=0.05),
                    random.Random(7), f"soak{int(time.time())}")
        live = LiveClients(c.servers[0].port, clients)
        await live.start()
        load.start()
        done = asyncio.Event()
        gets: list[float] = []
        reader = asyncio.create_task(_reader(c, gets, done))
        started = time.monotonic()
        seen_attempts = 0
        async with httpx.AsyncClient(timeout=10) as client:
            while time.monotonic() - started < minutes * 60:
                await asyncio.sleep(sample_seconds)
                attempts = [a for op in history.operations for a in op.attempts]
                posts = [a.ended - a.started for a in attempts[seen_attempts:]
                         if a.status == 200 and a.ended]
                seen_attempts = len(attempts)
                window, gets[:] = list(gets), []
                pid = c.pid(0)
                if pid is None:
                    print("the server died", file=sys.stderr)
                    return 1
                rss, files, threads = _proc(pid)
                metrics = (await client.get(c.urls[0] + "/metrics")).text
                found = re.search(r"^scoreboard_live_connections ([\d.e+]+)", metrics, re.M)
                tasks = re.search(r"^scoreboard_asyncio_tasks ([\d.e+]+)", metrics, re.M)
                s = Sample(time.monotonic() - started, rss, files, threads,
                           int(float(tasks.group(1))) if tasks else -1,
                           int(float(found.group(1))) if found else -1,
                           _quantile(posts, 0.5) * 1000, _quantile(posts, 0.99) * 1000,
                           _quantile(window, 0.99) * 1000, live.events)
                samples.append(s)
                print(f"{s.at:6.0f}s rss {s.rss_mb:7.1f} MB  files {s.files:5}  threads "
                      f"{s.threads:3}  tasks {s.tasks:5}  live {s.live:5}"
                      f"  POST p50 {s.post_p50:6.1f} p99 "
                      f"{s.post_p99:6.1f} ms ({len(posts)})  GET p99 {s.get_p99:6.1f} ms  "
                      f"events {s.events}", flush=True)
        done.set()
        await reader
        await live.stop()
        await load.stop()
        store = await c.snapshot()
        violations = history.live_violations + checker.check_history(history, store)
    return _verdict(samples, sample_seconds, history, violations, live.reconnects)


def _verdict(samples: list[Sample], sample_seconds: float, history: History,
             violations: list[str], reconnects: int) -> int:
    per_minute = max(1, int(60 / sample_seconds))
    warm = [s for s in samples if s.at > WARM_UP_SECONDS] or samples
    first, last = warm[:per_minute], warm[-per_minute:]
    problems = list(violations)

    def peak(window: list[Sample], field: str) -> float:
        return float(max(getattr(s, field) for s in window))

    if peak(last, "rss_mb") > peak(first, "rss_mb") * MEMORY_GROWTH + MEMORY_SLACK_MB:
        problems.append(f"memory grew: {peak(first, 'rss_mb'):.0f} -> "
                        f"{peak(last, 'rss_mb'):.0f} MB")
    for field in ("files", "threads", "tasks", "live"):
        if peak(last, field) > peak(first, field) * 1.05 + 8:
            problems.append(f"{field} grew: {peak(first, field)} -> {peak(last, field)}")
    for field in ("post_p99", "get_p99"):
        limit = max(peak(first, field) * P99_GROWTH, P99_FLOOR_MS)
        if statistics.median(getattr(s, field) for s in last) > limit:
            problems.append(f"{field} not steady: first minute peak {peak(first, field):.1f} "
                            f"ms, last minute median {statistics.median(getattr(s, field) for s in last):.1f} ms")
    counts = history.counts()
    print(f"operations: ok {counts['ok']}, refused {counts['refused']}, unknown "
          f"{counts['unknown']}; live reconnects {reconnects}")
    print(f"invariant and flatness problems: {len(problems)}")
    for p in problems[:50]:
        print(f"  {p}")
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.faults.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--clients", type=int, default=2000, help="live SSE connections")
    parser.add_argument("--backend", choices=("sqlite", "postgres-redis"), default="sqlite")
    parser.add_argument("--sample", type=float, default=10, help="seconds between samples")
    args = parser.parse_args(argv)
    # Each live client holds a descriptor here and in the server (which inherits this).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, args.clients * 2 + 1024)),
                                                hard))
    with tempfile.TemporaryDirectory(prefix="soak-") as root:
        return asyncio.run(soak(Path(root), args.minutes, args.clients, args.backend,
                                args.sample))


if __name__ == "__main__":
    sys.exit(main())
