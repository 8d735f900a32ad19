"""RedisRanking: one sorted set that every instance shares.

The encoding, exact for every total the store allows:
- score: the total itself. Totals are integers of at most 2^53 - 1 (MAX_TOTAL), which
  a double (Redis' score) holds exactly.
- member: 16 decimal digits of ``10^16 - 1 - seq``, then the user id. Redis orders equal
  scores by member, bytewise; read highest first (REV), equal totals then come by
  *smaller* seq first: whoever reached the total first. Works while ledger ids (seq)
  are below 10^16, 1,000 years of 300,000 increments a second.
- ``members`` (hash) maps user -> member and ``names`` (hash) user -> display name.
- ``banned`` (set): users kept off the board. A ban adds to it in the same script that
  takes the user off, and every apply skips its members, so a total that another
  instance committed before the ban but applies after it cannot bring the user back.
- ``built``: set by a completed rebuild. Without it (Redis restarted empty, or was
  flushed, or a rebuild is under way) every script refuses with ``BoardMissing``: a
  write must not land on, and a read must not show, a partial board. The failover
  ranking then answers from the store and rebuilds.

Writes mirror absolute totals: a total is applied only when its seq is newer than the
one held, so retries, replays, two instances and a rebuild racing each other can't
double count or go back. Each script runs atomically; all keys share one hash slot.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import islice
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from scoreboard.model import RankedUser, UserTotal
from scoreboard.ranking.base import TOP_WATCHED, Top
from scoreboard.ranking.preview import BatchPreview, Key
from scoreboard.store.base import Transaction

SEQ_DIGITS = 16
_SEQ_LIMIT = 10**SEQ_DIGITS - 1
REBUILD_CHUNK = 1000

# The version: at least Redis' clock in microseconds, so a counter lost with a flush
# starts above every version handed out before; at least ``floor``, a version this
# instance already showed (read from the store while Redis was away).
_BUMP = """
local function bump(key, floor)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local v = math.max((tonumber(redis.call('GET', key)) or 0) + 1, now, floor)
  redis.call('SET', key, string.format('%.0f', v))
  return v
end
"""

# KEYS: board, members, names, version, built, banned.
# ARGV: watched, then (user, total, member, name)... A watched of 0 is a rebuild's.
_APPLY = _BUMP + """
local watched = tonumber(ARGV[1])
if watched > 0 and redis.call('EXISTS', KEYS[5]) == 0 then return -1 end
local changed = false
for i = 2, #ARGV, 4 do
  local user, member = ARGV[i], ARGV[i + 2]
  local old = redis.call('HGET', KEYS[2], user)
  -- equal-width digit strings: a smaller prefix is a larger (newer) seq
  if redis.call('SISMEMBER', KEYS[6], user) == 0 and
     (not old or string.sub(member, 1, 16) < string.sub(old, 1, 16)) then
    if old then
      if redis.call('ZREVRANK', KEYS[1], old) < watched then changed = true end
      redis.call('ZREM', KEYS[1], old)
    end
    redis.call('ZADD', KEYS[1], ARGV[i + 1], member)
    redis.call('HSET', KEYS[2], user, member)
    if ARGV[i + 3] ~= '' then redis.call('HSET', KEYS[3], user, ARGV[i + 3]) end
    if redis.call('ZREVRANK', KEYS[1], member) < watched then changed = true end
  end
end
if changed then bump(KEYS[4], 0) end
return changed and 1 or 0
"""

# KEYS: board, members, version, built, banned. ARGV: watched, then users.
_BAN = _BUMP + """
local watched = tonumber(ARGV[1])
if watched > 0 and redis.call('EXISTS', KEYS[4]) == 0 then return -1 end
local changed = false
for i = 2, #ARGV do
  redis.call('SADD', KEYS[5], ARGV[i])
  local old = redis.call('HGET', KEYS[2], ARGV[i])
  if old then
    if redis.call('ZREVRANK', KEYS[1], old) < watched then changed = true end
    redis.call('ZREM', KEYS[1], old)
    redis.call('HDEL', KEYS[2], ARGV[i])
  end
end
if changed then bump(KEYS[3], 0) end
return changed and 1 or 0
"""

# KEYS: version. ARGV: floor.
_RAISE = _BUMP + "return bump(KEYS[1], tonumber(ARGV[1]))"

# KEYS: board, names, version, built. ARGV: limit. -> version, then (user, score, name)...
_TOP = """
if redis.call('EXISTS', KEYS[4]) == 0 then return -1 end
local found = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1, 'REV', 'WITHSCORES')
local out = {redis.call('GET', KEYS[3]) or '0'}
for i = 1, #found, 2 do
  local user = string.sub(found[i], 17)
  out[#out + 1] = user
  out[#out + 1] = found[i + 1]
  out[#out + 1] = redis.call('HGET', KEYS[2], user) or user
end
return out
"""

# KEYS: board, members, names, built. ARGV: user. -> rank - 1, score, name (or nil)
_GET = """
if redis.call('EXISTS', KEYS[4]) == 0 then return -1 end
local member = redis.call('HGET', KEYS[2], ARGV[1])
if not member then return false end
return {redis.call('ZREVRANK', KEYS[1], member), redis.call('ZSCORE', KEYS[1], member),
        redis.call('HGET', KEYS[3], ARGV[1]) or ARGV[1]}
"""

# KEYS: board, members, built. ARGV: n, n totals, then users.
# -> for each total, members with a score >= it; for each user, its score or ''.
_COMMITTED = """
if redis.call('EXISTS', KEYS[3]) == 0 then return -1 end
local n = tonumber(ARGV[1])
local out = {}
for i = 2, n + 1 do out[#out + 1] = redis.call('ZCOUNT', KEYS[1], ARGV[i], '+inf') end
for i = n + 2, #ARGV do
  local member = redis.call('HGET', KEYS[2], ARGV[i])
  out[#out + 1] = member and redis.call('ZSCORE', KEYS[1], member) or ''
end
return out
"""


class BoardMissing(RedisError):
    """Redis answers but lost the board (restarted empty, or flushed)."""


def _found(result: Any) -> Any:
    if result == -1:
        raise BoardMissing("Redis answers but holds no complete board (lost, or rebuilding)")
    return result


def _changed(result: int) -> bool:
    return bool(_found(result))


def member_of(total: UserTotal) -> str:
    if not 0 < total.seq <= _SEQ_LIMIT:
        raise ValueError(f"seq {total.seq} does not fit the ranking's {SEQ_DIGITS} digits")
    return f"{_SEQ_LIMIT - total.seq:0{SEQ_DIGITS}d}{total.user_id}"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisRanking:
    def __init__(self, client: Redis, prefix: str) -> None:
        self._board, self._members = prefix + "board", prefix + "members"
        self._names, self._version = prefix + "names", prefix + "version"
        self._built, self._banned = prefix + "built", prefix + "banned"
        self.prefix = prefix
        self._apply = client.register_script(_APPLY)
        self._ban = client.register_script(_BAN)
        self._raise = client.register_script(_RAISE)
        self._top = client.register_script(_TOP)
        self._get = client.register_script(_GET)
        self._committed = client.register_script(_COMMITTED)
        self._client = client

    async def rebuild(self, totals: Iterable[UserTotal], banned: set[str],
                      floor: int = 0) -> None:
        """Merge the store's totals in (newer seqs win, so writers racing this are safe),
        make ``banned`` the banned users, and raise the version — above ``floor`` too, a
        version shown meanwhile — so every hub takes the result."""
        users = sorted(banned)
        await self._client.delete(self._banned)
        for start in range(0, len(users), REBUILD_CHUNK):
            await self._client.sadd(self._banned, *users[start:start + REBUILD_CHUNK])
        rows = iter(totals)
        while chunk := list(islice(rows, REBUILD_CHUNK)):
            await self._apply(self._apply_keys, ["0", *self._arguments(chunk)])
        for start in range(0, len(users), REBUILD_CHUNK):  # off the board, if merged before
            await self._ban(self._ban_keys, ["0", *users[start:start + REBUILD_CHUNK]])
        await self._raise([self._version], [str(floor)])
        await self._client.set(self._built, "1")

    async def apply(self, totals: Sequence[UserTotal]) -> bool:
        if not totals:
            return False
        return _changed(await self._apply(self._apply_keys,
                                          [str(TOP_WATCHED), *self._arguments(totals)]))

    async def ban(self, user_id: str) -> bool:
        return _changed(await self._ban(self._ban_keys, [str(TOP_WATCHED), user_id]))

    async def unban(self, user_id: str, total: UserTotal | None) -> bool:
        await self._client.srem(self._banned, user_id)
        return await self.apply([total]) if total is not None else False

    @property
    def _apply_keys(self) -> list[str]:
        return [self._board, self._members, self._names, self._version, self._built,
                self._banned]

    @property
    def _ban_keys(self) -> list[str]:
        return [self._board, self._members, self._version, self._built, self._banned]

    async def top(self, limit: int) -> Top:
        found = _found(await self._top([self._board, self._names, self._version, self._built],
                                       [str(max(1, limit))]))
        entries = [
            RankedUser(i + 1, _text(found[j]), _text(found[j + 2]), int(found[j + 1]))
            for i, j in enumerate(range(1, len(found), 3))
        ]
        return Top(int(found[0]), entries)

    async def get(self, user_id: str) -> RankedUser | None:
        found = _found(await self._get([self._board, self._members, self._names, self._built],
                                       [user_id]))
        if found is None:
            return None
        ahead, score, name = found
        return RankedUser(int(ahead) + 1, user_id, _text(name), int(score))

    async def ranks_after(self, tx: Transaction, totals: Sequence[UserTotal]) -> list[int]:
        """One round trip for the batch: how many committed members score at least each
        total, and each user's committed score. A staged total's seq is newer than every
        committed one, so committed equal totals are ahead of it."""
        values = sorted({t.total for t in totals})
        users = sorted({t.user_id for t in totals})
        found = _found(await self._committed(
            [self._board, self._members, self._built],
            [str(len(values)), *map(str, values), *users]))
        at_least = dict(zip(values, (int(n) for n in found[:len(values)]), strict=True))
        committed: dict[str, Key] = {
            user: (-int(score), 0, user)  # seq 0: older than anything staged
            for user, score in zip(users, found[len(values):], strict=True) if score != b""
        }
        preview = BatchPreview(lambda key: at_least[-key[0]], committed.get)
        return [preview.rank_after(t) for t in totals]

    async def has_board(self) -> bool:
        """False after Redis lost its data (a restart without persistence, a flush)."""
        return bool(await self._client.exists(self._built))

    @staticmethod
    def _arguments(totals: Iterable[UserTotal]) -> list[str]:
        return [part for t in totals
                for part in (t.user_id, str(t.total), member_of(t), t.name or "")]
