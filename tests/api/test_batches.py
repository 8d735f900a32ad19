"""One update never fails another: a group-commit batch holds many users' updates, and
whatever the database refuses for one of them (here a real trigger that refuses one
user's ledger rows) fails that update alone, on both stores."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import psycopg
import pytest
from structlog.testing import capture_logs

from tests.support import POSTGRES, Server, postgres_schema, problem

SQLITE_POISON = """
CREATE TRIGGER poison BEFORE INSERT ON ledger WHEN NEW.user_id = 'poison'
BEGIN SELECT RAISE(ABORT, 'poisoned row'); END
"""
POSTGRES_POISON = """
CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.user_id = 'poison' THEN
    RAISE EXCEPTION 'poisoned row' USING ERRCODE = 'check_violation';
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER poison BEFORE INSERT ON ledger FOR EACH ROW EXECUTE FUNCTION poison();
"""


async def burst(s: Server) -> None:
    """Twenty writers at once, one of them poisoned: they share batches."""
    users = [f"fine-{i}" for i in range(19)]
    with capture_logs() as logs:
        answers = await asyncio.gather(*(s.post(user, 3, key=f"{user}-k") for user in users),
                                       s.post("poison", 3, key="poison-k"))
    *fine, poisoned = answers
    assert [r.status_code for r in fine] == [200] * len(fine), [r.text for r in fine]
    problem(poisoned, 503)
    assert any(e["event"] == "batch_split" for e in logs), "the burst shared no batch"
    scores = {row["user_id"]: row["score"] for row in
              (await s.client.get("/scores?limit=100")).json()}
    assert all(scores[user] == 3 for user in users) and "poison" not in scores
    # Nothing of the refused update was kept, not even its key: a retry runs again.
    problem(await s.post("poison", 3, key="poison-k"), 503)


async def test_a_refused_update_fails_alone_on_sqlite(make_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    async with make_server() as s:
        conn = sqlite3.connect(tmp_path / "scoreboard.db")
        conn.executescript(SQLITE_POISON)
        conn.close()
        await burst(s)


async def test_a_refused_update_fails_alone_on_postgres(make_server) -> None:  # type: ignore[no-untyped-def]
    async with postgres_schema() as url, make_server(database_url=url) as s:
        schema = url.rsplit("%3D", 1)[1]
        with psycopg.connect(POSTGRES, options=f"-csearch_path={schema}",
                             autocommit=True) as conn:
            conn.execute(POSTGRES_POISON)  # type: ignore[arg-type]
        await burst(s)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_a_ticket_refused_for_the_cap_stays_redeemable(make_server, backend: str) -> None:  # type: ignore[no-untyped-def]
    """A refused request changes nothing: a ticket whose points would pass the total cap
    is not spent, and redeems once the total allows it."""
    from scoreboard.model import MAX_TOTAL, ActionKind

    quick = ActionKind("quick", points=10, min_seconds=0, ttl_seconds=60)
    async with postgres_schema() as url:
        overrides = {"database_url": url} if backend == "postgresql" else {}
        async with make_server(actions=(quick,), max_increment=MAX_TOTAL, **overrides) as s:
            assert (await s.post("alice", MAX_TOTAL - 5)).status_code == 200
            ticket = (await s.client.post("/actions", json={"kind": "quick"},
                                          headers=s.auth("alice"))).json()["action_id"]
            body = {"user_id": "alice", "action_id": ticket}
            headers = {**s.auth("alice"), "Idempotency-Key": "redeem"}
            problem(await s.client.post("/score", json=body, headers=headers), 409)
            await s.client.post("/admin/users/alice/revert", json={"since": "2000-01-01T00:00:00Z"},
                                headers=s.auth("root", scope="scoreboard:admin"))
            again = await s.client.post("/score", json=body, headers=headers)  # same key
            assert again.status_code == 200 and again.json()["score"] == 10
