"""The invariants a fault run must keep, judged from the history and the store.

Per user: no acknowledged increment lost, nothing phantom, exactly once per key;
every 200 of a key carries the same bytes, and a replay after the run does too; the
readers and streams never saw a score go down within a season (``load.py`` records
those as it goes); the ranking every instance serves equals the store within 5 s of
recovery; the database passes its integrity check and every score is an integer.

Seasons (``check_seasons``, ``check_season_standings``): every applied key is in exactly
one season, the one current when it committed (after every reset that was answered
before the write was sent, before every reset sent after it was answered); there is one
season more than resets that happened, each reset happened at most once and an
acknowledged one exactly once (the audit row of its own admin subject says so); and every
instance's seasons endpoints (final standings of closed seasons, the live board for the
current one) show each season's entries, which add up per user to what was applied.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections import Counter, defaultdict
from typing import Any

import httpx
import orjson

from tests.faults.cluster import BOARD, Cluster, StoreSnapshot
from tests.faults.history import History, Operation
from tests.faults.load import integer_scores, token

CONVERGENCE_SECONDS = 5.0
STANDINGS_SECONDS = 20.0  # how long a closed season's standings may stay "being stored"
_NEXT = re.compile(r'<([^>]+)>;\s*rel="next"')
_RESET_DETAIL = re.compile(r"season (\d+) -> (\d+)")


def key_seasons(history: History, store: StoreSnapshot) -> tuple[dict[str, int], list[str]]:
    """The season of each applied key, and what does not add up.

    Each applied key wrote one ledger row, and its answer's score is the user's entry in
    that row's season right after it. A user's writes go one at a time, so the user's
    applied keys, in the order sent, pair with their ledger rows in id order. Where they
    do not pair (an operation given up on while an attempt of it was still under way),
    keys and rows must still match as (score, increment) multisets; those users' keys
    are left without a season.
    """
    seasons: dict[str, int] = {}
    problems: list[str] = []
    applied: dict[str, list[Operation]] = defaultdict(list)
    for op in history.operations:
        if (op.user, op.key) in store.responses:
            applied[op.user].append(op)
    for user in sorted(applied.keys() | store.ledger.keys()):
        ops, rows = applied.get(user, []), store.ledger.get(user, [])
        if len(ops) != len(rows):
            problems.append(f"exactly once: {user} has {len(rows)} ledger rows and "
                            f"{len(ops)} keys applied")
            continue
        totals: dict[int, int] = defaultdict(int)
        running = []  # (the row's season, the user's entry in it after the row, amount)
        for row in rows:
            totals[row.season] += row.amount
            running.append((row.season, totals[row.season], row.amount))
        answers = [(orjson.loads(store.responses[(user, op.key)])["score"], op.increment)
                   for op in ops]
        if all(a == (total, amount) for a, (_, total, amount) in zip(answers, running,
                                                                     strict=True)):
            seasons.update((op.key, r[0]) for op, r in zip(ops, running, strict=True))
        elif Counter(answers) != Counter((total, amount) for _, total, amount in running):
            problems.append(f"exactly once: {user}'s remembered answers are not the running "
                            "totals of its ledger rows in their seasons")
    return seasons, problems


def check_history(history: History, store: StoreSnapshot) -> list[str]:
    """Lost, phantom and exactly-once, per user and per key; equal bodies per key."""
    problems: list[str] = []
    by_user: dict[str, list[Operation]] = defaultdict(list)
    for op in history.operations:
        by_user[op.user].append(op)
    known = {(op.user, op.key) for op in history.operations}
    for user_key in store.responses.keys() - known:
        problems.append(f"phantom: the store remembers key {user_key} that nobody sent")
    sums = store.sums()
    for user, ops in sorted(by_user.items()):
        final = sums.get(user, 0)  # every season's entry added up
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
        if applied != final:
            problems.append(f"exactly once: {user} has {final}, the keys applied add to "
                            f"{applied}")
    # Every applied key added exactly one ledger row, in one season, and its answer's
    # score is the user's entry in that season right after it.
    problems += key_seasons(history, store)[1]
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


def check_seasons(history: History, store: StoreSnapshot) -> list[str]:
    """Seasons against resets: one more season than resets that happened, each reset at
    most once and an acknowledged one exactly once; every applied key in the season
    current when it committed."""
    problems: list[str] = []
    numbers = [s.season for s in store.seasons]
    if numbers != list(range(1, store.season + 1)):
        problems.append(f"seasons: the store has seasons {numbers}, the board is at season "
                        f"{store.season}")
    for closed, following in zip(store.seasons, store.seasons[1:], strict=False):
        if closed.ended_ms is None or closed.ended_ms != following.started_ms:
            problems.append(f"seasons: season {closed.season} ended {closed.ended_ms}, season "
                            f"{following.season} started {following.started_ms}")
    if store.seasons and store.seasons[-1].ended_ms is not None:
        problems.append(f"seasons: the current season {store.seasons[-1].season} has ended")
    ours = {r.sub for r in history.resets}
    for sub in store.resets.keys() - ours:
        problems.append(f"seasons: a reset by {sub!r} that this run never sent")
    happened = 0
    opened: list[tuple[int, float, float]] = []  # (season opened, sent, latest commit)
    for r in history.resets:
        details = store.resets.get(r.sub, [])
        happened += len(details)
        if len(details) > 1:
            problems.append(f"seasons: reset {r.sub} ({r.outcome}) happened {len(details)} "
                            "times")
        found = _RESET_DETAIL.fullmatch(details[0]) if details else None
        if details and found is None:
            problems.append(f"seasons: reset {r.sub}'s audit row says {details[0]!r}")
        if found is not None:
            opened.append((int(found[2]), r.started, r.latest_commit))
        if r.status == 200:
            if not details:
                problems.append(f"lost: reset {r.sub} was acknowledged (season {r.season}) "
                                "but the store has no record of it")
            elif found is not None and int(found[2]) != r.season:
                problems.append(f"seasons: reset {r.sub} answered season {r.season}, the "
                                f"audit says {details[0]!r}")
        elif r.status is not None and r.status < 500 and details:
            problems.append(f"phantom: reset {r.sub} was refused {r.status} but happened")
    if store.season != happened + 1:
        acked = sum(1 for r in history.resets if r.status == 200)
        problems.append(f"seasons: the board is at season {store.season} after {happened} "
                        f"resets that happened ({len(history.resets)} sent, {acked} "
                        "acknowledged)")
    # A write belongs to the season current when it commits: within [first attempt sent,
    # first 200 received], so after every reset committed before and before every reset
    # sent after.
    seasons, _ = key_seasons(history, store)
    for op in history.operations:
        season, first = seasons.get(op.key), op.first_ok
        if season is None or first is None:
            continue
        sent, answered = op.attempts[0].started, first.ended
        for number, reset_sent, reset_done in opened:
            if answered < reset_sent and season >= number:
                problems.append(f"seasons: {op.key} was acknowledged before the reset to "
                                f"season {number} was sent, but is in season {season}")
            elif sent > reset_done and season < number:
                problems.append(f"seasons: {op.key} was sent after the reset to season "
                                f"{number} was answered, but is in season {season}")
    return problems


async def check_season_standings(cluster: Cluster, history: History,
                                 store: StoreSnapshot) -> list[str]:
    """Through every instance's seasons endpoints: the seasons the store has, each one's
    entries (closed: final standings; current: the live board), and per user their sum
    over the seasons equal to what was applied, between acknowledged and acknowledged +
    unknown."""
    problems: list[str] = []
    ok: dict[str, int] = defaultdict(int)
    unknown: dict[str, int] = defaultdict(int)
    for op in history.operations:
        if op.status == "ok":
            ok[op.user] += op.increment
        elif op.status in ("unknown", "invoked"):
            unknown[op.user] += op.increment
    applied = store.sums()
    async with httpx.AsyncClient(timeout=10) as client:
        for i, url in enumerate(cluster.urls):
            r = await client.get(f"{url}/boards/{BOARD}/seasons")
            if r.status_code != 200:
                problems.append(f"season standings: instance {i} lists seasons {r.status_code}")
                continue
            listed = r.json()
            numbers = sorted(s["season"] for s in listed)
            current = [s["season"] for s in listed if s["ended_at"] is None]
            if numbers != list(range(1, store.season + 1)) or current != [store.season]:
                problems.append(f"season standings: instance {i} lists seasons {numbers} "
                                f"(current {current}), the store 1..{store.season}")
            sums: dict[str, int] = defaultdict(int)
            for season in range(1, store.season + 1):
                served, error = await _season_scores(client, url, season)
                if error:
                    problems.append(f"season standings: instance {i} season {season}: {error}")
                    continue
                if served != store.in_season(season):
                    problems.append(f"season standings: instance {i} season {season} serves "
                                    f"{_diff(served, store.in_season(season))}")
                for user, score in served.items():
                    sums[user] += score
            for user in sorted(ok.keys() | unknown.keys() | sums.keys()):
                got = sums.get(user, 0)
                if got != applied.get(user, 0) or not ok[user] <= got <= ok[user] + unknown[user]:
                    problems.append(f"season standings: instance {i}: {user} has {got} over "
                                    f"{store.season} seasons, {applied.get(user, 0)} applied, "
                                    f"{ok[user]} acknowledged + {unknown[user]} unknown")
    return problems


async def _season_scores(client: httpx.AsyncClient, url: str,
                         season: int) -> tuple[dict[str, int], str]:
    """A season's standings, every page: ({user: score}, "") or ({}, what went wrong)."""
    served: dict[str, int] = {}
    path: str | None = f"/boards/{BOARD}/seasons/{season}/scores?limit=100"
    deadline = time.monotonic() + STANDINGS_SECONDS
    while path is not None:
        r = await client.get(url + path)
        if r.status_code == 503 and time.monotonic() < deadline:
            await asyncio.sleep(0.5)  # its final standings are being stored
            continue
        if r.status_code != 200:
            return {}, f"{r.status_code} {r.text[:200]!r}"
        page = r.json()
        if not integer_scores(page):
            return {}, f"a score or rank that is not an integer: {page[:3]}"
        for e in page:
            if e["user_id"] in served:
                return {}, f"{e['user_id']} twice"
            served[e["user_id"]] = e["score"]
        found = _NEXT.match(r.headers.get("link", ""))
        path = found[1] if found else None
    return served, ""
