"""One fault run: start a cluster, put the load on it, inject the scheduled faults,
heal, then judge. ``run.py`` is its command line; the CI tests call ``run`` directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tests.faults import checker
from tests.faults.cluster import StoreSnapshot, cluster
from tests.faults.faults import SCENARIOS, Fault, FaultContext, settle
from tests.faults.history import History
from tests.faults.load import Load, LoadShape


@dataclass
class RunPlan:
    backend: str
    schedule: list[str]  # scenario names, in the order they are injected
    instances: int = 1
    shape: LoadShape = field(default_factory=LoadShape)
    seed: int = 0
    calm: tuple[float, float] = (0.3, 1.0)  # seconds of plain load between faults
    replay_sample: int = 200
    long: bool = False
    system_redis: bool = False  # the machine's Redis on 6379 instead of one of the run's own

    @property
    def disk_mb(self) -> int | None:
        return 64 if "disk-full" in self.schedule else None


@dataclass
class Report:
    plan: RunPlan
    faults: list[Fault]
    operations: Counter[str]
    answers: Counter[str]
    violations: list[str]
    convergence_seconds: float
    seconds: float
    notes: list[str] = field(default_factory=list)
    seasons: str = ""  # resets sent and what became of them, seasons in the store

    @property
    def per_scenario(self) -> Counter[str]:
        return Counter(f.scenario for f in self.faults)

    def text(self) -> str:
        lines = [
            f"backend {self.plan.backend}, {self.plan.instances} instance(s), seed "
            f"{self.plan.seed}, {self.plan.shape.users} users, {self.plan.shape.readers} "
            f"readers, {self.plan.shape.watchers} stream watchers; {self.seconds:.0f} s",
            f"faults injected: {len(self.faults)}",
            *(f"  {name:18} {n}" for name, n in sorted(self.per_scenario.items())),
            "operations: " + ", ".join(f"{s} {self.operations.get(s, 0)}"
                                       for s in ("ok", "refused", "unknown")),
            "attempt answers: " + ", ".join(f"{k} {v}" for k, v in
                                             sorted(self.answers.items())),
            *([self.seasons] if self.seasons else []),
            f"ranking equal to the store {self.convergence_seconds:.2f} s after recovery",
            f"invariant violations: {len(self.violations)}",
            *(f"  {v}" for v in self.violations[:50]),
            *(f"note: {n}" for n in self.notes),
        ]
        return "\n".join(lines)


async def run(root: Path, plan: RunPlan, log: bool = False) -> Report:
    rng = random.Random(plan.seed)
    history = History()
    faults: list[Fault] = []
    notes: list[str] = []
    started = time.monotonic()
    async with cluster(root, plan.backend, plan.instances, plan.disk_mb,
                       system_redis=plan.system_redis) as c:
        run_id = f"r{os.getpid()}-{plan.seed}-{int(time.time())}"
        load = Load(c, history, plan.shape, rng, run_id)
        context = FaultContext(c, load, history, rng, plan.long)
        load.settled(await c.season())
        load.start()
        try:
            await asyncio.sleep(1.0)
            for n, name in enumerate(plan.schedule):
                fault = Fault(name, time.monotonic())
                try:
                    await SCENARIOS[name](context, fault)
                except Exception as exc:  # a fault that failed to inject is reported
                    fault.problems.append(f"{name}: the injection failed: {exc!r}")
                finally:
                    await c.heal()
                    if load.season is None:  # a reset fault that failed before settling
                        with contextlib.suppress(Exception):
                            await settle(context, fault)
                    fault.ended = time.monotonic()
                faults.append(fault)
                with contextlib.suppress(RuntimeError):
                    await c.ready()
                if log:
                    print(f"[{time.monotonic() - started:6.1f}s] {n + 1}/{len(plan.schedule)} "
                          f"{name}: {fault.detail} {fault.problems or ''} "
                          f"ops {dict(history.counts())}", flush=True)
                await asyncio.sleep(rng.uniform(*plan.calm))
        finally:
            await c.heal()
            await c.ready()
            await load.stop()
        store = await c.snapshot()
        shared = c.backend == "sqlite" or await c.shares_ranking()
        converged, took = await checker.check_convergence(c, store, load.users)
        if shared:
            violations = converged
        else:
            notes.append("the instances do not share a ranking yet (no Redis support in the "
                         "server): ranking-equals-store checked per instance is skipped; "
                         f"{len(converged)} differences seen")
            violations = []
        violations = history.live_violations + [p for f in faults for p in f.problems] + \
            violations + checker.check_history(history, store) + \
            checker.check_seasons(history, store) + \
            await checker.check_season_standings(c, history, store) + \
            await checker.check_replays(c, history, rng, plan.replay_sample)
        after = await c.snapshot()
        if after.entries != store.entries:
            violations.append("exactly once: replaying acknowledged keys changed the totals")
    return Report(plan, faults, history.counts(), history.answers(), violations, took,
                  time.monotonic() - started, notes, _seasons(history, store))


def _seasons(history: History, store: StoreSnapshot) -> str:
    if not history.resets:
        return f"seasons: {store.season} (no resets sent)"
    outcomes = Counter(r.outcome for r in history.resets)
    happened = sum(len(store.resets.get(r.sub, [])) for r in history.resets)
    return (f"resets sent: {len(history.resets)} ("
            + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items()))
            + f"), happened {happened}; seasons in the store: {store.season}")
