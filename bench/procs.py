"""What both benchmarks need: ports, processes that come up and go down, tokens, and
the shared configuration's PostgreSQL schema and private Redis."""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import jwt
import psycopg
import redis


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_up(proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
    """Poll ``url`` until it answers 200; fail with the log's tail if the process exits."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited {proc.returncode}:\n{tail(log)}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url}: not up after 30 s:\n{tail(log)}")


def tail(path: Path, lines: int = 20) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def stop(proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """SIGTERM, then SIGKILL if it has not gone within ``timeout`` seconds."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (0 once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return 0.0
    fields = stat[stat.rfind(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def user_pids(user: str) -> list[int]:
    """Every process of ``user`` (``postgres``: the server, its backends and workers)."""
    try:
        uid = pwd.getpwnam(user).pw_uid
    except KeyError:
        return []
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    found.append(int(entry.name))
            except FileNotFoundError:
                continue
    return found


def load_average() -> str:
    """The machine's 1/5/15-minute load averages: other work shows up in the numbers."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def token(secret: str, user_id: str, name: str | None = None, **extra: object) -> str:
    """An HS256 token for ``user_id``, valid for an hour."""
    now = int(time.time())
    claims: dict[str, object] = {"sub": user_id, "iat": now, "exp": now + 3600, **extra}
    if name:
        claims["name"] = name
    return jwt.encode(claims, secret, algorithm="HS256")


# --- the shared configuration: PostgreSQL and Redis ---------------------------------

DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


@contextmanager
def postgres_schema(base_url: str) -> Iterator[str]:
    """A fresh schema in ``base_url``'s database, dropped at the end; yields the URL that
    puts it first on the search path (every instance given it shares the schema)."""
    schema = f"sb_bench_{secrets.token_hex(4)}"
    with psycopg.connect(base_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in base_url else "?"
    try:
        yield f"{base_url}{sep}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(base_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@dataclass
class RedisServer:
    """A private, memory-only ``redis-server`` on a free port; nothing else uses it."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


@contextmanager
def private_redis(tmp: Path, core: int | None) -> Iterator[RedisServer]:
    """Start ``redis-server`` (pinned to ``core`` unless None) and stop it at the end."""
    binary = shutil.which("redis-server") or shutil.which("redis-server", path="/usr/sbin")
    if binary is None:
        raise RuntimeError("missing redis-server: apt-get install redis-server")
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = tmp / "redis.log"
    cmd = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
           "--appendonly", "no", "--dir", str(tmp), "--logfile", str(log),
           "--daemonize", "no"]
    if core is not None:
        cmd = ["taskset", "-c", str(core), *cmd]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = RedisServer(proc, port, log)
    try:
        deadline = time.monotonic() + 10
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)
        with closing(client):
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited {proc.returncode}:\n{tail(log)}")
                try:
                    if client.ping():
                        break
                except redis.RedisError:
                    if time.monotonic() > deadline:
                        raise
                time.sleep(0.05)
        yield server
    finally:
        stop(proc)


def redis_problems(server: RedisServer) -> list[str]:
    """Warnings and errors in a private Redis' log (start-up notices are left out)."""
    if not server.log.exists():
        return []
    # Redis marks level '#' (warning) on its start and stop notices too: keep only the
    # lines that say WARNING or error, less the host's overcommit notice.
    return [line for line in server.log.read_text(errors="replace").splitlines()
            if " # " in line and ("WARNING" in line or "rror" in line)
            and "overcommit_memory" not in line]
