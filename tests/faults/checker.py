"""The invariants a fault run must keep, judged from the history and the store.

Per user: no acknowledged increment lost, nothing phantom, exactly once per key;
every 200 of a key carries the same bytes, and a replay after the run does too; the
readers and streams never saw a score go down (``load.py`` records those as it goes);
the ranking every instance serves equals the store within 5 s of recovery; the
database passes its integrity check and every score is an integer.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict
from typing import Any

import httpx
import orjson

from tests.faults.cluster import Cluster, StoreSnapshot
from tests.faults.history import History, Operation
from tests.faults.load import token

CONVERGENCE_SECONDS = 5.0


def check_history(history: History, store: StoreSnapshot) -> list[str]:
    """Lost, phantom and exactly-once, per user and per key; equal bodies per key."""
    problems: list[str] = []
    by_user: dict[str, list[Operation]] = defaultdict(list)
    for op in history.operations:
        by_user[op.user].append(op)
    known = {(op.user, op.key) for op in history.operations}
    for user_key in store.responses.keys() - known:
        problems.append(f"phantom: the store remembers key {user_key} that nobody sent")
    for user, ops in sorted(by_user.items()):
        final = store.totals.get(user, 0)
        ok = sum(op.increment for op in ops if op.status == "ok")
        unknown = sum(op.increment for op in ops if op.status in ("unknown", "invoked"))
        if final < ok:
            problems.append(f"lost: {user} has {final} in the store, {ok} acknowledged")
        if final > ok + unknown:
            problems.append(f"phantom: {user} has {final} in the store, at most {ok + unknown} "
                            f"possible ({ok} acknowledged + {unknown} unknown)")
        applied = 0
        for op in ops:
            stored = store.responses.get((user, op.key))
            if stored is not None:
                applied += op.increment
            first = op.first_ok
            if op.status == "ok" and stored is None:
                problems.append(f"lost: {op.key} was acknowledged but the store has no record")
            if op.status == "refused" and stored is not None:
                problems.append(f"phantom: {op.key} was refused "
                                f"({[a.status for a in op.attempts][-3:]}) but is applied")
            if first is not None:
                bodies = {a.body for a in op.attempts if a.status == 200}
                if len(bodies) > 1:
                    problems.append(f"replay: {op.key} got different 200 bodies {bodies}")
                if stored is not None and stored != first.body:
                    problems.append(f"replay: {op.key} answered {first.body!r} but the store "
                                    f"remembers {stored!r}")
        # Every applied key adds exactly one ledger entry, and its answer's score is the
        # running total right after that entry.
        ledger = store.ledger.get(user, [])
        if applied != final:
            problems.append(f"exactly once: {user} has {final}, the keys applied add to "
                            f"{applied}")
        remembered = sorted(orjson.loads(body)["score"] for (u, _), body in
                            store.responses.items() if u == user)
        running: list[int] = []
        for delta in ledger:
            running.append((running[-1] if running else 0) + delta)
        if remembered != running:
            problems.append(f"exactly once: {user} has {len(ledger)} ledger entries and "
                            f"{len(remembered)} remembered keys, or their totals differ")
    problems += [f"store: {p}" for p in store.problems]
    return problems


async def check_convergence(cluster: Cluster, store: StoreSnapshot,
                            users: list[str]) -> tuple[list[str], float]:
    """Within 5 s every instance's ranking equals the store: (problems, seconds taken)."""
    started = time.monotonic()
    expected_top = sorted(store.totals.items(), key=lambda kv: -kv[1])[:100]
    problems: list[str] = []
    async with httpx.AsyncClient(timeout=5) as client:
        while True:
            problems = []
            for i, url in enumerate(cluster.urls):
                problems += await _compare(client, i, url, store, expected_top, users)
            if not problems or time.monotonic() - started > CONVERGENCE_SECONDS:
                return problems, time.monotonic() - started
            await asyncio.sleep(0.2)


async def _compare(client: httpx.AsyncClient, i: int, url: str, store: StoreSnapshot,
                   expected_top: list[tuple[str, int]], users: list[str]) -> list[str]:
    try:
        board = (await client.get(url + "/scores", params={"limit": 100})).json()
    except (httpx.HTTPError, ValueError) as exc:
        return [f"ranking: instance {i} GET /scores failed: {exc!r}"]
    served = {e["user_id"]: e["score"] for e in board}
    problems = []
    if sorted(served.values(), reverse=True) != [t for _, t in expected_top] or any(
            store.totals.get(u) != s for u, s in served.items()):
        problems.append(f"ranking: instance {i} serves {_diff(served, store.totals)}")
    for user in users:
        r = await client.get(f"{url}/users/{user}")
        want = store.totals.get(user)
        got: Any = r.json().get("score") if r.status_code == 200 else r.status_code
        if (want is None and r.status_code != 404) or (want is not None and got != want):
            problems.append(f"ranking: instance {i} GET /users/{user} -> {got}, store {want}")
    return problems


def _diff(served: dict[str, int], totals: dict[str, int]) -> str:
    wrong = {u: (s, totals.get(u)) for u, s in served.items() if totals.get(u) != s}
    return f"{len(served)} entries, (served, stored) differing: {dict(list(wrong.items())[:5])}"


async def check_replays(cluster: Cluster, history: History, rng: random.Random,
                        sample: int) -> list[str]:
    """Send acknowledged keys again: each must replay the first 200's bytes, adding nothing."""
    oks = [op for op in history.operations if op.status == "ok"]
    chosen = rng.sample(oks, min(sample, len(oks)))
    problems = []
    tokens: dict[str, str] = {}
    async with httpx.AsyncClient(timeout=10) as client:
        for n, op in enumerate(chosen):
            first = op.first_ok
            assert first is not None
            auth = tokens.setdefault(op.user, token(op.user))
            url = cluster.urls[n % len(cluster.urls)]
            r = await client.post(url + "/score",
                                  json={"user_id": op.user, "increment": op.increment},
                                  headers={"Authorization": f"Bearer {auth}",
                                           "Idempotency-Key": op.key})
            if r.status_code != 200 or r.headers.get("idempotent-replayed") != "true":
                problems.append(f"replay: {op.key} answered {r.status_code} "
                                f"replayed={r.headers.get('idempotent-replayed')}")
            elif r.content != first.body:
                problems.append(f"replay: {op.key} replayed {r.content!r}, first {first.body!r}")
    return problems
