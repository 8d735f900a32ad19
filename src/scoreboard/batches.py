"""What the group-commit writer does with a batch of jobs, inside and after its
transaction.

    read (keys claimed, users locked, bans, tickets, entries, ledger ids: one round trip)
      -> plan each update in memory (``plan.py``), users in order
      -> write the ledger, entries, names, tickets (sent, not waited for)
      -> ranks of the new entries (one ranking call for the batch)
      -> remember each keyed answer -> COMMIT
    after: boards whose season moved on elsewhere -> ranking.apply -> snapshots of the
           boards whose top changed -> the moves of each board (for personal pushes)
           -> velocity

A season reset runs alone (``seasons.reset``); after it, every instance learns of it
(a notice), the ranking starts the new season, live clients get its empty standings,
and the closed season's final standings are stored (``standings.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import cast

import orjson
import structlog

from scoreboard.boards import BoardCatalog
from scoreboard.broker.base import Broker, Move, Moves, Notice
from scoreboard.detection import Velocity
from scoreboard.errors import Forbidden, ScoreboardError
from scoreboard.jobs import (
    ALONE,
    BoardChange,
    BoardChanged,
    EventBatch,
    Flagged,
    FlagRequest,
    Job,
    Moderated,
    Moderation,
    Outcome,
    ScoreUpdate,
    SeasonReset,
    SeasonsReset,
    TicketRequest,
    UpdateResult,
)
from scoreboard.model import Board, Entry, SecurityEvent, StoredResponse, place, rfc3339
from scoreboard.moderation import change_board, moderate
from scoreboard.plan import Plan, Staged
from scoreboard.ranking.base import Ranking
from scoreboard.reads import Reads
from scoreboard.seasons import reset
from scoreboard.standings import Standings
from scoreboard.store.base import BatchRead, Key, Transaction

KEY_RETENTION_MS = 25 * 3600 * 1000  # API promise: at least 24 hours
PURGE_EVERY_MS = 60_000
PURGE_BATCH = 5000

log = structlog.get_logger("scoreboard.writer")


def alone(job: Job) -> bool:
    """Moderation and board changes each run in a transaction of their own."""
    return isinstance(job, ALONE)


class BatchWork:
    def __init__(self, ranking: Ranking, reads: Reads, catalog: BoardCatalog, broker: Broker,
                 velocity: Velocity, standings: Standings, clock: Callable[[], float],
                 max_boards: int, on_flag: Callable[[str], None],
                 on_board_gone: Callable[[str], None] = lambda board_id: None,
                 on_reset: Callable[[int], None] = lambda closed: None) -> None:
        self._on_board_gone = on_board_gone
        self._on_reset = on_reset
        self._standings = standings
        self._ranking = ranking
        self._reads = reads
        self._catalog = catalog
        self._broker = broker
        self._velocity = velocity
        self._clock = clock
        self._max_boards = max_boards
        self._on_flag = on_flag
        self._next_purge_ms = 0

    # -- in the transaction

    async def __call__(self, tx: Transaction,
                       jobs: Sequence[Job]) -> list[Outcome | ScoreboardError]:
        now_ms = int(self._clock() * 1000)
        if len(jobs) == 1 and isinstance(jobs[0], Moderation):
            return [await moderate(tx, jobs[0], self._catalog.all(), now_ms)]
        if len(jobs) == 1 and isinstance(jobs[0], BoardChange):
            return [await change_board(tx, jobs[0], self._max_boards, now_ms)]
        if len(jobs) == 1 and isinstance(jobs[0], SeasonReset):
            return [await reset(tx, jobs[0], now_ms)]
        results = await self._batch(tx, jobs, now_ms)
        if now_ms >= self._next_purge_ms:
            self._next_purge_ms = now_ms + PURGE_EVERY_MS
            await tx.forget_responses(now_ms - KEY_RETENTION_MS, PURGE_BATCH)
            # An expired ticket can never redeem; a day later nobody asks about it either.
            await tx.forget_tickets(now_ms - KEY_RETENTION_MS, PURGE_BATCH)
        return results

    async def _batch(self, tx: Transaction, jobs: Sequence[Job],
                     now_ms: int) -> list[Outcome | ScoreboardError]:
        updates = [job for job in jobs if isinstance(job, ScoreUpdate)]
        tickets = [job.ticket for job in jobs if isinstance(job, TicketRequest)]
        slots = {(u.board, u.user_id) for u in updates if u.action_id is None}
        state = await tx.read(BatchRead(
            now_ms=now_ms,
            keys=sorted({(u.sub, u.key) for u in updates if u.key is not None}),
            users=sorted({u.user_id for u in updates} | {u.sub for u in updates}
                         | {t.user_id for t in tickets}),
            tickets=sorted({u.action_id for u in updates if u.action_id is not None}),
            slots=sorted(slots),
            ids=len(updates),
        ))
        ticket_slots = {(t.board, t.user_id) for t in state.tickets.values()} - slots
        if ticket_slots:  # a ticket's board is known once the ticket is read
            more = await tx.read(BatchRead(now_ms=now_ms, slots=sorted(ticket_slots)))
            state.entries.update(more.entries)
            state.boards.update(more.boards)
        plan = Plan(state, now_ms)
        results: list[Outcome | ScoreboardError | Staged] = [None] * len(jobs)
        for i in sorted(range(len(jobs)), key=lambda i: _user_of(jobs[i])):
            job = jobs[i]
            if isinstance(job, ScoreUpdate):
                results[i] = plan.update(job)
            elif isinstance(job, TicketRequest):
                if job.ticket.user_id in state.banned:
                    results[i] = Forbidden("this user is banned", "banned")
                else:
                    await tx.issue_ticket(job.ticket, now_ms)
                    results[i] = job.ticket
            elif isinstance(job, FlagRequest):
                results[i] = await _flag(tx, job, now_ms)
            elif isinstance(job, EventBatch):
                await tx.record_events(job.events)
        plan.write.entries = plan.entries()
        await tx.write(plan.write)
        return await self._answer(tx, results, plan)

    async def _answer(self, tx: Transaction, results: list[Outcome | ScoreboardError | Staged],
                      plan: Plan) -> list[Outcome | ScoreboardError]:
        """Each staged update's answer, with its rank (one ranking call for the batch, in
        the order the ledger rows were given), remembered under its key."""
        staged = sorted((i for i, r in enumerate(results) if isinstance(r, Staged)),
                        key=lambda i: cast(Staged, results[i]).update.user_id)
        if staged:
            entries = [cast(Staged, results[i]).entry for i in staged]
            ranks = await self._ranking.ranks_after(tx, plan.state.boards, entries)
            remembered: list[tuple[Key, StoredResponse]] = []
            for i, rank in zip(staged, ranks, strict=True):
                r = cast(Staged, results[i])
                u, entry = r.update, r.entry
                answer: dict[str, object] = {"user_id": u.user_id, "score": entry.score,
                                             "rank": rank}
                if u.board_route:
                    answer = {"user_id": u.user_id, "board": entry.board,
                              "score": entry.score, "rank": rank}
                response = StoredResponse(u.fingerprint, 200, orjson.dumps(answer))
                if u.key is not None:
                    remembered.append(((u.sub, u.key), response))
                results[i] = UpdateResult(response, entry, points=r.points,
                                          board=plan.state.boards[entry.board],
                                          before=r.before)
            await tx.remember(remembered)
        return cast(list[Outcome | ScoreboardError], results)

    # -- after the commit

    async def after_commit(self, results: Sequence[Outcome | ScoreboardError]) -> None:
        entries: list[Entry] = []
        changed: set[str] = set()
        for r in results:
            if isinstance(r, UpdateResult) and r.entry is not None:
                entries.append(r.entry)
                if r.board is not None:
                    changed |= await self.catch_up(r.board)
            elif isinstance(r, SeasonsReset):
                changed |= await self._reset(r)
            elif isinstance(r, Moderated):
                changed |= await self._moderated(r)
            elif isinstance(r, BoardChanged):
                await self._board_changed(r)
            elif isinstance(r, Flagged) and r.new:
                log.warning("user_flagged", user_id=r.user_id, reason=r.reason)
                self._on_flag(r.reason)
        if entries:
            changed |= await self._ranking.apply(entries)
            self._velocity.saw(r.entry.user_id for r in results  # type: ignore[union-attr]
                               if isinstance(r, UpdateResult) and r.points)
        # The new tops and the moves, to every instance in one round trip.
        boards = [b for b in map(self._catalog.get, sorted(changed)) if b]
        await self._broker.publish(*await self._reads.snapshots(boards), *_moves_of(results))

    async def catch_up(self, board: Board) -> set[str]:
        """The board as a transaction read it: when its season moved on (here or on
        another instance that this one has not heard from yet), serve the new one."""
        known = self._catalog.get(board.id)
        if known is None or board.season <= known.season:
            return set()
        # The ranking first (it may wait on Redis); then the catalog and the cached pages
        # together, with no wait between: no read serves the old season's entries under
        # the new season, or caches a page the move makes stale.
        await self._ranking.new_season(board)
        self._catalog.put(board)
        self._reads.forget(board.id)
        return {board.id}

    async def _reset(self, r: SeasonsReset) -> set[str]:
        board = r.board
        if board is None:
            return set()
        changed = await self.catch_up(board)
        if not r.closed:
            return changed
        log.info("season_reset", board=board.id, closed=r.closed, season=board.season,
                 started_at=rfc3339(board.season_started_ms))
        self._on_reset(len(r.closed))
        await self._broker.publish(Notice("boards", board.id),  # every instance moves on
                                   Moves(board.id, board.season, None))
        for season in r.closed:
            self._standings.store_later(board, season)
        return changed | {board.id}

    async def _moderated(self, r: Moderated) -> set[str]:
        changed = await self._moderate_ranking(r)
        if r.action in ("ban", "unban", "revert"):  # rare: every board may have moved
            await self._broker.publish(*(Moves(board.id, board.season, None)
                                         for board in self._catalog.all()))
        return changed

    async def _moderate_ranking(self, r: Moderated) -> set[str]:
        if r.action == "ban":
            return await self._ranking.ban(r.user_id)
        if r.action == "unban":
            return await self._ranking.unban(r.user_id, r.entries)
        changed = await self._ranking.apply(r.entries) if r.entries else set()
        for board_id, user_id in r.gone:
            if await self._ranking.remove(board_id, user_id):
                changed.add(board_id)
        return changed

    async def _board_changed(self, r: BoardChanged) -> None:
        board = r.board
        if board is None:
            return
        if r.outcome == "created":
            self._catalog.put(board)
            await self._ranking.rebuild(board, [], None)
            await self._reads.publish([board])  # its (empty) top, for streams opened now
        elif r.outcome == "retitled":
            self._catalog.put(board)
        elif r.outcome == "deleted":
            self._catalog.remove(board.id)
            await self._ranking.drop(board.id)
            self._reads.forget(board.id)
            self._on_board_gone(board.id)
        if r.outcome in ("created", "retitled", "deleted"):
            await self._broker.publish(Notice("boards", board.id))


def _moves_of(results: Sequence[Outcome | ScoreboardError]) -> list[Moves]:
    """Each board's entries that a batch moved, with their places before and after."""
    boards: dict[str, tuple[Board, list[Move]]] = {}
    for r in results:
        if not isinstance(r, UpdateResult) or r.entry is None or r.board is None:
            continue
        entry, before, sort = r.entry, r.before, r.board.spec.sort
        if before is not None and (before.score, before.seq) == (entry.score, entry.seq):
            continue  # a best score that was not better: nothing moved
        moved = boards.setdefault(entry.board, (r.board, []))[1]
        moved.append((entry.user_id, None if before is None else place(sort, before.score),
                      place(sort, entry.score)))
    return [Moves(board.id, board.season, tuple(moved)) for board, moved in boards.values()]


def _user_of(job: Job) -> str:
    """The user whose rows a job touches: a batch takes them in this order."""
    if isinstance(job, ScoreUpdate):
        return job.user_id
    if isinstance(job, TicketRequest):
        return job.ticket.user_id
    return ""


async def _flag(tx: Transaction, job: FlagRequest, now_ms: int) -> Flagged:
    new = await tx.flag(job.user_id, job.reason, now_ms)
    if new:
        await tx.record_events([SecurityEvent(job.user_id, now_ms, "flagged", job.reason)])
    return Flagged(job.user_id, job.reason, new)
