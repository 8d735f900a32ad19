"""One board of a million entries: rank and around-me latency, rebuild time, memory.

Run from the project root: ``.venv/bin/python bench/board_bench.py [--entries N]``.

1. Writes N entries (many ties) to a fresh SQLite file, as the store holds them.
2. In a child process pinned to core 0, the way the server starts: opens the store,
   reads the board's entries and rebuilds the memory ranking — timed — and reports the
   process's RSS before and after (the memory the ranking holds per entry).
3. Times ``get`` (a user's rank) and ``around`` (5 above, 5 below) on that ranking for
   random users: p50, p99, max.
4. The same board into a private ``redis-server`` (pinned to core 1): the rebuild, then
   ``get`` and ``around`` through Redis, one round trip each.

Targets (issue 12): rank and around-me p99 at most 1 ms on the memory ranking and 2 ms
through Redis, a rebuild from SQLite in at most 5 s, and under 256 bytes per entry.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from procs import load_average, private_redis

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = 20_000
SERVER_GC = (50_000, 20, 100)  # the collector thresholds scoreboard serve sets


def make_board(path: Path, entries: int) -> None:
    """The SQLite file a server would have: the board ``default`` with ``entries`` users."""
    from scoreboard.store.sqlite import SQLiteStore

    async def create() -> None:
        store = SQLiteStore(path)
        await store.open()
        await store.close()

    asyncio.run(create())
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("BEGIN")
    rng = random.Random(1)
    conn.executemany(
        "INSERT INTO entries VALUES ('default', 1, ?, ?, ?, 0)",
        ((f"player-{i:07d}", rng.randint(0, 50_000), i + 1) for i in range(entries)))
    conn.executemany("INSERT INTO users VALUES (?, ?)",
                     ((f"player-{i:07d}", f"Player {i}") for i in range(0, entries, 10)))
    # Each seq is a ledger id: the next write's id comes after them, as in a real store
    # (an entry whose seq is not newer than the one held is stale to the ranking).
    conn.execute("DELETE FROM sqlite_sequence WHERE name = 'ledger'")
    conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('ledger', ?)", (entries,))
    conn.execute("COMMIT")
    conn.close()


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"p50_ms": statistics.median(ordered) * 1000,
            "p99_ms": ordered[int(len(ordered) * 0.99)] * 1000, "max_ms": ordered[-1] * 1000}


async def time_reads(ranking: object, users: list[str]) -> dict[str, dict[str, float]]:
    got, around = [], []
    for user in users:
        started = time.perf_counter()
        found = await ranking.get("default", user)  # type: ignore[attr-defined]
        got.append(time.perf_counter() - started)
        assert found is not None
        started = time.perf_counter()
        window = await ranking.around("default", user, 5, 5)  # type: ignore[attr-defined]
        around.append(time.perf_counter() - started)
        assert window is not None and len(window) == 11
    return {"rank": percentiles(got), "around": percentiles(around)}


def child(db: Path, redis_url: str | None, entries: int) -> None:
    """Runs in its own process: what a starting server does, measured."""
    import gc

    from scoreboard.ranking.memory import MemoryRanking
    from scoreboard.service import load_ranking
    from scoreboard.store.sqlite import SQLiteStore

    gc.set_threshold(*SERVER_GC)

    async def run() -> dict[str, object]:
        store = SQLiteStore(db)
        await store.open()
        (board,) = await store.boards()
        rng = random.Random(2)
        users = [f"player-{rng.randrange(entries):07d}" for _ in range(SAMPLES)]
        gc.collect()
        before = rss_kib()
        started = time.perf_counter()
        ranking = MemoryRanking()
        await load_ranking(store, ranking, [board])  # what a starting server does
        rebuild_s = time.perf_counter() - started
        gc.collect()
        after = rss_kib()
        out: dict[str, object] = {
            "entries": entries, "rebuild_s": rebuild_s,
            "bytes_per_entry": (after - before) * 1024 / entries,
            "memory": await time_reads(ranking, users),
        }
        if redis_url is not None:
            from redis.asyncio import Redis

            from scoreboard.ranking.redis import RedisRanking

            client = Redis.from_url(redis_url)
            shared = RedisRanking(client, "{bench}:")
            started = time.perf_counter()
            await load_ranking(store, shared, [board])
            out["redis_rebuild_s"] = time.perf_counter() - started
            out["redis"] = await time_reads(shared, users)
            await client.aclose()
        await store.close()
        return out

    print("RESULT " + json.dumps(asyncio.run(run())))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--no-redis", action="store_true", help="the memory ranking only")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        db, redis_url, entries = args.child
        child(Path(db), None if redis_url == "-" else redis_url, int(entries))
        return 0
    print(f"load average: {load_average()}")
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "board.db"
        started = time.perf_counter()
        make_board(db, args.entries)
        print(f"{args.entries:,} entries written in {time.perf_counter() - started:.1f} s")
        with private_redis(Path(tmp), core=1) as redis:
            url = "-" if args.no_redis else redis.url
            proc = subprocess.run(
                ["taskset", "-c", "0", sys.executable, __file__, "--child", str(db), url,
                 str(args.entries)], capture_output=True, text=True, check=False,
                cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    if proc.returncode != 0:
        print(proc.stdout, proc.stderr, file=sys.stderr)
        return 1
    result = json.loads(proc.stdout.split("RESULT ", 1)[1])
    report(result)
    return 0


def report(r: dict[str, object]) -> None:
    def reads(name: str, target_ms: float) -> None:
        found = r.get(name)
        if not isinstance(found, dict):
            return
        for op, stats in found.items():
            met = stats["p99_ms"] <= target_ms
            print(f"  {name:6} {op:6}  p50 {stats['p50_ms']:.3f} ms  p99 {stats['p99_ms']:.3f} "
                  f"ms  max {stats['max_ms']:.2f} ms  (target p99 <= {target_ms} ms: "
                  f"{'met' if met else 'MISSED'})")

    print(f"one board of {r['entries']:,} entries")
    print(f"  rebuild from SQLite into memory: {r['rebuild_s']:.2f} s (target <= 5 s: "
          f"{'met' if float(r['rebuild_s']) <= 5 else 'MISSED'})")  # type: ignore[arg-type]
    print(f"  memory per entry: {r['bytes_per_entry']:.0f} bytes (aim < 256)")
    if "redis_rebuild_s" in r:
        print(f"  rebuild into Redis: {r['redis_rebuild_s']:.1f} s")
    reads("memory", 1.0)
    reads("redis", 2.0)


if __name__ == "__main__":
    sys.exit(main())
