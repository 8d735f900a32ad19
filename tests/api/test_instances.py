"""Two server processes on one PostgreSQL: what the store alone must guarantee.

(The shared ranking, live fan-out and rate limits across instances need Redis: issue 4.)
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import httpx

from tests.support import SECRET, ServerProcess, postgres_schema


def token(sub: str) -> str:
    import time

    import jwt
    now = int(time.time())
    return jwt.encode({"sub": sub, "iat": now, "exp": now + 600}, SECRET, algorithm="HS256")


async def test_a_ticket_redeems_once_across_instances(tmp_path: Path) -> None:
    actions = tmp_path / "actions.json"
    actions.write_text('{"quick": {"points": 7, "min_seconds": 0, "ttl_seconds": 60}}')
    async with postgres_schema() as url:
        env = {"SCOREBOARD_DATABASE_URL": url, "SCOREBOARD_ACTIONS": str(actions)}
        a, b = ServerProcess(tmp_path / "a", env), ServerProcess(tmp_path / "b", env)
        a.start()
        b.start()
        try:
            auth = {"Authorization": f"Bearer {token('alice')}"}
            async with httpx.AsyncClient(timeout=10) as client:
                for round_ in range(5):
                    issued = await client.post(f"{a.url}/actions", json={"kind": "quick"},
                                               headers=auth)
                    action_id = issued.json()["action_id"]
                    answers = await asyncio.gather(*(
                        client.post(f"{server.url}/score", headers=auth,
                                    json={"user_id": "alice", "action_id": action_id})
                        for server in (a, b) * 5))
                    codes = sorted(r.status_code for r in answers)
                    assert codes == [200] + [409] * 9, (round_, codes)
                # Each instance's own view of alice may lag (no shared ranking yet); the
                # store's, read by a third process started now, is exact.
            c = ServerProcess(tmp_path / "c", env)
            c.start()
            try:
                score = httpx.get(f"{c.url}/users/alice", timeout=10).json()["score"]
                assert score == 5 * 7
            finally:
                c.kill(signal.SIGTERM)
        finally:
            a.kill(signal.SIGTERM)
            b.kill(signal.SIGTERM)
