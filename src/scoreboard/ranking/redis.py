"""RedisRanking: one sorted set per board, shared by every instance.

The encoding, exact for every score the store allows:
- score: the entry's score. Scores are integers of at most 2^53 - 1 (MAX_TOTAL), which
  a double (Redis' score) holds exactly.
- member: 16 decimal digits, then the user id. On a desc board the digits are
  ``10^16 - 1 - seq`` and the board is read highest first (REV): Redis orders equal
  scores by member, bytewise, so equal scores come smaller seq first. On an asc board
  the digits are ``seq`` itself and the board is read lowest first. Works while ledger
  ids (seq) are below 10^16, 1,000 years of 300,000 writes a second.
- per board and season ``b:<id>:<season>:order`` (the sorted set), ``...:members``
  (hash) maps user -> member, ``...:built`` is set by a completed rebuild (or, empty, when
  the season began); per board ``b:<id>:version`` counts changes of the watched top,
  across seasons; shared by all boards, ``names`` (hash) maps user -> display name and
  ``banned`` (set) holds the banned users: a ban adds the user there in the script that
  takes them off a board, and every apply skips its members, so a total another
  instance committed before the ban but applies after it cannot bring the user back.
- Without ``built`` (Redis restarted empty, or was flushed, or a rebuild is under way)
  every script refuses with ``BoardMissing``: a write must not land on, and a read
  must not show, a partial board. The failover ranking then answers from the store.
- A closed season's keys go once its final standings are stored (they are the store's
  from then on); its ``built`` stays a day as ``closed``, so that an entry of that
  season another instance applies late is dropped instead of recreating the keys.

Writes mirror absolute entries: one is applied only when its seq is newer than the one
held, so retries, replays, two instances and a rebuild racing each other can't double
count or go back. Each script runs atomically; every key shares the prefix's hash tag.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import islice
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from scoreboard.model import Board, Entry, RankedUser, Sort
from scoreboard.ranking.base import TOP_WATCHED, Key, Top, key_of
from scoreboard.ranking.preview import BatchPreview
from scoreboard.store.base import Transaction

SEQ_DIGITS = 16
_SEQ_LIMIT = 10**SEQ_DIGITS - 1
REBUILD_CHUNK = 1000

# Shared Lua: the version bump, and an entry's place in a board's order.
_LIB = """
local function bump(key, floor)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local v = math.max((tonumber(redis.call('GET', key)) or 0) + 1, now, floor)
  redis.call('SET', key, string.format('%.0f', v))
  return v
end
local function rank0(key, desc, member)  -- 0-based rank, or nil
  if desc then return redis.call('ZREVRANK', key, member) end
  return redis.call('ZRANK', key, member)
end
local function range(key, desc, start, stop)
  if desc then return redis.call('ZRANGE', key, start, stop, 'REV', 'WITHSCORES') end
  return redis.call('ZRANGE', key, start, stop, 'WITHSCORES')
end
-- How many entries rank strictly ahead of (score, member): those with a better score,
-- then, among equal scores, those whose member comes first (binary search in the ties).
local function ahead(key, desc, score, member)
  local lo, ties
  if desc then lo = redis.call('ZCOUNT', key, '(' .. score, '+inf')
  else lo = redis.call('ZCOUNT', key, '-inf', '(' .. score) end
  ties = redis.call('ZCOUNT', key, score, score)
  local a, b = 0, ties
  while a < b do
    local mid = math.floor((a + b) / 2)
    local m = range(key, desc, lo + mid, lo + mid)[1]
    local first
    if desc then first = m > member else first = m < member end
    if first then a = mid + 1 else b = mid end
  end
  return lo + a
end
local function newer(desc, member, old)  -- equal-width digits: compare as strings
  local new_seq, old_seq = string.sub(member, 1, 16), string.sub(old, 1, 16)
  if desc then return new_seq < old_seq end
  return new_seq > old_seq
end
"""

# KEYS: order, members, version, built, names, banned.
# ARGV: watched, desc, then (user, score, member, name)... A watched of 0 is a rebuild's.
_APPLY = _LIB + """
local watched, desc = tonumber(ARGV[1]), ARGV[2] == '1'
local built = redis.call('GET', KEYS[4])
if built == 'closed' then return 0 end
if watched > 0 and not built then return -1 end
local changed = false
for i = 3, #ARGV, 4 do
  local user, member = ARGV[i], ARGV[i + 2]
  if ARGV[i + 3] ~= '' then redis.call('HSET', KEYS[5], user, ARGV[i + 3]) end
  local old = redis.call('HGET', KEYS[2], user)
  if redis.call('SISMEMBER', KEYS[6], user) == 0 and (not old or newer(desc, member, old)) then
    if old then
      if rank0(KEYS[1], desc, old) < watched then changed = true end
      redis.call('ZREM', KEYS[1], old)
    end
    redis.call('ZADD', KEYS[1], ARGV[i + 1], member)
    redis.call('HSET', KEYS[2], user, member)
    if rank0(KEYS[1], desc, member) < watched then changed = true end
  end
end
if changed then bump(KEYS[3], 0) end
return changed and 1 or 0
"""

# KEYS: order, members, version, built, banned. ARGV: watched, desc, ban ('1'/'0'), users...
# Takes the users off the board; with ban, also into the banned set.
_TAKE = _LIB + """
local watched, desc = tonumber(ARGV[1]), ARGV[2] == '1'
local built = redis.call('GET', KEYS[4])
if built == 'closed' then return 0 end
if watched > 0 and not built then return -1 end
local changed = false
for i = 4, #ARGV do
  if ARGV[3] == '1' then redis.call('SADD', KEYS[5], ARGV[i]) end
  local old = redis.call('HGET', KEYS[2], ARGV[i])
  if old then
    if rank0(KEYS[1], desc, old) < watched then changed = true end
    redis.call('ZREM', KEYS[1], old)
    redis.call('HDEL', KEYS[2], ARGV[i])
  end
end
if changed then bump(KEYS[3], 0) end
return changed and 1 or 0
"""

# KEYS: version. ARGV: floor.
_RAISE = _LIB + "return bump(KEYS[1], tonumber(ARGV[1]))"

# KEYS: built, version. A season begins empty: built (unless it is already), version up.
_BEGIN = _LIB + """
if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('SET', KEYS[1], '1') end
return bump(KEYS[2], 0)
"""

# KEYS: order, members, built. ARGV: seconds the tombstone stays.
_CLOSE = """
redis.call('UNLINK', KEYS[1], KEYS[2])
redis.call('SET', KEYS[3], 'closed', 'EX', tonumber(ARGV[1]))
"""
CLOSED_KEPT_SECONDS = 86400

# KEYS: order, names, version, built. ARGV: desc, limit, then score and member to page
# after ('' for the first page).
# -> version, first rank - 1, then (user, score, member prefix, name)... (limit + 1 rows).
_TOP = _LIB + """
if redis.call('EXISTS', KEYS[4]) == 0 then return -1 end
local desc, limit = ARGV[1] == '1', tonumber(ARGV[2])
local start = 0
if ARGV[3] ~= '' then
  start = ahead(KEYS[1], desc, ARGV[3], ARGV[4])
  if redis.call('ZSCORE', KEYS[1], ARGV[4]) then start = start + 1 end
end
local found = range(KEYS[1], desc, start, start + limit)
local out = {redis.call('GET', KEYS[3]) or '0', start}
for i = 1, #found, 2 do
  local user = string.sub(found[i], 17)
  out[#out + 1] = user
  out[#out + 1] = found[i + 1]
  out[#out + 1] = string.sub(found[i], 1, 16)
  out[#out + 1] = redis.call('HGET', KEYS[2], user) or user
end
return out
"""

# KEYS: order, members, names, built. ARGV: desc, above, below, user.
# -> first rank - 1, then (user, score, name)...; false without an entry. above = -1: the
# user's own row only.
_AROUND = _LIB + """
if redis.call('EXISTS', KEYS[4]) == 0 then return -1 end
local desc, above, below = ARGV[1] == '1', tonumber(ARGV[2]), tonumber(ARGV[3])
local member = redis.call('HGET', KEYS[2], ARGV[4])
if not member then return false end
local r = rank0(KEYS[1], desc, member)
local start, stop = r, r
if above >= 0 then
  local size = redis.call('ZCARD', KEYS[1])
  start, stop = math.max(0, r - above), math.min(size - 1, r + below)
  local want = above + below + 1
  if stop - start + 1 < want then
    if start == 0 then stop = math.min(size - 1, want - 1)
    else start = math.max(0, stop - want + 1) end
  end
end
local found = range(KEYS[1], desc, start, stop)
local out = {start}
for i = 1, #found, 2 do
  local user = string.sub(found[i], 17)
  out[#out + 1] = user
  out[#out + 1] = found[i + 1]
  out[#out + 1] = redis.call('HGET', KEYS[3], user) or user
end
return out
"""

# KEYS: order, members, names, built. ARGV: desc, users... -> (user, rank - 1, score, name)...
_RANKS = _LIB + """
if redis.call('EXISTS', KEYS[4]) == 0 then return -1 end
local desc = ARGV[1] == '1'
local out = {}
for i = 2, #ARGV do
  local member = redis.call('HGET', KEYS[2], ARGV[i])
  if member then
    out[#out + 1] = ARGV[i]
    out[#out + 1] = rank0(KEYS[1], desc, member)
    out[#out + 1] = redis.call('ZSCORE', KEYS[1], member)
    out[#out + 1] = redis.call('HGET', KEYS[3], ARGV[i]) or ARGV[i]
  end
end
return out
"""

# KEYS: order, members, built. ARGV: desc, n, then n (score, member) pairs, then users.
# -> for each pair, entries strictly ahead of it; for each user, its member and score
# ('' and '' without an entry).
_COMMITTED = _LIB + """
if redis.call('EXISTS', KEYS[3]) == 0 then return -1 end
local desc, n = ARGV[1] == '1', tonumber(ARGV[2])
local out = {}
for i = 3, 2 + 2 * n, 2 do out[#out + 1] = ahead(KEYS[1], desc, ARGV[i], ARGV[i + 1]) end
for i = 3 + 2 * n, #ARGV do
  local member = redis.call('HGET', KEYS[2], ARGV[i])
  out[#out + 1] = member or ''
  out[#out + 1] = member and redis.call('ZSCORE', KEYS[1], member) or ''
end
return out
"""

# KEYS: order, built. -> entries on the board
_COUNT = """
if redis.call('EXISTS', KEYS[2]) == 0 then return -1 end
return redis.call('ZCARD', KEYS[1])
"""


class BoardMissing(RedisError):
    """Redis answers but lost a board (restarted empty, or flushed)."""


def _found(result: Any) -> Any:
    if result == -1:
        raise BoardMissing("Redis answers but holds no complete board (lost, or rebuilding)")
    return result


def member_of(sort: Sort, seq: int, user_id: str) -> str:
    if not 0 < seq <= _SEQ_LIMIT:
        raise ValueError(f"seq {seq} does not fit the ranking's {SEQ_DIGITS} digits")
    digits = _SEQ_LIMIT - seq if sort == "desc" else seq
    return f"{digits:0{SEQ_DIGITS}d}{user_id}"


def seq_of(sort: Sort, digits: bytes | str) -> int:
    value = int(digits)
    return _SEQ_LIMIT - value if sort == "desc" else value


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class _Keys:
    """A board's keys in its season ``season``."""

    __slots__ = ("built", "members", "order", "season", "sort", "version")

    def __init__(self, prefix: str, board_id: str, season: int, sort: Sort) -> None:
        base = f"{prefix}b:{board_id}:"
        self.order, self.members = f"{base}{season}:order", f"{base}{season}:members"
        self.built, self.version = f"{base}{season}:built", base + "version"
        self.season, self.sort = season, sort

    @property
    def desc(self) -> str:
        return "1" if self.sort == "desc" else "0"


class RedisRanking:
    def __init__(self, client: Redis, prefix: str) -> None:
        self.prefix = prefix
        self._names, self._banned = prefix + "names", prefix + "banned"
        self._banned_written: set[str] | None = None  # the set a rebuild last wrote
        self._boards: dict[str, _Keys] = {}
        self._apply = client.register_script(_APPLY)
        self._take = client.register_script(_TAKE)
        self._raise = client.register_script(_RAISE)
        self._begin = client.register_script(_BEGIN)
        self._close = client.register_script(_CLOSE)
        self._top = client.register_script(_TOP)
        self._around = client.register_script(_AROUND)
        self._ranks = client.register_script(_RANKS)
        self._committed = client.register_script(_COMMITTED)
        self._count = client.register_script(_COUNT)
        self._client = client

    def define(self, board: Board) -> None:
        """Know a board (its keys in its season, and its sort) without touching Redis."""
        self._boards[board.id] = _Keys(self.prefix, board.id, board.season, board.spec.sort)

    @property
    def board_ids(self) -> list[str]:
        return list(self._boards)

    async def _replace_banned(self, users: list[str]) -> None:
        """The banned set becomes ``users`` in one step: never empty in between, where a
        late write of a banned user would find no ban."""
        fresh = self._banned + ":new"
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.delete(fresh)
            for start in range(0, len(users), REBUILD_CHUNK):
                pipe.sadd(fresh, *users[start:start + REBUILD_CHUNK])
            if users:
                pipe.rename(fresh, self._banned)
            else:
                pipe.delete(self._banned)
            await pipe.execute()

    async def rebuild(self, board: Board, entries: Iterable[Entry], banned: set[str] | None,
                      floor: int = 0) -> None:
        """Merge the store's entries in (newer seqs win, so writers racing this are safe),
        make ``banned`` the banned users (None: keep them), and raise the version — above
        ``floor`` too, a version shown meanwhile — so every hub takes the result."""
        self.define(board)
        k = self._boards[board.id]
        users = sorted(banned or ())
        if banned is not None and banned != self._banned_written:
            await self._replace_banned(users)
            self._banned_written = set(banned)
        rows = iter(entries)
        while chunk := list(islice(rows, REBUILD_CHUNK)):
            await self._apply(self._apply_keys(k), ["0", k.desc, *self._arguments(k, chunk)])
        for start in range(0, len(users), REBUILD_CHUNK):  # off the board, if merged before
            await self._take(self._take_keys(k), ["0", k.desc, "1",
                                                  *users[start:start + REBUILD_CHUNK]])
        await self._raise([k.version], [str(floor)])
        await self._client.set(k.built, "1")

    async def drop(self, board_id: str) -> None:
        k = self._boards.pop(board_id, None)
        if k is not None:
            await self._client.delete(k.order, k.members, k.version, k.built)

    async def new_season(self, board: Board) -> bool:
        k = self._boards.get(board.id)
        if k is not None and k.season >= board.season:
            return False
        self.define(board)
        await self._begin_season(self._boards[board.id])
        return True

    async def _advance(self, board_id: str, season: int) -> None:
        k = self._boards[board_id]
        if season > k.season:
            k = self._boards[board_id] = _Keys(self.prefix, board_id, season, k.sort)
            await self._begin_season(k)

    async def _begin_season(self, k: _Keys) -> None:
        await self._begin([k.built, k.version])

    async def close_season(self, board_id: str, season: int) -> None:
        k = self._boards.get(board_id)
        if k is not None and k.season > season:
            closed = _Keys(self.prefix, board_id, season, k.sort)
            await self._close([closed.order, closed.members, closed.built],
                              [str(CLOSED_KEPT_SECONDS)])

    async def apply(self, entries: Sequence[Entry]) -> set[str]:
        by_board: dict[str, list[Entry]] = {}
        changed: set[str] = set()
        for entry in entries:
            k = self._boards.get(entry.board)
            if k is None or entry.season < k.season:
                continue  # a closed season's: its standings are the store's
            if entry.season > k.season:  # begun elsewhere; this instance hears of it later
                await self._advance(entry.board, entry.season)
                changed.add(entry.board)
            by_board.setdefault(entry.board, []).append(entry)
        if not by_board:
            return changed
        async with self._client.pipeline(transaction=False) as pipe:
            for board_id, chunk in by_board.items():
                k = self._boards[board_id]
                await self._apply(self._apply_keys(k), [str(TOP_WATCHED), k.desc,
                                                        *self._arguments(k, chunk)], client=pipe)
            results = await pipe.execute()
        return changed | {board_id for board_id, result in zip(by_board, results, strict=True)
                          if _found(result)}

    async def remove(self, board_id: str, user_id: str) -> bool:
        k = self._boards.get(board_id)
        if k is None:
            return False
        return bool(_found(await self._take(self._take_keys(k),
                                            [str(TOP_WATCHED), k.desc, "0", user_id])))

    async def ban(self, user_id: str) -> set[str]:
        await self._client.sadd(self._banned, user_id)
        boards = list(self._boards.values())
        async with self._client.pipeline(transaction=False) as pipe:
            for k in boards:
                await self._take(self._take_keys(k), [str(TOP_WATCHED), k.desc, "1", user_id],
                                 client=pipe)
            results = await pipe.execute()
        return {board_id for board_id, result in zip(self._boards, results, strict=True)
                if _found(result)}

    async def unban(self, user_id: str, entries: Sequence[Entry]) -> set[str]:
        await self._client.srem(self._banned, user_id)
        return await self.apply(entries)

    async def top(self, board_id: str, limit: int, after: Entry | None = None) -> Top:
        k = self._boards.get(board_id)
        if k is None:
            return Top(0, [])
        cursor = ["", ""] if after is None else [
            str(after.score), member_of(k.sort, after.seq, after.user_id)]
        found = _found(await self._top([k.order, self._names, k.version, k.built],
                                       [k.desc, str(max(1, limit)), *cursor]))
        version, start = int(found[0]), int(found[1])
        rows = [found[j:j + 4] for j in range(2, len(found), 4)]
        entries = [RankedUser(start + i + 1, _text(user), _text(name), int(score),
                              seq_of(k.sort, digits))
                   for i, (user, score, digits, name) in enumerate(rows[:limit])]
        last = entries[-1] if len(rows) > limit else None
        return Top(version, entries, None if last is None else
                   Entry(board_id, k.season, last.user_id, last.score, last.seq))

    async def get(self, board_id: str, user_id: str) -> RankedUser | None:
        found = await self._window(board_id, user_id, -1, 0)
        return found[0] if found else None

    async def around(self, board_id: str, user_id: str, above: int,
                     below: int) -> list[RankedUser] | None:
        return await self._window(board_id, user_id, above, below)

    async def _window(self, board_id: str, user_id: str, above: int,
                      below: int) -> list[RankedUser] | None:
        k = self._boards.get(board_id)
        if k is None:
            return None
        found = _found(await self._around([k.order, k.members, self._names, k.built],
                                          [k.desc, str(above), str(below), user_id]))
        if found is None:
            return None
        start = int(found[0])
        return [RankedUser(start + i + 1, _text(found[j]), _text(found[j + 2]),
                           int(found[j + 1]))
                for i, j in enumerate(range(1, len(found), 3))]

    async def ranks(self, board_id: str, user_ids: Sequence[str]) -> list[RankedUser]:
        k = self._boards.get(board_id)
        if k is None or not user_ids:
            return []
        found = _found(await self._ranks([k.order, k.members, self._names, k.built],
                                         [k.desc, *dict.fromkeys(user_ids)]))
        ranked = [RankedUser(int(found[j + 1]) + 1, _text(found[j]), _text(found[j + 3]),
                             int(found[j + 2])) for j in range(0, len(found), 4)]
        return sorted(ranked, key=lambda r: r.rank)

    async def count(self, board_id: str) -> int:
        k = self._boards.get(board_id)
        return 0 if k is None else int(_found(await self._count([k.order, k.built])))

    async def ranks_after(self, tx: Transaction, boards: dict[str, Board],
                          entries: Sequence[Entry]) -> list[int]:
        """One round trip for the batch (a script call per board, pipelined): how many
        committed entries rank ahead of each new entry, and each user's committed place."""
        by_board: dict[str, list[Entry]] = {}
        for entry in entries:
            by_board.setdefault(entry.board, []).append(entry)
        for board_id in by_board:
            if board_id not in self._boards:
                self.define(boards[board_id])
            await self._advance(board_id, boards[board_id].season)
        async with self._client.pipeline(transaction=False) as pipe:
            for board_id, chunk in by_board.items():
                k = self._boards[board_id]
                pairs = [part for e in chunk
                         for part in (str(e.score), member_of(k.sort, e.seq, e.user_id))]
                users = sorted({e.user_id for e in chunk})
                await self._committed([k.order, k.members, k.built],
                                      [k.desc, str(len(chunk)), *pairs, *users], client=pipe)
            results = await pipe.execute()
        previews: dict[str, BatchPreview] = {}
        for (board_id, chunk), found in zip(by_board.items(), results, strict=True):
            k = self._boards[board_id]
            found = _found(found)
            counted: dict[Key, int] = {
                key_of(k.sort, e.score, e.seq, e.user_id): int(n)
                for e, n in zip(chunk, found[:len(chunk)], strict=True)}
            users = sorted({e.user_id for e in chunk})
            held = found[len(chunk):]
            committed: dict[str, Key] = {
                user: key_of(k.sort, int(held[2 * i + 1]),
                             seq_of(k.sort, _text(held[2 * i])[:SEQ_DIGITS]), user)
                for i, user in enumerate(users) if held[2 * i] != b""}
            previews[board_id] = BatchPreview(
                lambda e, sort=k.sort: key_of(sort, e.score, e.seq, e.user_id),  # type: ignore[misc]
                counted.__getitem__, committed.get)
        return [previews[e.board].rank_after(e) for e in entries]

    async def has_boards(self) -> bool:
        """False after Redis lost its data (a restart without persistence, a flush)."""
        if not self._boards:
            return True
        return all(await self._client.mget([k.built for k in self._boards.values()]))

    def _apply_keys(self, k: _Keys) -> list[str]:
        return [k.order, k.members, k.version, k.built, self._names, self._banned]

    def _take_keys(self, k: _Keys) -> list[str]:
        return [k.order, k.members, k.version, k.built, self._banned]

    @staticmethod
    def _arguments(k: _Keys, entries: Iterable[Entry]) -> list[str]:
        return [part for e in entries
                for part in (e.user_id, str(e.score), member_of(k.sort, e.seq, e.user_id),
                             e.name or "")]
