"""The faults, one named scenario each. A scenario injects its fault once, leaves the
cluster healed, and returns what it saw; checks that only make sense for that fault
(no fresh 200 while the file is locked, exit 0 on SIGTERM...) are made here.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from random import Random

from tests.faults import disk, services
from tests.faults.cluster import Cluster
from tests.faults.history import History, ResetOp
from tests.faults.load import Load

GRACEFUL_EXIT_SECONDS = 12.0  # the server gives open responses 10 s
STALLED_STREAMS = 20
STALL_SECONDS = 8.0
MAX_STREAM_GAP = 3.0  # seconds a watcher may go without an event while scores change
SETTLE_SECONDS = 10.0  # after a reset (and healing), every instance serves the new season
SETTLE_GRACE = 0.5  # then this long for pages, rankings and hubs to follow the board


@dataclass
class FaultContext:
    cluster: Cluster
    load: Load
    history: History
    rng: Random
    long: bool = False  # the long run: Redis away for 30 s, longer pauses


@dataclass
class Fault:
    scenario: str
    started: float
    ended: float = 0.0
    detail: str = ""
    problems: list[str] = field(default_factory=list)


Scenario = Callable[[FaultContext, Fault], Awaitable[None]]


def _instance(ctx: FaultContext) -> int:
    return ctx.rng.randrange(len(ctx.cluster.servers))


async def sigkill(ctx: FaultContext, fault: Fault) -> None:
    """SIGKILL at a random moment, restart at once on the same data."""
    i = _instance(ctx)
    await asyncio.sleep(ctx.rng.uniform(0, 1.0))
    await ctx.cluster.kill(i)
    fault.detail = f"instance {i}"


async def sigkill_commit(ctx: FaultContext, fault: Fault) -> None:
    """SIGKILL within 3 ms of an acknowledgement: with writes queued, the writer is in
    (or entering) its next commit."""
    i = _instance(ctx)
    await ctx.load.next_ack(i)
    await asyncio.sleep(ctx.rng.uniform(0, 0.003))
    proc = ctx.cluster.servers[i].proc
    if proc is not None:
        proc.kill()  # at once, not through a thread hop
    await ctx.cluster.kill(i)
    fault.detail = f"instance {i}"


async def sigstop(ctx: FaultContext, fault: Fault) -> None:
    """SIGSTOP for 1-4 s (a long GC pause, a frozen VM), then SIGCONT."""
    i = _instance(ctx)
    seconds = ctx.rng.uniform(1, 4)
    ctx.cluster.pause(i)
    try:
        await asyncio.sleep(seconds)
    finally:
        ctx.cluster.resume(i)
    fault.detail = f"instance {i} stopped {seconds:.1f} s"


async def sigterm(ctx: FaultContext, fault: Fault) -> None:
    """Graceful stop under load: exit 0 within the bound, streams ended cleanly
    (their clients reconnect), nothing in flight failed (the checker's invariants)."""
    i = _instance(ctx)
    proc = ctx.cluster.servers[i].proc
    assert proc is not None
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        code = await asyncio.to_thread(proc.wait, GRACEFUL_EXIT_SECONDS)
    except Exception:
        fault.problems.append(f"sigterm: instance {i} still running after "
                              f"{GRACEFUL_EXIT_SECONDS} s")
        return
    took = time.monotonic() - started
    fault.detail = f"instance {i} exited {code} in {took:.2f} s"
    if code != 0:
        fault.problems.append(f"sigterm: instance {i} exited {code}, not 0")
    await asyncio.sleep(0.3)  # let the watchers notice the end
    for watch in ctx.load.watches:
        if watch.instance != i:
            continue
        ends = [e for e in watch.ends if started <= e.at]
        if not ends:
            fault.problems.append(f"sigterm: a stream on instance {i} was not ended")
        elif not ends[0].clean:
            fault.problems.append(f"sigterm: a stream on instance {i} was cut "
                                  f"({ends[0].error}), not ended")


_LOCKER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], timeout=10, isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("ROLLBACK")
"""


async def write_lock(ctx: FaultContext, fault: Fault) -> None:
    """Another process holds the SQLite file's write lock for 5 s: writes get 503,
    never a 200 that could not have been committed."""
    locker = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _LOCKER, str(ctx.cluster.sqlite_path),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    assert locker.stdin is not None and locker.stdout is not None
    try:
        line = await asyncio.wait_for(locker.stdout.readline(), 15)
        if line.strip() != b"locked":
            fault.problems.append("write lock: the locker could not take the lock")
            return
        locked = time.monotonic()
        await asyncio.sleep(5.0)  # past the server's 2 s lock wait, twice
        released = time.monotonic()  # the lock is held at least until this moment
    finally:
        locker.stdin.write(b"release\n")
        with contextlib.suppress(ConnectionError):
            await locker.stdin.drain()
        await locker.wait()
    await asyncio.sleep(5.5)  # requests sent under the lock are answered by now
    false = ctx.history.fresh_oks_between(locked, released)
    refused = ctx.history.answered_between(locked - 5.0, released + 5.0, 503)
    fault.detail = f"503 answers during the lock: {refused}"
    for op in false:
        fault.problems.append(f"write lock: {op.key} got a first-time 200 while another "
                              "process held the write lock")
    if refused == 0:
        fault.detail += " (no write reached the lock: nothing tested)"


async def disk_full(ctx: FaultContext, fault: Fault) -> None:
    """The data directory's filesystem full for 3 s, then space again: writes get 503
    (or commit into space SQLite already holds), then recover."""
    directory = ctx.cluster.servers[0].data_dir
    filler, written = await asyncio.to_thread(disk.fill, directory)
    full = time.monotonic()
    try:
        await asyncio.sleep(3.0)
    finally:
        filler.unlink()
    freed = time.monotonic()
    refused = ctx.history.answered_between(full, freed + 3.0, 503)
    deadline = freed + 10
    while not ctx.history.fresh_oks_between(freed, time.monotonic()):
        if time.monotonic() > deadline:
            fault.problems.append("disk full: no write succeeded within 10 s of space "
                                  "coming back")
            break
        await asyncio.sleep(0.1)
    fault.detail = f"filled {written // 1024} KiB; 503 answers while full: {refused}"


async def stall_streams(ctx: FaultContext, fault: Fault) -> None:
    """Stream clients that never read: the others still get every push in time."""
    i = _instance(ctx)
    port = ctx.cluster.servers[i].port
    stalled = []
    for _ in range(STALLED_STREAMS):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            s.connect(("127.0.0.1", port))
        stalled.append(s)
    await asyncio.sleep(0.1)
    for s in stalled:
        with contextlib.suppress(OSError):
            s.send(b"GET /scores/stream HTTP/1.1\r\nHost: x\r\n\r\n")  # then never read
    started = time.monotonic()
    try:
        await asyncio.sleep(STALL_SECONDS)
    finally:
        for s in stalled:
            s.close()
    for watch in ctx.load.watches:
        if watch.instance != i:
            continue
        gaps = [g for at, g in watch.gaps if at >= started]
        worst = max(gaps, default=time.monotonic() - started)
        if worst > MAX_STREAM_GAP:
            fault.problems.append(f"stalled streams: a reader on instance {i} went "
                                  f"{worst:.1f} s without a push")
    fault.detail = f"{STALLED_STREAMS} stalled streams on instance {i} for {STALL_SECONDS} s"


async def postgres_restart(ctx: FaultContext, fault: Fault) -> None:
    """PostgreSQL restarted (fast: sessions cut): 503 meanwhile, then recovery."""
    took = await asyncio.to_thread(services.postgres_restart)
    fault.detail = f"restart took {took:.1f} s"


async def instance_kill(ctx: FaultContext, fault: Fault) -> None:
    """One of two instances killed and kept down for 2-5 s: the other carries on."""
    i = _instance(ctx)
    down = ctx.rng.uniform(2, 5)
    await ctx.cluster.kill(i)
    killed = time.monotonic()
    await asyncio.sleep(down)
    carried = [op for op in ctx.history.fresh_oks_between(killed, time.monotonic())
               if any(a.instance != i and a.status == 200 for a in op.attempts)]
    fault.detail = f"instance {i} down {down:.1f} s; the others acknowledged {len(carried)}"
    if not carried:
        fault.problems.append(f"instance kill: nothing acknowledged while instance {i} was down")


async def redis_kill(ctx: FaultContext, fault: Fault) -> None:
    """Redis shut down (no save) for 1-3 s, then started empty."""
    redis = ctx.cluster.redis
    assert redis is not None
    seconds = 30.0 if fault.scenario == "redis-away" else ctx.rng.uniform(1, 3)
    await asyncio.to_thread(redis.stop)
    try:
        await asyncio.sleep(seconds)
    finally:
        await asyncio.to_thread(redis.start)
    fault.detail = f"Redis down {seconds:.1f} s"


async def redis_flush(ctx: FaultContext, fault: Fault) -> None:
    """FLUSHDB on the cluster's Redis database: every cached ranking and key gone."""
    redis = ctx.cluster.redis
    assert redis is not None
    await asyncio.to_thread(redis.flushdb)
    fault.detail = f"db {redis.db}"


# -- season resets -------------------------------------------------------------------

async def settle(ctx: FaultContext, fault: Fault) -> None:
    """After a reset: the cluster healed, every instance serving the store's season
    within 10 s; then the load knows the season again."""
    await ctx.cluster.heal()
    with contextlib.suppress(RuntimeError):
        await ctx.cluster.ready()
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        season = await ctx.cluster.season()
        served = await ctx.cluster.served_seasons()
        if all(s == season for s in served):
            await asyncio.sleep(SETTLE_GRACE)
            if await ctx.cluster.season() == season:
                break
            continue  # a reset committed late (its instance died as it sent COMMIT)
        if time.monotonic() > deadline:
            fault.problems.append(f"reset: the instances serve seasons {served} "
                                  f"{SETTLE_SECONDS:.0f} s after the reset, the store "
                                  f"{season}")
            break
        await asyncio.sleep(0.1)
    ctx.load.settled(season)
    fault.detail += f"; season {season}"


def _reset_detail(op: ResetOp) -> str:
    return (f"reset on instance {op.instance} -> {op.outcome} in "
            f"{(op.ended - op.started) * 1000:.0f} ms")


async def reset(ctx: FaultContext, fault: Fault) -> None:
    """A manual reset of the load's board, under load, on a random instance."""
    try:
        op = await ctx.load.reset(_instance(ctx))
        fault.detail = _reset_detail(op)
    finally:
        await settle(ctx, fault)


async def reset_kill(ctx: FaultContext, fault: Fault) -> None:
    """A reset while an instance is down: with two instances, mostly one killed and
    kept down while another resets; otherwise the instance asked to reset is SIGKILLed
    under it, either the moment the store shows the reset committed (before it can
    answer, mostly) or 2-40 ms after the request went out (before or after it commits).
    Whether it happened is the store's to say."""
    i = _instance(ctx)
    try:
        if len(ctx.cluster.servers) > 1 and ctx.rng.random() < 2 / 3:
            await ctx.cluster.kill(i)
            await asyncio.sleep(ctx.rng.uniform(0.2, 1.0))
            others = [j for j in range(len(ctx.cluster.servers)) if j != i]
            op = await ctx.load.reset(ctx.rng.choice(others))
            down = ctx.rng.uniform(0.5, 2.0)
            await asyncio.sleep(down)
            fault.detail = f"instance {i} down; {_reset_detail(op)}"
            return
        before = await ctx.cluster.season()
        if ctx.rng.random() < 0.5:
            when = "as the store showed its"
            watch = asyncio.create_task(asyncio.to_thread(ctx.cluster.kill_on_reset, i,
                                                          before, 5.0))
            await asyncio.sleep(0.01)  # polling already
            sent = asyncio.create_task(ctx.load.reset(i))
            if not await watch:
                when = "after (the store did not show) its"
        else:
            when = "during its"
            sent = asyncio.create_task(ctx.load.reset(i))
            await asyncio.sleep(ctx.rng.uniform(0.002, 0.040))
            proc = ctx.cluster.servers[i].proc
            if proc is not None:
                proc.kill()  # at once, not through a thread hop
        await ctx.cluster.kill(i)
        op = await sent
        fault.detail = f"instance {i} killed {when} {_reset_detail(op)}"
    finally:
        await settle(ctx, fault)


async def reset_redis(ctx: FaultContext, fault: Fault) -> None:
    """A reset while Redis is down: the other instances hear of it through the store."""
    redis = ctx.cluster.redis
    assert redis is not None
    await asyncio.to_thread(redis.stop)
    try:
        await asyncio.sleep(ctx.rng.uniform(0.3, 1.0))
        op = await ctx.load.reset(_instance(ctx))
        await asyncio.sleep(ctx.rng.uniform(0.5, 2.0))
        fault.detail = f"Redis down; {_reset_detail(op)}"
    finally:
        await asyncio.to_thread(redis.start)
        await settle(ctx, fault)


SCENARIOS: dict[str, Scenario] = {
    "sigkill": sigkill,
    "sigkill-commit": sigkill_commit,
    "sigstop": sigstop,
    "sigterm": sigterm,
    "write-lock": write_lock,
    "disk-full": disk_full,
    "stall-streams": stall_streams,
    "postgres-restart": postgres_restart,
    "instance-kill": instance_kill,
    "redis-kill": redis_kill,
    "redis-flush": redis_flush,
    "redis-away": redis_kill,
    "reset": reset,
    "reset-kill": reset_kill,
    "reset-redis": reset_redis,
}

# What each backend can be given (instance-kill needs two instances).
FOR_BACKEND = {
    "sqlite": ["sigkill", "sigkill-commit", "sigstop", "sigterm", "write-lock", "disk-full",
               "stall-streams", "reset", "reset-kill"],
    "postgres-redis": ["sigkill", "sigkill-commit", "sigstop", "sigterm", "stall-streams",
                       "postgres-restart", "instance-kill", "redis-kill", "redis-flush",
                       "redis-away", "reset", "reset-kill", "reset-redis"],
}
