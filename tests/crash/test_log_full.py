"""A log that can't be written (its disk full) must not stop the service that logs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import jwt

from tests.support import SECRET, free_port


def test_writes_are_answered_while_standard_output_is_a_full_disk(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "SCOREBOARD_DATA_DIR": str(tmp_path), "SCOREBOARD_JWT_SECRET": SECRET}
    # /dev/full: every write fails with ENOSPC, as on a full filesystem.
    with open("/dev/full", "wb") as full, open(tmp_path / "stderr.log", "wb") as errors:
        proc = subprocess.Popen([sys.executable, "-m", "scoreboard", "serve", "--port", str(port)],
                                env=env, stdout=full, stderr=errors)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 15
        while True:
            assert proc.poll() is None, (tmp_path / "stderr.log").read_text()[-2000:]
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.05)
        now = int(time.time())
        token = jwt.encode({"sub": "alice", "iat": now, "exp": now + 60}, SECRET,
                           algorithm="HS256")
        with httpx.Client(base_url=url, timeout=5) as client:
            for i in range(20):  # each one logs (access log, commits) into the full disk
                r = client.post("/score", json={"user_id": "alice", "increment": 1},
                                headers={"Authorization": f"Bearer {token}"})
                assert r.status_code == 200, r.text
                assert r.json()["score"] == i + 1
            assert client.get("/users/alice").json()["score"] == 20
            metrics = client.get("/metrics").text
            failed = re.search(r"^scoreboard_log_writes_failed ([0-9.e+]+)$", metrics, re.M)
            assert failed is not None and float(failed.group(1)) > 0  # counted, not hidden
    finally:
        proc.terminate()
        assert proc.wait(timeout=15) == 0
