"""Administrators' writes, each in a transaction of its own and audited in it: moderation
of a user (view, ban, unban, revert, the flagged list) and board changes."""

from __future__ import annotations

from collections.abc import Sequence

from scoreboard.jobs import BoardChange, BoardChanged, Moderated, Moderation
from scoreboard.model import DEFAULT_BOARD, Board
from scoreboard.store.base import BatchRead, Transaction


async def moderate(tx: Transaction, job: Moderation, boards: Sequence[Board],
                   now_ms: int) -> Moderated:
    """The action, with the user locked like any write of theirs (so a ban and a write
    on another instance never interleave)."""
    if job.action in ("ban", "unban", "revert"):
        slots = [(board.id, job.user_id) for board in boards]
        state = await tx.read(BatchRead(now_ms=now_ms, users=[job.user_id], slots=slots))
        boards = list(state.boards.values())
    detail = ""
    result = Moderated(job.action, job.user_id)
    if job.action == "ban":
        detail = "banned" if await tx.ban(job.user_id, job.admin, now_ms) else "already banned"
    elif job.action == "unban":
        result = Moderated("unban", job.user_id, await tx.unban(job.user_id, now_ms))
    elif job.action == "revert":
        chosen = [b for b in boards if job.board is None or b.id == job.board]
        entries, gone, undone = await tx.revert(job.user_id, chosen, job.since_ms,
                                                f"revert:{job.admin}", now_ms)
        result = Moderated("revert", job.user_id, entries, gone, undone)
        detail = f"since_ms={job.since_ms} board={job.board or '*'} reverted={undone}"
    await tx.audit(job.admin, job.action, job.user_id, detail, now_ms)
    return result


async def change_board(tx: Transaction, job: BoardChange, max_boards: int,
                       now_ms: int) -> BoardChanged:
    spec = job.spec
    if job.action == "delete":
        if spec.id == DEFAULT_BOARD:
            return BoardChanged("protected", None)
        found = await tx.read(BatchRead(now_ms=now_ms, slots=[(spec.id, "")]))
        board = found.boards.get(spec.id)
        if board is None:
            return BoardChanged("missing", None)
        await tx.delete_board(spec.id, now_ms)
        await tx.audit(job.admin, "delete_board", spec.id, "", now_ms)
        return BoardChanged("deleted", board)
    made = await tx.create_board(spec, now_ms, max_boards)
    if isinstance(made, str):  # it exists (or did): other rules are a conflict
        if made != "exists":
            return BoardChanged(made, None)
        found = await tx.read(BatchRead(now_ms=now_ms, slots=[(spec.id, "")]))
        current = found.boards[spec.id]
        if not current.spec.same_rules(spec):
            return BoardChanged("exists", current)
        if current.spec.title == spec.title:
            return BoardChanged("unchanged", current)
        await tx.retitle_board(spec.id, spec.title)
        await tx.audit(job.admin, "retitle_board", spec.id, spec.title, now_ms)
        return BoardChanged("retitled", Board(spec, current.season, current.season_started_ms))
    await tx.audit(job.admin, "create_board", spec.id,
                   f"{spec.sort} {spec.operator} {spec.reset} {spec.timezone}", now_ms)
    return BoardChanged("created", made)
