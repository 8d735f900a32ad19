"""Personal pushes on a real memory ranking: after any sequence of writes, every viewer
was last sent exactly what it sees now (no change missed), and a write reads only the
viewers it can have changed — never the whole board."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from scoreboard.broker.base import Moves
from scoreboard.model import Board, BoardSpec, Entry, RankedUser, place
from scoreboard.personal import Personal, me_message
from scoreboard.ranking.memory import MemoryRanking


class Sink:
    def __init__(self) -> None:
        self.last: dict[str, str] = {}
        self.count = 0

    def me(self, board: str, text: str) -> None:
        self.last[board] = text
        self.count += 1


class CountingRanking(MemoryRanking):
    """The memory ranking, counting whose neighbourhood is read."""

    def __init__(self) -> None:
        super().__init__()
        self.read: list[str] = []

    async def around(self, board_id: str, user_id: str, above: int,
                     below: int) -> list[RankedUser] | None:
        self.read.append(user_id)
        return await super().around(board_id, user_id, above, below)


async def settle(personal: Personal) -> None:
    for _ in range(50):
        await asyncio.sleep(0)


async def expected(ranking: MemoryRanking, board: str, user: str) -> str:
    view = await ranking.around(board, user, 1, 1)
    me = above = below = None
    if view is not None:
        i = next(i for i, e in enumerate(view) if e.user_id == user)
        me, above = view[i], view[i - 1] if i > 0 else None
        below = view[i + 1] if i + 1 < len(view) else None
    return me_message(board, user, me, above, below)


class World:
    def __init__(self, board: Board) -> None:
        self.board = board
        self.ranking = CountingRanking()
        self.personal = Personal(self.ranking, interval=0)
        self.scores: dict[str, int] = {}
        self.seq = 0

    async def start(self, scores: dict[str, int]) -> None:
        await self.ranking.rebuild(self.board, [], set())
        await self.write(scores)

    async def write(self, scores: dict[str, int]) -> None:
        """One commit: these users' new scores."""
        entries, moves = [], []
        sort = self.board.spec.sort
        for user, score in scores.items():
            self.seq += 1
            was = self.scores.get(user)
            entries.append(Entry(self.board.id, 1, user, score, self.seq, user))
            moves.append((user, None if was is None else place(sort, was), place(sort, score)))
            self.scores[user] = score
        await self.ranking.apply(entries)
        self.personal.heard(Moves(self.board.id, 1, tuple(moves)))
        await settle(self.personal)


@settings(max_examples=60, deadline=None)
@given(sort=st.sampled_from(["desc", "asc"]),
       start=st.lists(st.integers(0, 30), min_size=1, max_size=25),
       viewers=st.sets(st.integers(0, 30), min_size=1, max_size=10),
       writes=st.lists(st.lists(st.tuples(st.integers(0, 30), st.integers(0, 30)),
                                min_size=1, max_size=4), max_size=12))
def test_every_viewer_ends_with_what_it_sees(sort: str, start: list[int], viewers: set[int],
                                            writes: list[list[tuple[int, int]]]) -> None:
    async def run() -> None:
        world = World(Board(BoardSpec("b", "B", sort), 1, 0))  # type: ignore[arg-type]
        await world.start({f"u{i}": s for i, s in enumerate(start)})
        sinks = {f"u{v}": Sink() for v in viewers}  # some have no entry yet
        for user, sink in sinks.items():
            world.personal.watch(world.board, user, sink)
        await settle(world.personal)
        for commit in writes:
            await world.write({f"u{u}": s for u, s in commit})
            for user, sink in sinks.items():
                assert sink.last["b"] == await expected(world.ranking, "b", user), user

    asyncio.run(run())


async def test_a_write_reads_only_the_viewers_it_can_change() -> None:
    world = World(Board(BoardSpec("b", "B"), 1, 0))
    await world.start({f"u{i:04d}": 10_000 - i for i in range(2000)})  # u0000 first
    sinks = {f"u{i:04d}": Sink() for i in range(0, 2000, 10)}  # 200 viewers, every 10th
    for user, sink in sinks.items():
        world.personal.watch(world.board, user, sink)
    await settle(world.personal)
    world.ranking.read.clear()
    # u1505 climbs to u1480's score and lands right after it: it passes u1490 and u1500,
    # and becomes u1480's neighbour below. u1510's neighbour above (u1509) stays.
    await world.write({"u1505": 10_000 - 1480})
    assert set(world.ranking.read) == {"u1480", "u1490", "u1500"}
    for user in ("u1480", "u1490", "u1500"):
        assert sinks[user].last["b"] == await expected(world.ranking, "b", user)
    sent_before = {u: s.count for u, s in sinks.items()}
    world.ranking.read.clear()
    await world.write({"u0005": 10_000 - 5})  # an unchanged score: its own place, no one else
    assert set(world.ranking.read) <= {"u0000", "u0010"}
    assert {u: s.count for u, s in sinks.items()} == sent_before  # nothing they see changed
