"""The machine's own PostgreSQL and Redis, stopped and started for fault scenarios.

Other tests need both, so every stop here comes with a start that runs whatever
happens, and ``ensure_postgres`` / ``redis_start`` can be called at any time to bring
them back. The Redis faults normally hit a redis-server of the run's own
(``PrivateRedis``); ``SystemRedis`` is the machine's, for a run that asks for it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

from tests.support import RedisProcess

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
# How Redis is started here when this module has to start it (it runs unsupervised,
# without a config file); the values seen on a running Redis take precedence.
REDIS_DEFAULTS = {"bind": "127.0.0.1 -::1", "port": "6379", "save": "", "appendonly": "no",
                  "dir": "/var/lib/redis", "logfile": "/var/log/redis/ci.log"}


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)


# -- PostgreSQL ---------------------------------------------------------------

def postgres_cluster() -> tuple[str, str]:
    """(version, name) of the local cluster on port 5432, from ``pg_lsclusters``."""
    for line in _run("pg_lsclusters", "--no-header").stdout.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[2] == "5432":
            return fields[0], fields[1]
    raise RuntimeError("no PostgreSQL cluster on port 5432 in pg_lsclusters")


def postgres_online() -> bool:
    version, name = postgres_cluster()
    return _run("pg_ctlcluster", version, name, "status").returncode == 0


def postgres_accepts() -> bool:
    return _run("pg_isready", "-h", "127.0.0.1", "-p", "5432", timeout=10).returncode == 0


def wait_postgres(timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not postgres_accepts():
        if time.monotonic() > deadline:
            raise RuntimeError("PostgreSQL did not come back")
        time.sleep(0.2)


def postgres_restart() -> float:
    """A fast restart (active sessions are cut, as in a crash-restart); seconds it took."""
    version, name = postgres_cluster()
    started = time.monotonic()
    result = _run("pg_ctlcluster", version, name, "restart", "-m", "fast")
    ensure_postgres()
    if result.returncode != 0:
        raise RuntimeError(f"pg_ctlcluster restart failed: {result.stderr.strip()}")
    return time.monotonic() - started


def ensure_postgres() -> None:
    if not postgres_online():
        version, name = postgres_cluster()
        _run("pg_ctlcluster", version, name, "start")
    wait_postgres()


# -- Redis ----------------------------------------------------------------------

def _redis_cli(*args: str, timeout: float = 10) -> subprocess.CompletedProcess[str]:
    return _run("redis-cli", "-h", REDIS_HOST, "-p", str(REDIS_PORT), *args, timeout=timeout)


def redis_up() -> bool:
    result = _redis_cli("ping", timeout=3)
    return result.returncode == 0 and result.stdout.strip() == "PONG"


def redis_config() -> dict[str, str]:
    """The settings a restart must keep, read from the running Redis."""
    config = dict(REDIS_DEFAULTS)
    for name in config:
        lines = _redis_cli("config", "get", name).stdout.splitlines()
        if len(lines) == 2:
            config[name] = lines[1]
    return config


def redis_start(config: dict[str, str]) -> None:
    if redis_up():
        return
    if shutil.which("redis-server") is None:
        raise RuntimeError("redis-server is not installed")
    args = ["redis-server", "--daemonize", "yes"]
    for name, value in config.items():
        args += [f"--{name}", *(value.split() if name == "bind" else [value])]
    result = _run(*args)
    deadline = time.monotonic() + 20
    while not redis_up():
        if time.monotonic() > deadline:
            raise RuntimeError(f"Redis did not come back: {result.stderr.strip()}")
        time.sleep(0.1)


def redis_stop() -> dict[str, str]:
    """Shut Redis down without saving; the config needed to start it again."""
    config = redis_config()
    _redis_cli("shutdown", "nosave")
    deadline = time.monotonic() + 10
    while redis_up():
        if time.monotonic() > deadline:
            raise RuntimeError("Redis did not stop")
        time.sleep(0.05)
    return config


def redis_flushdb(db: int) -> None:
    result = _redis_cli("-n", str(db), "flushdb")
    if result.returncode != 0:
        raise RuntimeError(f"FLUSHDB {db} failed: {result.stderr.strip()}")


def redis_free_db(candidates: range = range(8, 16)) -> int:
    """A Redis db number in ``candidates`` with no keys (the lowest), flushed for use."""
    keyspace = _redis_cli("info", "keyspace").stdout
    used = {int(m) for m in re.findall(r"^db(\d+):", keyspace, re.MULTILINE)}
    for db in candidates:
        if db not in used:
            redis_flushdb(db)
            return db
    db = candidates[-1]
    redis_flushdb(db)
    return db


# -- the Redis a cluster uses ---------------------------------------------------------

class PrivateRedis:
    """A redis-server of the run's own (the machine's binary and flags, a free port), so
    that killing it disturbs nobody else's tests. The cluster uses one db in 8..15."""

    def __init__(self, data_dir: Path, db: int = 8) -> None:
        self._process = RedisProcess(data_dir)
        self.port = self._process.port
        self.db = db
        self.url = f"redis://{REDIS_HOST}:{self.port}/{db}"

    def start(self) -> None:
        if self._process.proc is None or self._process.proc.poll() is not None:
            self._process.start()

    def stop(self) -> None:
        _run("redis-cli", "-p", str(self.port), "shutdown", "nosave", timeout=10)
        self._process.kill()  # if the shutdown did not finish it

    def flushdb(self) -> None:
        _run("redis-cli", "-p", str(self.port), "-n", str(self.db), "flushdb", timeout=10)


class SystemRedis:
    """The machine's Redis on 6379, a db of its own in 8..15 (flushed). Stopping it
    stops it for everyone: it is always started again (``heal``)."""

    def __init__(self) -> None:
        self.db = redis_free_db()
        self.url = f"redis://{REDIS_HOST}:{REDIS_PORT}/{self.db}"
        self._config = dict(REDIS_DEFAULTS)

    def start(self) -> None:
        redis_start(self._config)

    def stop(self) -> None:
        self._config = redis_stop()

    def flushdb(self) -> None:
        redis_flushdb(self.db)
