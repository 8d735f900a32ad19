"""The service on PostgreSQL through HTTP (one instance; many need Redis, issue 4)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest

from scoreboard.settings import Settings, SettingsError
from tests.support import Server, postgres_schema, problem, running, settings_for


@pytest.fixture
async def on_postgres(tmp_path: Path) -> AsyncIterator[Callable[..., AbstractAsyncContextManager[Server]]]:
    async with postgres_schema() as url:
        def make(**overrides: Any) -> AbstractAsyncContextManager[Server]:
            return running(settings_for(tmp_path, database_url=url, **overrides))
        yield make


async def test_writes_reads_replays_and_restarts(on_postgres) -> None:  # type: ignore[no-untyped-def]
    async with on_postgres() as s:
        first = await s.post("alice", 5, key="k", name="Alice")
        assert first.json() == {"user_id": "alice", "score": 5, "rank": 1}
        answers = await asyncio.gather(*(s.post(f"u{i}", i + 1) for i in range(50)))
        assert {r.status_code for r in answers} == {200}
        problem(await s.post("alice", 6, key="k"), 422)
    async with on_postgres() as s:  # a new process on the same database
        again = await s.post("alice", 5, key="k", name="Alice")
        assert again.content == first.content
        assert again.headers["idempotent-replayed"] == "true"
        board = (await s.client.get("/scores", params={"limit": 3})).json()
        assert [(e["user_id"], e["score"]) for e in board] == [("u49", 50), ("u48", 49),
                                                               ("u47", 48)]
        assert (await s.client.get("/users/alice")).json()["name"] == "Alice"
        assert (await s.client.get("/readyz")).json() == {"status": "ready", "store": "up"}


async def test_tickets_and_moderation(on_postgres) -> None:  # type: ignore[no-untyped-def]
    from scoreboard.model import ActionKind

    quick = ActionKind("quick", points=7, min_seconds=0, ttl_seconds=60)
    async with on_postgres(actions=(quick,)) as s:
        ticket = (await s.client.post("/actions", json={"kind": "quick"},
                                      headers=s.auth("alice"))).json()
        answers = await asyncio.gather(*(s.client.post(
            "/score", json={"user_id": "alice", "action_id": ticket["action_id"]},
            headers=s.auth("alice")) for _ in range(10)))
        assert sorted(r.status_code for r in answers) == [200] + [409] * 9
        admin = s.auth("root", scope="scoreboard:admin")
        await s.client.post("/admin/users/alice/ban", headers=admin)
        assert (await s.client.get("/scores")).json() == []
        view = (await s.client.get("/admin/users/alice", headers=admin)).json()
        assert view["banned"] and view["score"] == 7 and view["ledger"][0]["delta"] == 7


def test_database_url_password_is_never_shown(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url="postgresql://app:s3cret@db:5432/board")
    assert settings.database_label == "postgresql://app:***@db:5432/board"
    with pytest.raises(SettingsError) as refused:
        Settings(data_dir=tmp_path, database_url="mysql://app:s3cret@db/board")
    assert "s3cret" not in str(refused.value)
