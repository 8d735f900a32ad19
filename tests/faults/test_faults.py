"""The short fault suite (CI): every scenario of each backend at least once, under load,
then every invariant of ``checker.py``. The long run is ``python -m tests.faults.run
--long`` (docs/reliability.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.faults import FOR_BACKEND
from tests.faults.runner import RunPlan, run
from tests.faults.schedule import short_schedule

pytestmark = pytest.mark.slow

# Streams stalled and SIGTERM on PostgreSQL + Redis would repeat what the SQLite run
# covers (the hub and the stop do not depend on the store); the faults of its own stay.
# Season resets: a plain one on SQLite; on PostgreSQL + Redis one with an instance down
# and one with Redis down (each a reset as well). The long run has all of them.
SQLITE_SHORT = [name for name in FOR_BACKEND["sqlite"] if name != "reset-kill"]
POSTGRES_REDIS_SHORT = [name for name in FOR_BACKEND["postgres-redis"]
                        if name not in ("stall-streams", "reset")]


async def check(root: Path, plan: RunPlan) -> None:
    report = await run(root, plan)
    print("\n" + report.text())
    assert set(report.per_scenario) == set(plan.schedule)
    assert report.operations["ok"] > 500, "the load hardly ran: nothing was tested"
    assert not report.violations, report.text()


async def test_sqlite_loses_nothing_under_faults(tmp_path: Path) -> None:
    await check(tmp_path, RunPlan("sqlite", short_schedule(SQLITE_SHORT), seed=1))


async def test_postgres_redis_loses_nothing_under_faults(tmp_path: Path) -> None:
    plan = RunPlan("postgres-redis", short_schedule(POSTGRES_REDIS_SHORT), instances=2, seed=1)
    await check(tmp_path, plan)
