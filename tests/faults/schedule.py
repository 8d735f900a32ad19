"""Which faults a run injects, and in what order."""

from __future__ import annotations

from random import Random

# The short run (CI): each scenario once and the kills twice, the cheapest faults and
# the likeliest to lose a write. Redis away for 30 s is for the long run only.
SHORT_REPEATS = {"sigkill": 2, "sigkill-commit": 2, "redis-away": 0}
# The long run's weights: the cheap kills often, the slow faults less; season resets
# about one fault in eight, most of them with an instance or Redis away.
LONG_WEIGHTS = {"sigkill": 6, "sigkill-commit": 6, "sigstop": 3, "instance-kill": 3,
                "redis-away": 0.15, "postgres-restart": 1.5, "reset-kill": 1.5}


def short_schedule(names: list[str]) -> list[str]:
    return [name for name in names for _ in range(SHORT_REPEATS.get(name, 1))]


def long_schedule(names: list[str], faults: int, rng: Random) -> list[str]:
    """``faults`` faults, every scenario at least once, the rest drawn by weight."""
    schedule = list(names)
    weights = [LONG_WEIGHTS.get(name, 1.0) for name in names]
    schedule += rng.choices(names, weights, k=max(0, faults - len(schedule)))
    rng.shuffle(schedule)
    return schedule
