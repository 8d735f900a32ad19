"""What a batch of score updates does, decided in memory from what the store read.

The rules of a write, in one place for both stores: replays, bans, tickets, the
board's operator and the total cap. Each update sees the ones before it in the batch
(a user's second write adds to the first). The decisions become one ``BatchWrite``.
"""

from __future__ import annotations

from dataclasses import dataclass

from scoreboard.errors import (
    Conflict,
    Forbidden,
    Gone,
    NotFound,
    ScoreboardError,
    Unprocessable,
)
from scoreboard.jobs import ScoreUpdate, UpdateResult
from scoreboard.model import MAX_TOTAL, Board, Entry, StoredResponse
from scoreboard.store.base import BatchState, BatchWrite, Key, LedgerRow, Slot


@dataclass(frozen=True, slots=True)
class Staged:
    """An update written in the open transaction, waiting for its rank."""

    update: ScoreUpdate
    entry: Entry  # the user's entry after it (unchanged by a best score that is not better)
    points: int  # what velocity counts
    before: Entry | None = None  # the entry before it (None: the user had none)


def replay_or_mismatch(earlier: StoredResponse, fingerprint: str) -> UpdateResult | Unprocessable:
    if earlier.fingerprint != fingerprint:
        return Unprocessable("this Idempotency-Key was used with a different request",
                             "key_reused")
    return UpdateResult(earlier, None, replayed=True)


class Plan:
    def __init__(self, state: BatchState, now_ms: int) -> None:
        self.state = state
        self.write = BatchWrite()
        self._now_ms = now_ms
        self._ids = iter(state.ids)
        self._keys: set[Key] = set()
        self._entries: dict[Slot, Entry] = {}  # this batch's newest, per slot
        self._redeemed: set[str] = set()

    def update(self, u: ScoreUpdate) -> Staged | UpdateResult | ScoreboardError:
        if u.key is not None:
            key = (u.sub, u.key)
            if key in self._keys:  # the same key twice in one batch: the first holds it
                return Conflict("a request with this Idempotency-Key is in flight",
                                "key_in_flight")
            self._keys.add(key)
            earlier = self.state.responses.get(key)
            if earlier is not None:
                return replay_or_mismatch(earlier, u.fingerprint)
        outcome = self._stage(u)
        if isinstance(outcome, ScoreboardError) and u.key is not None:
            self.write.released.append((u.sub, u.key))  # refused: a retry may pass
        return outcome

    def entries(self) -> list[tuple[Entry, int, int]]:
        """The batch's final entry of each slot it changed, with its season and time."""
        return [(entry, self.state.boards[entry.board].season, self._now_ms)
                for entry in self._entries.values()]

    def _stage(self, u: ScoreUpdate) -> Staged | ScoreboardError:
        if u.user_id in self.state.banned or u.sub in self.state.banned:
            return Forbidden("this user is banned", "banned")
        board_id, amount, source = u.board, u.amount, u.source
        if u.action_id is not None:
            ticket = self.state.tickets.get(u.action_id)
            if ticket is None:
                return NotFound("no such action ticket", "unknown_ticket")
            if u.board_route and ticket.board != u.board:
                return Unprocessable(f"this ticket is for the board {ticket.board!r}",
                                     "ticket_board")
            if ticket.user_id != u.user_id:
                return Forbidden("this ticket was issued to another user", "ticket_not_yours")
            if ticket.redeemed_ms is not None or ticket.id in self._redeemed:
                return Conflict("this ticket was already redeemed", "ticket_redeemed")
            if self._now_ms < ticket.not_before_ms:
                return Conflict("this action was completed too fast", "ticket_too_early")
            if self._now_ms >= ticket.expires_ms:
                return Gone("this ticket has expired", "ticket_expired")
            board_id, amount = ticket.board, ticket.points
            source = f"action:{ticket.kind}:{ticket.id[:8]}"
        board = self.state.boards.get(board_id)
        if board is None:
            return NotFound(f"no board {board_id!r}", "unknown_board")
        if u.action_id is not None and board.spec.operator != "increment":
            return Unprocessable(f"the board {board_id!r} takes scores, not tickets",
                                 "ticket_board")
        staged = self._apply(board, u, amount, source)
        if isinstance(staged, Staged) and u.action_id is not None:
            self._redeemed.add(u.action_id)
            self.write.redeemed.append((u.action_id, self._now_ms))
        return staged

    def _apply(self, board: Board, u: ScoreUpdate, amount: int,
               source: str) -> Staged | ScoreboardError:
        """The board's operator: a sum (capped), the better score, or the last one."""
        slot = (board.id, u.user_id)
        held = self._entries.get(slot) or self.state.entries.get(slot)
        spec = board.spec
        if spec.operator == "increment":
            score = (held.score if held else 0) + amount
            if score > MAX_TOTAL:
                return Conflict(f"the total would pass {MAX_TOTAL}", "total_cap")
            changed = True
        elif spec.operator == "best":
            score = amount
            changed = held is None or spec.better(amount, held.score)
        else:
            score = amount
            changed = held is None or amount != held.score  # an equal score keeps its place
        row_id = next(self._ids)
        kind = "add" if spec.operator == "increment" else "submit"
        self.write.ledger.append(LedgerRow(row_id, board.id, board.season, u.user_id, kind,
                                           amount, self._now_ms, source))
        name = u.name or (held.name if held else None)
        if u.name:
            self.write.names[u.user_id] = u.name
        if changed or held is None:
            entry = Entry(board.id, board.season, u.user_id, score, row_id, name)
            self._entries[slot] = entry
        else:
            entry = Entry(board.id, board.season, u.user_id, held.score, held.seq, name)
            if u.name and slot in self._entries:
                self._entries[slot] = entry
        return Staged(u, entry, amount if kind == "add" else 0, held)
