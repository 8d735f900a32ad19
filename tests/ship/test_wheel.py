"""What ships is what is tested: the wheel, installed into a fresh virtualenv outside the
checkout, starts with ``scoreboard serve`` on SQLite and on PostgreSQL, scores and reads.

Every other test runs on the editable install, which would not notice a file missing
from the wheel (the SQL migrations once were).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import jwt
import pytest

from tests.support import SECRET, ServerProcess, postgres_schema

REPO = Path(__file__).resolve().parents[2]


# Other interpreters to install the wheel with (comma-separated paths); .ci/run names the
# image's Python (3.12) so that CI tests every version requires-python admits.
OTHER_PYTHONS = [p for p in os.environ.get("SCOREBOARD_TEST_PYTHONS", "").split(",") if p]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built from a copy of what the Dockerfile's context holds: a ``build/`` folder
    left in the checkout would otherwise lend the wheel files the source no longer has."""
    source, dist = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("dist")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "src", source / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--wheel-dir", str(dist), str(source)], check=True, timeout=600)
    (built,) = dist.glob("scoreboard-*.whl")
    return built


def venv_with(wheel: Path, python: str, root: Path) -> Path:
    """The ``bin`` folder of a new virtualenv of ``python`` holding the wheel and its pins."""
    venv = root / "venv"
    subprocess.run([python, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                    "--disable-pip-version-check", "-c", str(REPO / "constraints.txt"),
                    str(wheel)], check=True, timeout=900, cwd=root)
    return venv / "bin"


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel in a virtualenv of the Python running the tests."""
    return venv_with(wheel, sys.executable, tmp_path_factory.mktemp("venv"))


def clean_env(**overrides: str) -> dict[str, str]:
    """This process's environment without anything that could import the checkout."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV") and not k.startswith("SCOREBOARD_")}
    return {**env, **overrides}


def served(installed: Path, data_dir: Path, **env: str) -> ServerProcess:
    server = ServerProcess(data_dir, command=[str(installed / "scoreboard")], cwd=data_dir.parent)
    server.env = clean_env(SCOREBOARD_DATA_DIR=str(data_dir), SCOREBOARD_JWT_SECRET=SECRET,
                           **env)
    return server


def token(sub: str) -> str:
    now = int(time.time())
    return jwt.encode({"sub": sub, "iat": now, "exp": now + 600}, SECRET, algorithm="HS256")


def score_and_read(url: str) -> None:
    with httpx.Client(base_url=url, timeout=10) as client:
        for user, points in (("alice", 5), ("bob", 7), ("alice", 4)):
            r = client.post("/score", json={"user_id": user, "increment": points},
                            headers={"Authorization": f"Bearer {token(user)}"})
            assert r.status_code == 200, r.text
        assert client.get("/scores").json() == [
            {"rank": 1, "user_id": "alice", "name": "alice", "score": 9},
            {"rank": 2, "user_id": "bob", "name": "bob", "score": 7},
        ]
        assert client.get("/users/bob").json()["rank"] == 2
        page = client.get("/")  # the page and its assets are package data too
        assert page.status_code == 200 and b"<html" in page.content
        assert client.get("/static/app.js").status_code == 200
        docs = client.get("/docs")  # and the API explorer's, served from the install
        assert docs.status_code == 200
        for asset in ("/docs/swagger-ui-bundle.js", "/docs/swagger-ui.css"):
            assert client.get(asset).status_code == 200, asset


def test_the_installed_package_is_not_the_checkout(installed: Path) -> None:
    out = subprocess.run([str(installed / "python"), "-c",
                          "import scoreboard; print(scoreboard.__file__)"],
                         capture_output=True, text=True, check=True, env=clean_env(),
                         cwd=installed.parent.parent)
    location = Path(out.stdout.strip())
    assert installed.parent in location.parents, location
    assert REPO not in location.parents


def test_wheel_serves_on_sqlite(installed: Path, tmp_path: Path) -> None:
    with served(installed, tmp_path / "data") as server:
        score_and_read(server.url)
    assert (tmp_path / "data" / "scoreboard.db").exists()


def wheel_serves_on_other_python(wheel: Path, python: str, tmp_path: Path) -> None:
    installed = venv_with(wheel, python, tmp_path)
    with served(installed, tmp_path / "data") as server:
        score_and_read(server.url)
        with httpx.stream("GET", server.url + "/scores/stream", timeout=5) as stream:
            first = next(stream.iter_lines())  # the live stream's hand-stepped writes run too
        assert first.startswith("retry:") or first.startswith("event:")


async def test_wheel_serves_on_postgres(installed: Path, tmp_path: Path) -> None:
    async with postgres_schema() as url:
        migrate = subprocess.run([str(installed / "scoreboard"), "migrate"], timeout=60,
                                 capture_output=True, text=True,
                                 env=clean_env(SCOREBOARD_DATABASE_URL=url))
        assert migrate.returncode == 0, migrate.stderr
        with served(installed, tmp_path / "data", SCOREBOARD_DATABASE_URL=url) as server:
            score_and_read(server.url)


def test_a_failed_start_says_why(installed: Path, tmp_path: Path) -> None:
    closed = "postgresql://postgres@127.0.0.1:1/test"  # nothing listens on port 1
    out = subprocess.run([str(installed / "scoreboard"), "serve", "--port", "0"],
                         capture_output=True, text=True, timeout=60,
                         env=clean_env(SCOREBOARD_DATA_DIR=str(tmp_path),
                                       SCOREBOARD_JWT_SECRET=SECRET,
                                       SCOREBOARD_DATABASE_URL=closed))
    assert out.returncode != 0
    assert "scoreboard could not start: cannot open the PostgreSQL database" in out.stderr
    assert "Connection refused" in out.stderr
    assert "Traceback" not in out.stderr


if OTHER_PYTHONS:  # defined only when there are some: nothing to skip otherwise
    test_wheel_serves_on_other_pythons = pytest.mark.parametrize("python", OTHER_PYTHONS)(
        wheel_serves_on_other_python)
