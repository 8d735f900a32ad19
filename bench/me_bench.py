"""Personal pushes at scale: 10,000 signed-in WebSocket clients on one board of 100,000
entries, 20 writes a second spread over the board.

Run from the project root: ``.venv/bin/python bench/me_bench.py [--clients N]
[--entries N] [--rate W] [--seconds S]``.

1. Writes the board (``default``, N entries, scores 0-50,000) to a fresh SQLite file.
2. Starts ``scoreboard serve`` on it, pinned to core 0; everything else runs on core 1.
3. Opens the clients (every tenth user of the board, spread over it), each signing in
   with ``{"type": "auth"}`` as its user, and waits for every first ``me`` message.
4. Measures the server's CPU while idle, then sends W writes a second for S seconds,
   each an increment of 1-100 points for a random connected user (one at a time per
   user): such a write passes the users between its old and new score, of whom one in
   ten is connected and sees its rank change.
5. Reports the write-to-receive latency of the writer's own ``me`` message (from
   sending the write to the message with the user's new score), the ``me`` messages
   sent per write (from the server's metrics), and the server's CPU per write (its CPU
   over the writes, less what it spends idle with the clients connected).

Target (issue 14): ``me`` write-to-receive p99 at most 250 ms. The board fan-out
numbers to put beside it come from ``bench/fanout_bench.py`` run just after.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson
import websockets

from board_bench import make_board
from procs import cpu_seconds, free_port, load_average, stop, token, wait_until_up

ROOT = Path(__file__).resolve().parent.parent
SECRET = "me-bench-secret-that-is-long-enough-for-hs256"
CONNECTING_AT_ONCE = 200
IDLE_SECONDS = 5.0


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


class Clients:
    """The connected users: each one's socket, last score seen and pending write."""

    def __init__(self, url: str, users: list[str]) -> None:
        self.url = url
        self.users = users
        self.first = asyncio.Event()
        self.firsts = 0
        self.score: dict[str, int | None] = {}
        self.sent_at: dict[str, float] = {}  # a write in flight: when it was sent
        self.latencies: list[float] = []
        self.me_messages = 0
        self.tasks: list[asyncio.Task[None]] = []
        self.errors: list[str] = []

    async def open(self) -> None:
        gate = asyncio.Semaphore(CONNECTING_AT_ONCE)
        for user in self.users:
            self.tasks.append(asyncio.create_task(self._client(user, gate)))
        await asyncio.wait_for(self.first.wait(), 300)

    async def _client(self, user: str, gate: asyncio.Semaphore) -> None:
        try:
            async with gate:
                ws = await websockets.connect(self.url, compression=None, ping_interval=None,
                                              max_size=2**20, open_timeout=60)
                await ws.send(orjson.dumps({"type": "auth",
                                            "token": token(SECRET, user)}).decode())
            async with ws:
                async for raw in ws:
                    if b'"type":"me"' not in (raw if isinstance(raw, bytes) else raw.encode()):
                        continue
                    now = time.perf_counter()
                    message = orjson.loads(raw)
                    self.me_messages += 1
                    if user not in self.score:
                        self.firsts += 1
                        if self.firsts == len(self.users):
                            self.first.set()
                    elif message["score"] != self.score[user] and user in self.sent_at:
                        self.latencies.append(now - self.sent_at.pop(user))
                    self.score[user] = message["score"]
        except Exception as error:  # counted and reported
            self.errors.append(f"{user}: {error!r}"[:200])

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def write_load(base: str, clients: Clients, rate: float, seconds: float) -> int:
    rng = random.Random(7)
    sent = 0
    async with httpx.AsyncClient(base_url=base, timeout=30,
                                 limits=httpx.Limits(max_connections=64)) as http:
        async def one(user: str) -> None:
            headers = {"Authorization": f"Bearer {token(SECRET, user)}"}
            clients.sent_at[user] = time.perf_counter()
            r = await http.post("/score", headers=headers,
                                json={"user_id": user, "increment": rng.randint(1, 100)})
            if r.status_code != 200:
                clients.errors.append(f"write {r.status_code}: {r.text[:100]}")

        pending: set[asyncio.Task[None]] = set()
        start = time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            due = int(elapsed * rate) + 1
            while sent < due:
                user = rng.choice(clients.users)
                if user in clients.sent_at:
                    continue  # one write at a time per user
                task = asyncio.create_task(one(user))
                pending.add(task)
                task.add_done_callback(pending.discard)
                sent += 1
            await asyncio.sleep(0.005)
        await asyncio.gather(*pending)
    await asyncio.sleep(1.0)  # the last writes' messages
    return sent


async def measure(base: str, pid: int, n_clients: int, entries: int, rate: float,
                  seconds: float) -> dict[str, object]:
    step = max(1, entries // n_clients)
    users = [f"player-{i:07d}" for i in range(0, entries, step)][:n_clients]
    clients = Clients(base.replace("http://", "ws://") + "/scores/ws", users)
    started = time.perf_counter()
    await clients.open()
    connect_s = time.perf_counter() - started
    async with httpx.AsyncClient(base_url=base) as http:
        await asyncio.sleep(1.0)
        idle_from = cpu_seconds(pid)
        await asyncio.sleep(IDLE_SECONDS)
        idle_rate = (cpu_seconds(pid) - idle_from) / IDLE_SECONDS
        before = (await http.get("/metrics")).text
        me_before = clients.me_messages
        cpu_from, t_from = cpu_seconds(pid), time.perf_counter()
        writes = await write_load(base, clients, rate, seconds)
        cpu = cpu_seconds(pid) - cpu_from
        window = time.perf_counter() - t_from
        after = (await http.get("/metrics")).text
    await clients.close()
    lat = sorted(clients.latencies)
    sent = (metric(after, "scoreboard_me_pushes_total")
            - metric(before, "scoreboard_me_pushes_total"))
    return {
        "clients": n_clients, "connect_s": round(connect_s, 1), "writes": writes,
        "own_me": {"n": len(lat), "p50_ms": round(statistics.median(lat) * 1000, 1),
                   "p99_ms": round(lat[int(len(lat) * 0.99) - 1] * 1000, 1),
                   "max_ms": round(lat[-1] * 1000, 1)} if lat else {"n": 0},
        "me_sent_per_write": round(sent / max(writes, 1), 2),
        "me_received": clients.me_messages - me_before,
        "coalesced": metric(after, "scoreboard_me_coalesced_total")
        - metric(before, "scoreboard_me_coalesced_total"),
        "server_cpu_idle_pct": round(idle_rate * 100, 1),
        "server_cpu_per_write_us": round((cpu - idle_rate * window) / max(writes, 1) * 1e6),
        "errors": clients.errors[:5],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args(argv)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    print(f"load average before: {load_average()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="me-bench-") as tmp:
        data = Path(tmp)
        make_board(data / "scoreboard.db", args.entries)
        port = free_port()
        log = data / "server.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SCOREBOARD_")}
        env.update({"SCOREBOARD_DATA_DIR": str(data), "SCOREBOARD_JWT_SECRET": SECRET,
                    "SCOREBOARD_RATE_LIMIT": "1000000/minute",
                    "SCOREBOARD_LIVE_MAX": str(args.clients + 1000),
                    "SCOREBOARD_LIVE_MAX_PER_ADDRESS": str(args.clients + 1000),
                    "SCOREBOARD_LOG_LEVEL": "warning"})
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                ["taskset", "-c", "0", sys.executable, "-m", "scoreboard", "serve",
                 "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard)))
        try:
            wait_until_up(proc, f"http://127.0.0.1:{port}/readyz", log)
            os.sched_setaffinity(0, {1})
            result = asyncio.run(measure(f"http://127.0.0.1:{port}", proc.pid, args.clients,
                                         args.entries, args.rate, args.seconds))
        finally:
            stop(proc)
            problems = [line for line in log.read_text(errors="replace").splitlines()
                        if '"level": "error"' in line or '"level":"error"' in line]
            if problems:
                print(f"{len(problems)} errors in the server's log; the first:\n{problems[0]}")
    for key, value in result.items():
        print(f"{key:<26} {value}")
    own = result["own_me"]
    p99 = own.get("p99_ms") if isinstance(own, dict) else None
    verdict = "met" if p99 is not None and p99 <= 250 else "missed"
    print(f"me write-to-receive p99: {p99} ms (target <= 250 ms: {verdict})")
    print(f"load average after: {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
