"""What both stores do the same way, over a dialect's own way of running a statement.

Reverts, bans, board creation and season resets are rare: several plain statements
each, written once here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from scoreboard.model import Board, BoardSpec, Entry
from scoreboard.store import sql
from scoreboard.store.base import Slot


class Statements(Protocol):
    """A transaction's way of running a qmark statement (``store/sql.py``)."""

    async def rows(self, statement: str, params: Sequence[Any]) -> list[Any]: ...

    async def run(self, statement: str, params: Sequence[Any]) -> None: ...

    async def reserve(self, count: int) -> list[int]:
        """``count`` new ledger ids, increasing."""

    async def lock(self, name: str) -> None:
        """Hold the lock ``name`` until the transaction ends (a no-op with one writer)."""


async def revert(q: Statements, user_id: str, boards: Sequence[Board], since_ms: int,
                 source: str, now_ms: int) -> tuple[list[Entry], list[Slot], int]:
    changed: list[Entry] = []
    gone: list[Slot] = []
    undone = 0
    for board in boards:
        key = (user_id, board.id, board.season)
        undo = await q.rows(sql.TO_REVERT, (*key, since_ms))
        if not undo:
            continue
        found = await q.rows(sql.ENTRY, (board.id, board.season, user_id))
        old = sql.entry(board.id, board.season, found[0]) if found else None
        (revert_id,) = await q.reserve(1)
        for row_id, _, _ in undo:
            await q.run(sql.MARK_REVERTED, (revert_id, row_id))
        undone += len(undo)
        new: Entry | None
        if board.spec.operator == "increment":
            points = sum(amount for _, kind, amount in undo if kind == "add")
            score = (old.score if old else 0) - points
            new = Entry(board.id, board.season, user_id, score, revert_id,
                        old.name if old else None)
        else:
            remaining = await q.rows(sql.REMAINING, key)
            chosen = _standing(board.spec, remaining)
            # The revert is the newest change of the entry: its seq (so that every mirror
            # of the entry, which only takes newer seqs, takes it); the score is what the
            # remaining submissions give.
            new = None if chosen is None else Entry(board.id, board.season, user_id, chosen,
                                                    revert_id, old.name if old else None)
        change = (new.score if new else 0) - (old.score if old else 0)
        await q.run(sql.ADD_LEDGER, (revert_id, board.id, board.season, user_id, "revert",
                                     change, now_ms, source))
        if new is None:
            await q.run(sql.DROP_ENTRY, (board.id, board.season, user_id))
            gone.append((board.id, user_id))
        else:
            await q.run(sql.SET_ENTRY, (board.id, board.season, user_id, new.score, new.seq,
                                        now_ms))
            changed.append(new)
    return changed, gone, undone


def _standing(spec: BoardSpec, submissions: list[Any]) -> int | None:
    """The score the remaining submissions (id, score, at_ms; oldest first) give a best or
    set board: the best, or the last; None when none remain."""
    if not submissions:
        return None
    if spec.operator == "set":
        return int(submissions[-1][1])
    best = submissions[0][1]
    for _, score, _ in submissions[1:]:
        if spec.better(score, best):
            best = score
    return int(best)


async def create_board(q: Statements, spec: BoardSpec, now_ms: int,
                       max_boards: int) -> Board | str:
    await q.lock("board catalog")  # the count and the insert, one instance at a time (a
    # space: no user id, whose locks share the namespace, can be this name)
    found = await q.rows(sql.BOARD_STATE, (spec.id,))
    if found:
        return "exists" if found[0][0] is None else "deleted"
    ((live,),) = await q.rows(sql.LIVE_BOARDS, ())
    if live >= max_boards:
        return "full"
    await q.run(sql.CREATE_BOARD, (spec.id, spec.title, spec.sort, spec.operator, spec.reset,
                                   spec.timezone, now_ms, now_ms))
    await q.run(sql.OPEN_SEASON, (spec.id, 1, now_ms))
    return Board(spec, 1, now_ms)


async def reset_season(q: Statements, board: Board, ended_ms: int) -> Board | None:
    """Close ``board.season`` at ``ended_ms`` and open the next from then; None when the
    board is not at that season any more (another instance reset it) or is gone."""
    if not await q.rows(sql.ADVANCE_SEASON, (ended_ms, board.id, board.season)):
        return None
    await q.run(sql.CLOSE_SEASON, (ended_ms, board.id, board.season))
    await q.run(sql.OPEN_SEASON, (board.id, board.season + 1, ended_ms))
    return Board(board.spec, board.season + 1, ended_ms)


async def ban(q: Statements, user_id: str, by: str, now_ms: int) -> bool:
    if not await q.rows(sql.BAN, (user_id, now_ms, by)):
        return False
    await q.run(sql.BANNED_FROM, (user_id, now_ms))
    return True


async def unban(q: Statements, user_id: str, now_ms: int) -> list[Entry]:
    if await q.rows(sql.UNBAN, (user_id,)):
        await q.run(sql.BAN_LIFTED, (now_ms, user_id))
    return [sql.entry(row[0], row[1], row[2:]) for row in await q.rows(sql.ENTRIES_OF, (user_id,))]
