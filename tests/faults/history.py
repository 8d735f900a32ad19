"""What every operation asked and every answer it got, for the checker to judge.

An operation is one keyed increment for one user. It is retried with the same
Idempotency-Key until it gets a definite answer: a 200 (``ok``) or a refusal the
contract says stores nothing (a 4xx other than "key in flight" and 429: ``refused``).
Transport errors, 503 and 5xx are retried; an operation still without a definite
answer when the run ends is ``unknown`` — it may or may not have been applied.

A season reset (``ResetOp``) is sent once, never retried, under an admin subject of its
own: the store's audit row for that subject says whether it happened, whatever answer
(or none) came back.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

Status = Literal["invoked", "ok", "refused", "unknown"]


@dataclass
class Attempt:
    instance: int
    started: float  # time.monotonic()
    ended: float
    status: int | None  # None: no HTTP answer (refused connection, reset, timeout)
    error: str = ""
    replayed: bool = False
    body: bytes = b""


@dataclass
class Operation:
    user: str
    key: str
    increment: int
    status: Status = "invoked"
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def first_ok(self) -> Attempt | None:
        return next((a for a in self.attempts if a.status == 200), None)


@dataclass
class ResetOp:
    """One ``POST /admin/boards/default/reset``."""

    sub: str  # the admin subject of this reset alone: its audit row names it
    instance: int
    started: float
    ended: float = 0.0
    status: int | None = None  # None: no HTTP answer
    error: str = ""
    season: int | None = None  # the season a 200 opened

    @property
    def outcome(self) -> str:
        return str(self.status) if self.status is not None else (self.error or "in flight")

    @property
    def latest_commit(self) -> float:
        """The latest moment it can have committed: before its answer, or before the
        instance died under it; a timeout leaves it open."""
        if self.status is None and (not self.ended or "Timeout" in self.error):
            return float("inf")
        return self.ended


@dataclass
class History:
    operations: list[Operation] = field(default_factory=list)
    resets: list[ResetOp] = field(default_factory=list)
    # Invariant breaches seen while the run was going (readers, streams, bodies).
    live_violations: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def begin(self, user: str, key: str, increment: int) -> Operation:
        op = Operation(user, key, increment)
        self.operations.append(op)
        return op

    def violation(self, text: str) -> None:
        if len(self.live_violations) < 1000:  # a broken run should not eat the memory
            self.live_violations.append(f"[{time.monotonic() - self.started:.1f}s] {text}")

    def counts(self) -> Counter[str]:
        return Counter(op.status for op in self.operations)

    def answers(self) -> Counter[str]:
        """Every attempt's outcome: a status code, or the transport error's name."""
        return Counter(str(a.status) if a.status is not None else a.error
                       for op in self.operations for a in op.attempts)

    def fresh_oks_between(self, start: float, end: float) -> list[Operation]:
        """Operations with a first-time 200 sent after ``start`` and answered before ``end``."""
        return [op for op in self.operations for a in op.attempts
                if a.status == 200 and not a.replayed and start <= a.started and a.ended <= end]

    def answered_between(self, start: float, end: float, status: int) -> int:
        return sum(1 for op in self.operations for a in op.attempts
                   if a.status == status and start <= a.started and a.ended <= end)
