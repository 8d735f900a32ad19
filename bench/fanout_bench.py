"""Fan-out benchmark: write-to-receive latency of GET /scores/stream with many SSE clients.

Run from the project root: ``.venv/bin/python bench/fanout_bench.py [--clients 1000,5000]``.
The server is pinned to core 0 and this process (the load generator: every SSE client
and the writer) to core 1. Each client count gets a fresh server and database. See
bench/README.md for what is measured, the latency definition and the targets.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import resource
import secrets
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from array import array
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import cast

import httpx

from procs import free_port, stop, token, wait_until_up

try:  # uvicorn[standard] brings uvloop; plain asyncio works too, only slower
    import uvloop

    LOOP_FACTORY: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
except ImportError:  # pragma: no cover
    LOOP_FACTORY = None

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS = BENCH_DIR / "results" / "fanout.json"
DEFAULT_PUSH_MS = 100  # the server's default SCOREBOARD_PUSH_INTERVAL_MS
TARGET_CLIENTS = 10_000  # SSE clients held by one server process
TARGET_P99_MS = 150.0  # write-to-receive p99, with the default push interval
TARGET_KB_PER_CONN = 16.0  # server RSS per idle connection
FD_MARGIN = 256  # descriptors beyond one per client: listener, database, log, POSTs
CLIENT_BUSY = 0.9  # load generator CPU share above which its latencies are suspect
LAG_STEP = 0.01  # event-loop lag probe period, seconds

LATENCY_DEFINITION = (
    "latency = time a client received an event - send time of the OLDEST write that "
    "event is the first to show that client (ledger ids after its previous event's id, "
    "up to this one's); coalesced writes count once, by their oldest; one sample per "
    "(client, event) after the snapshot"
)


# --- command line -----------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=client_counts, default=[1000, 5000, 10000],
                        help="comma-separated SSE client counts, one fresh server each")
    parser.add_argument("--rate", type=float, default=20.0,
                        help="top-10 changes (POST /score) per second")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of writes")
    parser.add_argument("--push-interval-ms", type=int, default=None,
                        help=f"SCOREBOARD_PUSH_INTERVAL_MS (server default {DEFAULT_PUSH_MS})")
    parser.add_argument("--batch", type=int, default=500,
                        help="connections opened at once; uvicorn's accept backlog is 2048")
    parser.add_argument("--connect-timeout", type=float, default=60.0,
                        help="seconds a batch may take to get every snapshot")
    parser.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (logs, db)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="where to write JSON")
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.duration <= 0 or args.batch < 1:
        parser.error("--rate, --duration and --batch must be positive")
    return args


def client_counts(text: str) -> list[int]:
    counts = [int(part) for part in text.split(",") if part.strip()]
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("a comma-separated list of positive integers")
    return counts


# --- limits and /proc -------------------------------------------------------------


def raise_fd_limit(need: int) -> int:
    """Soft RLIMIT_NOFILE up to the hard limit; exits with a clear message if short."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard != resource.RLIM_INFINITY and hard < need:
        sys.exit(
            f"open-file hard limit is {hard}, but {need} are needed (one per client plus "
            f"{FD_MARGIN}); raise it (ulimit -Hn / limits.conf / docker --ulimit "
            "nofile=...) or pass smaller --clients"
        )
    return hard


def child_fd_limit() -> None:
    """preexec_fn for the server: all the descriptors it may have (one per client)."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def proc_fd_limit(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft = line.split()[3]
            return sys.maxsize if soft == "unlimited" else int(soft)
    return 0


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/<pid>/stat (fields 14 and 15)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rfind(")") + 2:].split()  # comm may contain spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


# --- the server -------------------------------------------------------------------


@dataclass
class Server:
    """One `scoreboard serve` on a fresh data dir; `proc.pid` is the server itself
    (taskset and the console script's shebang both exec)."""

    dir: Path
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.dir / "server.log"



def server_env(data_dir: Path, secret: str, max_increment: int,
               push_ms: int | None) -> dict[str, str]:
    # Drop inherited SCOREBOARD_* so a developer's shell cannot change what is measured.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCOREBOARD_")}
    env |= {
        "SCOREBOARD_DATA_DIR": str(data_dir),
        "SCOREBOARD_JWT_SECRET": secret,
        "SCOREBOARD_RATE_LIMIT": "1000000/minute",
        "SCOREBOARD_MAX_INCREMENT": str(max_increment),  # write i adds i + 1: always on top
        "SCOREBOARD_LIVE_MAX": "20000",
        "SCOREBOARD_LIVE_MAX_PER_ADDRESS": "20000",  # every client is 127.0.0.1
        "SCOREBOARD_LOG_LEVEL": "warning",  # no request lines: what is logged is news
    }
    if push_ms is not None:
        env["SCOREBOARD_PUSH_INTERVAL_MS"] = str(push_ms)
    return env


def start_server(tmp: Path, name: str, secret: str, max_increment: int,
                 push_ms: int | None, servers: list[Server]) -> Server:
    run_dir = tmp / name
    (run_dir / "data").mkdir(parents=True)
    port = free_port()
    cmd = [
        "taskset", "-c", "0", str(ROOT / ".venv/bin/scoreboard"),
        "serve", "--host", "127.0.0.1", "--port", str(port),
    ]
    env = server_env(run_dir / "data", secret, max_increment, push_ms)
    with open(run_dir / "server.log", "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                preexec_fn=child_fd_limit)
    server = Server(run_dir, port, proc)
    servers.append(server)  # registered before waiting, so cleanup stops it either way
    wait_until_up(server.proc, f"{server.url}/healthz", server.log)
    return server





@contextmanager
def bench_dir(keep_tmp: bool) -> Iterator[tuple[Path, list[Server]]]:
    tmp = Path(tempfile.mkdtemp(prefix="scoreboard-fanout-"))
    servers: list[Server] = []
    try:
        yield tmp, servers
    finally:
        for server in servers:
            stop(server.proc)
        if keep_tmp:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


# --- SSE clients ------------------------------------------------------------------


class Fleet:
    """What all clients of one round share: how many have their snapshot, or failed."""

    def __init__(self) -> None:
        self.expected = 0
        self.ready = 0
        self.failures: Counter[str] = Counter()
        self.lost = 0  # connections that ended while they should have stayed open
        self.largest_head = 0  # bytes in the largest response head seen
        self.closing = False
        self.settled = asyncio.Event()

    def expect(self, count: int) -> None:
        self.expected += count
        self.settled.clear()
        self._check()

    def first_event(self) -> None:
        self.ready += 1
        self._check()

    def fail(self, reason: str, count: int = 1) -> None:
        self.failures[reason] += count
        self._check()

    @property
    def waiting(self) -> int:
        return self.expected - self.ready - sum(self.failures.values())

    def _check(self) -> None:
        if self.ready + sum(self.failures.values()) >= self.expected:
            self.settled.set()


class SseClient(asyncio.Protocol):
    """A raw HTTP/1.1 SSE client that keeps only each event's id and receive time.

    10,000 of these share one core at ~100k events/s, so the per-read work is two
    ``bytes.find`` calls per event. Frames arrive chunk-encoded, one frame per chunk,
    so a chunk header never falls inside an ``id:`` line.
    """

    __slots__ = ("fleet", "head", "ids", "in_body", "request", "rest", "times", "transport")

    def __init__(self, fleet: Fleet, request: bytes) -> None:
        self.fleet = fleet
        self.request = request
        self.transport: asyncio.Transport | None = None
        self.head = bytearray()
        self.in_body = False
        self.rest = b""  # an ``id:`` line cut by a read boundary
        self.ids: array[int] = array("q")
        self.times: array[float] = array("d")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, but have its methods.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()  # first thing: the receive time of every event in `data`
        if not self.in_body:
            data = self._response_head(data)
            if not data:
                return
        buf = self.rest + data if self.rest else data
        had = len(self.ids)
        start = 0
        while (i := buf.find(b"\nid: ", start)) >= 0:
            end = buf.find(b"\n", i + 5)
            if end < 0:
                self.rest = buf[i:]
                break
            self.ids.append(int(buf[i + 5:end]))
            self.times.append(now)
            start = end
        else:
            self.rest = buf[-4:]  # a "\nid: " may straddle this read and the next
        if had == 0 and self.ids:
            self.fleet.first_event()

    def _response_head(self, data: bytes) -> bytes:
        """Accumulate the response head; returns the body bytes after it, if any."""
        searched = max(0, len(self.head) - 3)  # heads can be large: never rescan
        self.head += data
        end = self.head.find(b"\r\n\r\n", searched)
        if end < 0:
            return b""
        self.fleet.largest_head = max(self.fleet.largest_head, end + 4)
        status = bytes(self.head[: self.head.find(b"\r\n")])
        if not status.startswith(b"HTTP/1.1 200"):
            self.fleet.fail(status.decode("latin-1")[:60])
            if self.transport is not None:
                self.transport.close()
            return b""
        self.in_body = True
        body, self.head = bytes(self.head[end + 4:]), bytearray()
        return body

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.fleet.closing and self.in_body:
            self.fleet.lost += 1

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def stream_request(port: int) -> bytes:
    return (f"GET /scores/stream HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Accept: text/event-stream\r\n\r\n").encode()


async def connect_batch(fleet: Fleet, port: int, count: int) -> list[SseClient]:
    loop = asyncio.get_running_loop()
    request = stream_request(port)
    fleet.expect(count)
    results = await asyncio.gather(
        *(loop.create_connection(lambda: SseClient(fleet, request), "127.0.0.1", port)
          for _ in range(count)),
        return_exceptions=True,
    )
    clients = []
    for result in results:
        if isinstance(result, BaseException):
            fleet.fail(f"connect: {type(result).__name__}: {result}"[:80])
        else:
            clients.append(result[1])
    return clients


async def connect_all(fleet: Fleet, port: int, n: int, batch: int,
                      batch_seconds: float) -> list[SseClient]:
    """Open n streams, a batch at a time, each batch waiting for all its snapshots.

    Waiting keeps at most ``batch`` handshakes in the server's accept queue (2048).
    """
    clients: list[SseClient] = []
    for start in range(0, n, batch):
        clients += await connect_batch(fleet, port, min(batch, n - start))
        try:
            await asyncio.wait_for(fleet.settled.wait(), batch_seconds)
        except TimeoutError:
            fleet.fail(f"no snapshot within {batch_seconds:.0f} s", fleet.waiting)
            break
    return clients


async def current_version(port: int) -> int | None:
    """The version a new subscriber gets in its snapshot: the server's newest state."""
    fleet = Fleet()
    clients = await connect_batch(fleet, port, 1)
    with suppress(TimeoutError):
        await asyncio.wait_for(fleet.settled.wait(), 10)
    fleet.closing = True
    for client in clients:
        client.close()
    return clients[0].ids[0] if clients and clients[0].ids else None


# --- the writer -------------------------------------------------------------------



@dataclass
class Writes:
    sent: list[float]  # monotonic time POST i was sent (0.0: never)
    answered: list[float]  # seconds POST i took to answer
    statuses: Counter[int] = field(default_factory=Counter)
    # POSTs answered 200 with a rank below 10: never visible on the stream. Happens when
    # 10 later POSTs commit first (an overloaded server); those are left out of latency.
    off_board: set[int] = field(default_factory=set)
    max_late_ms: float = 0.0  # how far behind schedule this process sent a POST


async def write_phase(url: str, tokens: list[str], rate: float) -> Writes:
    """POST i: user w<i> adds i + 1, topping every earlier total, so each changes the top 10.

    Open loop: POST i goes out at start + i / rate whether or not earlier ones were
    answered, so a slow server gets the offered load rather than throttling it.
    """
    writes = Writes([0.0] * len(tokens), [0.0] * len(tokens))
    limits = httpx.Limits(max_connections=len(tokens), max_keepalive_connections=len(tokens))
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        start = time.monotonic()
        tasks = []
        for i, tok in enumerate(tokens):
            due = start + i / rate
            if (delay := due - time.monotonic()) > 0:
                await asyncio.sleep(delay)
            writes.max_late_ms = max(writes.max_late_ms, (time.monotonic() - due) * 1000)
            tasks.append(asyncio.create_task(post_one(client, i, tok, writes)))
        await asyncio.gather(*tasks)
    return writes


async def post_one(client: httpx.AsyncClient, i: int, tok: str, writes: Writes) -> None:
    sent = writes.sent[i] = time.monotonic()
    try:
        response = await client.post(
            "/score", json={"user_id": f"w{i}", "increment": i + 1},
            headers={"Authorization": f"Bearer {tok}"},
        )
    except httpx.HTTPError as error:
        writes.statuses[0] += 1  # 0: no answer
        print(f"POST {i}: {type(error).__name__}: {error}", flush=True)
        return
    writes.answered[i] = time.monotonic() - sent
    writes.statuses[response.status_code] += 1
    if response.status_code == 200 and response.json().get("rank", 99) > 10:
        writes.off_board.add(i)


def ledger_order(db: Path, posts: int) -> list[int] | None:
    """POST index of each ledger id 1..posts, read from the bench's own database.

    The stream's version is the ledger id of the newest applied increment; concurrent
    POSTs may commit out of send order, so the order is read, not assumed. None if the
    file does not hold exactly the bench's writes (then send order is assumed).
    """
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            rows = conn.execute("SELECT id, user_id FROM ledger ORDER BY id").fetchall()
    except sqlite3.Error:
        return None
    order = [int(user[1:]) for _id, user in rows if user.startswith("w")]
    if [row[0] for row in rows] != list(range(1, posts + 1)) or sorted(order) != list(
            range(posts)):
        return None
    return order


async def lag_probe(lags: list[float]) -> None:
    """How late this process's loop wakes up: the client's own queueing delay."""
    while True:
        before = time.monotonic()
        await asyncio.sleep(LAG_STEP)
        lags.append((time.monotonic() - before - LAG_STEP) * 1000)


# --- one round --------------------------------------------------------------------


@dataclass
class Round:
    clients: int
    connected: int = 0
    connect_s: float = 0.0
    connect_server_cpu_pct: float = 0.0
    connect_client_cpu_pct: float = 0.0
    failures: dict[str, int] = field(default_factory=dict)
    lost: int = 0
    posts: int = 0
    post_statuses: dict[str, int] = field(default_factory=dict)
    post_p50_ms: float = 0.0
    post_p99_ms: float = 0.0
    post_max_ms: float = 0.0
    post_max_late_ms: float = 0.0
    write_s: float = 0.0
    ledger_order: str = ""  # "read" from the database, or "assumed" (send order)
    reordered: int = 0  # POSTs whose ledger id is not their send position + 1
    off_board: int = 0  # POSTs that never reached the top 10 (left out of latency)
    largest_head_kb: float = 0.0  # largest /scores/stream response head
    server_version: int | None = None
    on_final: int = 0
    events: int = 0
    pushes: int = 0
    samples: int = 0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    anomalies: dict[str, int] = field(default_factory=dict)
    rss_before_kb: int = 0
    rss_after_kb: int = 0
    kb_per_conn: float = 0.0
    server_fds: int = 0
    live_gauge: float | None = None
    server_cpu_pct: float = 0.0
    client_cpu_pct: float = 0.0
    client_lag_p99_ms: float = 0.0
    client_lag_max_ms: float = 0.0
    dropped: dict[str, float] = field(default_factory=dict)
    log_lines: list[str] = field(default_factory=list)


@dataclass
class Raw:
    """What a round leaves for the analysis once its server is stopped."""

    clients: list[SseClient]
    writes: Writes


class CpuMeter:
    """CPU share of the server and of this process over a stretch of wall time."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.server, self.own, self.wall = cpu_seconds(pid), time.process_time(), time.monotonic()

    def shares(self) -> tuple[float, float, float]:
        """(server %, this process %, seconds) since construction."""
        wall = time.monotonic() - self.wall
        return (100 * (cpu_seconds(self.pid) - self.server) / wall,
                100 * (time.process_time() - self.own) / wall, wall)


async def run_round(server: Server, n: int, tokens: list[str],
                    args: argparse.Namespace) -> tuple[Round, Raw]:
    result = Round(clients=n)
    pid = server.proc.pid
    fleet = Fleet()
    clients: list[SseClient] = []
    try:
        result.rss_before_kb = rss_kb(pid)
        meter = CpuMeter(pid)
        clients = await connect_all(fleet, server.port, n, args.batch, args.connect_timeout)
        result.connect_server_cpu_pct, result.connect_client_cpu_pct, result.connect_s = (
            meter.shares())
        result.connected = fleet.ready
        # The clients live for the whole round: keep the collector from walking them.
        gc.freeze()
        await asyncio.sleep(1.0)  # idle: let the server settle before reading its RSS
        result.rss_after_kb, result.server_fds = rss_kb(pid), open_fds(pid)
        result.kb_per_conn = (result.rss_after_kb - result.rss_before_kb) / max(1, fleet.ready)
        result.live_gauge = await metric(server.url, "scoreboard_live_connections")
        writes = await measured_writes(server, tokens, args, result)
        # Let the last coalesced push reach everyone before judging the final state.
        await asyncio.sleep(max(1.0, 5 * (args.push_interval_ms or DEFAULT_PUSH_MS) / 1000))
        result.server_version = await current_version(server.port)
        result.dropped = await dropped(server.url)
    finally:
        fleet.closing = True
        for client in clients:
            client.close()
        gc.unfreeze()
    result.failures, result.lost = dict(fleet.failures), fleet.lost
    result.largest_head_kb = fleet.largest_head / 1024
    await asyncio.sleep(0.5)  # let the closes reach the server before it is stopped
    return result, Raw(clients, writes)


async def measured_writes(server: Server, tokens: list[str], args: argparse.Namespace,
                          result: Round) -> Writes:
    """The write phase, with the server's and this process's CPU use over it."""
    lags: list[float] = []
    probe = asyncio.create_task(lag_probe(lags))
    meter = CpuMeter(server.proc.pid)
    writes = await write_phase(server.url, tokens, args.rate)
    result.server_cpu_pct, result.client_cpu_pct, result.write_s = meter.shares()
    probe.cancel()
    with suppress(asyncio.CancelledError):
        await probe
    lags.sort()
    result.client_lag_p99_ms = percentile(lags, 0.99)
    result.client_lag_max_ms = lags[-1] if lags else 0.0
    answered = sorted(1000 * a for a in writes.answered if a)
    result.post_p50_ms = percentile(answered, 0.50)
    result.post_p99_ms = percentile(answered, 0.99)
    result.post_max_ms = answered[-1] if answered else 0.0
    result.posts = len(writes.sent)
    result.post_statuses = {str(k): v for k, v in writes.statuses.items()}
    result.post_max_late_ms = writes.max_late_ms
    result.off_board = len(writes.off_board)
    return writes


async def metric(url: str, name: str) -> float | None:
    async with httpx.AsyncClient(timeout=10) as client:
        text = (await client.get(f"{url}/metrics")).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


async def dropped(url: str) -> dict[str, float]:
    """scoreboard_live_dropped_total by reason: streams the server ended itself."""
    async with httpx.AsyncClient(timeout=10) as client:
        text = (await client.get(f"{url}/metrics")).text
    prefix = 'scoreboard_live_dropped_total{reason="'
    return {line[len(prefix):line.index('"', len(prefix))]: float(line.split()[-1])
            for line in text.splitlines() if line.startswith(prefix)}


# --- analysis ---------------------------------------------------------------------


def summarise(result: Round, raw: Raw, order: list[int] | None) -> None:
    """Latency over every (client, event) pair after the snapshot; see LATENCY_DEFINITION.

    ``order[L - 1]`` is the POST that got ledger id L. A client whose previous event had
    version P and whose new one has V > P receives ledger ids P+1..V; the latency is
    measured from the earliest send among them.
    """
    posts = len(raw.writes.sent)
    result.ledger_order = "read" if order is not None else "assumed"
    order = order if order is not None else list(range(posts))
    result.reordered = sum(index != position for position, index in enumerate(order))
    # Send time of ledger id L at L - 1; a write never on the board is never delivered.
    by_ledger = [math.inf if index in raw.writes.off_board else raw.writes.sent[index]
                 for index in order]
    oldest: dict[tuple[int, int], float] = {}  # few distinct (P, V) pairs: cache them
    latencies: list[float] = []
    anomalies: Counter[str] = Counter(result.anomalies)
    for client in raw.clients:
        ids, times = client.ids, client.times
        result.events += len(ids)
        result.on_final += bool(ids) and ids[-1] == posts
        if ids and ids[0] != 0:
            anomalies["snapshot_version_not_0"] += 1
        for k in range(1, len(ids)):
            previous, version = ids[k - 1], ids[k]
            if version <= previous:
                anomalies["version_did_not_grow"] += 1
            elif version > posts:
                anomalies["version_beyond_last_post"] += 1
            else:
                key = (previous, version)
                if key not in oldest:
                    oldest[key] = min(by_ledger[previous:version])
                if oldest[key] == math.inf:
                    anomalies["push_without_visible_write"] += 1
                else:
                    latencies.append((times[k] - oldest[key]) * 1000)
    result.pushes = result.events - sum(1 for c in raw.clients if c.ids)
    latencies.sort()
    result.samples = len(latencies)
    result.p50_ms = percentile(latencies, 0.50)
    result.p99_ms = percentile(latencies, 0.99)
    result.max_ms = latencies[-1] if latencies else 0.0
    result.anomalies = dict(anomalies)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of a sorted list."""
    if not values:
        return 0.0
    return values[min(len(values) - 1, max(0, int(q * len(values) + 0.5) - 1))]


def problems_of(result: Round) -> list[str]:
    problems = []
    if result.failures:
        problems.append(f"N={result.clients}: connections failed {result.failures}")
    if result.lost:
        problems.append(f"N={result.clients}: {result.lost} streams ended during the run")
    if set(result.post_statuses) != {"200"}:
        problems.append(f"N={result.clients}: POST statuses {result.post_statuses}")
    if result.ledger_order != "read":
        problems.append(f"N={result.clients}: could not read the ledger order; assumed the "
                        "send order, so latencies may be off by a write")
    if result.server_version != result.posts:
        problems.append(
            f"N={result.clients}: server version {result.server_version} after "
            f"{result.posts} POSTs: version != ledger id of the last write, latencies are "
            "unreliable"
        )
    if result.anomalies:
        problems.append(f"N={result.clients}: anomalies {result.anomalies}")
    if result.dropped:
        problems.append(f"N={result.clients}: server dropped streams {result.dropped}")
    if result.log_lines:
        problems.append(f"N={result.clients}: {len(result.log_lines)} server log lines")
    return problems


# --- report -----------------------------------------------------------------------


def print_table(rounds: list[Round]) -> None:
    print()
    print(f"{'clients':>8}{'ready':>8}{'conn s':>8}{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}"
          f"{'final':>8}{'events':>9}{'KB/conn':>9}{'srv CPU':>9}{'gen CPU':>9}"
          f"{'gen lag':>9}")
    for r in rounds:
        print(f"{r.clients:>8}{r.connected:>8}{r.connect_s:>8.1f}{r.p50_ms:>8.1f}"
              f"{r.p99_ms:>8.1f}{r.max_ms:>8.1f}{r.on_final:>8}{r.events:>9}"
              f"{r.kb_per_conn:>9.1f}{r.server_cpu_pct:>8.0f}%{r.client_cpu_pct:>8.0f}%"
              f"{r.client_lag_p99_ms:>9.1f}")
    print("ready: clients that got their snapshot; final: clients whose last event is the "
          "last POST's version;\nevents: snapshots + pushes received; KB/conn: server RSS "
          "growth / ready clients (idle);\nsrv/gen CPU: server / load generator CPU over the "
          "write phase; gen lag: p99 ms the generator's loop woke late.")
    print(LATENCY_DEFINITION + ".")


def targets(rounds: list[Round], push_ms: int | None) -> dict[str, str]:
    """Verdicts on the largest round; "not measured" where it does not apply."""
    big = max(rounds, key=lambda r: r.clients)
    verdicts = {"clients": "not measured", "p99": "not measured",
                "final_state": verdict(all(r.on_final == r.clients for r in rounds)),
                "kb_per_conn": verdict(big.kb_per_conn <= TARGET_KB_PER_CONN)}
    if big.clients >= TARGET_CLIENTS:
        verdicts["clients"] = verdict(big.connected >= TARGET_CLIENTS and not big.lost)
        if push_ms in (None, DEFAULT_PUSH_MS):
            verdicts["p99"] = verdict(big.p99_ms <= TARGET_P99_MS and big.samples > 0)
    print(f"target: {TARGET_CLIENTS} SSE clients on one process: {verdicts['clients']} "
          f"({big.connected} of {big.clients} ready)")
    print(f"target: p99 <= {TARGET_P99_MS:.0f} ms with the default push interval: "
          f"{verdicts['p99']} ({big.p99_ms:.1f} ms at {big.clients} clients, push interval "
          f"{push_ms or DEFAULT_PUSH_MS} ms)")
    print(f"target: every client on the final state: {verdicts['final_state']} "
          f"({', '.join(f'{r.on_final}/{r.clients}' for r in rounds)})")
    print(f"target: <= {TARGET_KB_PER_CONN:.0f} KB per idle connection: "
          f"{verdicts['kb_per_conn']} ({big.kb_per_conn:.1f} KB at {big.clients} clients)")
    return verdicts


def print_notes(rounds: list[Round]) -> None:
    for r in rounds:
        print(f"N={r.clients}: connect {r.connect_s:.1f} s (server CPU "
              f"{r.connect_server_cpu_pct:.0f}%, generator {r.connect_client_cpu_pct:.0f}%); "
              f"server RSS {r.rss_before_kb} -> {r.rss_after_kb} KB, {r.server_fds} fds, "
              f"live gauge {r.live_gauge}")
        print(f"  {r.posts} POSTs {r.post_statuses} over {r.write_s:.1f} s (sent at most "
              f"{r.post_max_late_ms:.0f} ms late), answered in p50 {r.post_p50_ms:.0f} / p99 "
              f"{r.post_p99_ms:.0f} / max {r.post_max_ms:.0f} ms; ledger order "
              f"{r.ledger_order}, {r.reordered} out of send order, {r.off_board} never in "
              "the top 10")
        print(f"  {r.pushes} pushes ({r.pushes / max(1, r.connected):.0f} per client), "
              f"{r.samples} latency samples; generator loop lag max "
              f"{r.client_lag_max_ms:.0f} ms; largest stream response head "
              f"{r.largest_head_kb:.1f} KB")
        if r.client_cpu_pct >= CLIENT_BUSY * 100:
            print(f"WARNING: N={r.clients}: the load generator used {r.client_cpu_pct:.0f}% "
                  "of its core: latencies include its own queueing, not only the server's")
        for line in r.log_lines[:10]:
            print(f"  server log: {line}")


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def write_json(path: Path, summary: dict[str, object], args: argparse.Namespace) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: str(v) for k, v in vars(args).items()}
    path.write_text(json.dumps(summary | {"settings": settings, "at": time.time()}, indent=2))
    print(f"wrote {path}")


# --- main -------------------------------------------------------------------------


def measure(tmp: Path, servers: list[Server], n: int, secret: str,
            args: argparse.Namespace) -> Round:
    posts = max(1, round(args.rate * args.duration))
    tokens = [token(secret, f"w{i}") for i in range(posts)]
    server = start_server(tmp, f"n{n}", secret, max(100, posts), args.push_interval_ms,
                          servers)
    if proc_fd_limit(server.proc.pid) < n + FD_MARGIN:
        raise RuntimeError(f"server's open-file limit {proc_fd_limit(server.proc.pid)} is "
                           f"below {n + FD_MARGIN}")
    print(f"N={n}: server pid {server.proc.pid} on port {server.port}; connecting...",
          flush=True)
    with asyncio.Runner(loop_factory=LOOP_FACTORY) as runner:
        result, raw = runner.run(run_round(server, n, tokens, args))
    stop(server.proc)  # a clean stop checkpoints the WAL: the ledger is in the file
    result.log_lines = server.log.read_text(errors="replace").splitlines()
    summarise(result, raw, ledger_order(server.dir / "data" / "scoreboard.db", len(tokens)))
    print(f"N={n}: {result.connected} ready in {result.connect_s:.1f} s, p99 "
          f"{result.p99_ms:.1f} ms, {result.on_final} on the final state", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("taskset") is None:
        sys.exit("missing taskset: apt-get install util-linux")
    hard = raise_fd_limit(max(args.clients) + FD_MARGIN)
    os.sched_setaffinity(0, {1})  # the load generator on core 1, the server on core 0
    secret = secrets.token_urlsafe(36)  # 48 characters
    print(f"fan-out: clients {args.clients}, {args.rate:g} writes/s for {args.duration:g} s, "
          f"push interval {args.push_interval_ms or DEFAULT_PUSH_MS} ms, open-file limit "
          f"{hard}, loop {'uvloop' if LOOP_FACTORY else 'asyncio'}", flush=True)
    rounds: list[Round] = []
    with bench_dir(args.keep_tmp) as (tmp, servers):
        for n in args.clients:
            rounds.append(measure(tmp, servers, n, secret, args))
    print_table(rounds)
    verdicts = targets(rounds, args.push_interval_ms)
    print_notes(rounds)
    problems = [p for r in rounds for p in problems_of(r)]
    for problem in problems:
        print(f"PROBLEM: {problem}")
    summary: dict[str, object] = {
        "rounds": [asdict(r) for r in rounds], "targets": verdicts,
        "latency_definition": LATENCY_DEFINITION, "problems": problems,
    }
    write_json(args.output, summary, args)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
