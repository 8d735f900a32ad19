"""The fault suite from the command line.

    python -m tests.faults.run --backend sqlite                     # the short run
    python -m tests.faults.run --long --backend sqlite --report docs/faults-sqlite.txt
    python -m tests.faults.run --backend postgres-redis --instances 2 --scenarios instance-kill

The long run injects at least 200 faults across every scenario of the backend and
prints the report: faults per scenario, operations ok / refused / unknown, and every
invariant violation (there must be none: the exit status is 1 otherwise).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
from pathlib import Path

from tests.faults.faults import FOR_BACKEND
from tests.faults.runner import RunPlan, run
from tests.faults.schedule import long_schedule, short_schedule


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.faults.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=sorted(FOR_BACKEND), default="sqlite")
    parser.add_argument("--long", action="store_true", help="at least 200 faults")
    parser.add_argument("--faults", type=int, default=200, help="faults in the long run")
    parser.add_argument("--scenarios", help="comma-separated; default: all of the backend's")
    parser.add_argument("--instances", type=int, help="default: 1 for sqlite, 2 otherwise")
    parser.add_argument("--users", type=int, default=30)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--report", type=Path, help="also write the report to this file")
    parser.add_argument("--system-redis", action="store_true",
                        help="fault the machine's Redis on 6379 (a db in 8..15) instead of a "
                             "redis-server of the run's own; it is always started again")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1_000_000)
    names = args.scenarios.split(",") if args.scenarios else FOR_BACKEND[args.backend]
    unknown = set(names) - set(FOR_BACKEND[args.backend])
    if unknown:
        parser.error(f"not scenarios of {args.backend}: {', '.join(sorted(unknown))}")
    instances = args.instances or (1 if args.backend == "sqlite" else 2)
    schedule = (long_schedule(names, args.faults, random.Random(seed)) if args.long
                else short_schedule(names))
    plan = RunPlan(args.backend, schedule, instances, seed=seed, long=args.long,
                   system_redis=args.system_redis)
    plan.shape.users = args.users
    if args.long:
        plan.replay_sample = 2000
    with tempfile.TemporaryDirectory(prefix="faults-") as root:
        report = asyncio.run(run(Path(root), plan, log=True))
    text = report.text()
    print(text)
    if args.report:
        args.report.write_text(text + "\n")
    return 1 if report.violations else 0


if __name__ == "__main__":
    sys.exit(main())
