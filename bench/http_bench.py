"""HTTP benchmark: scoreboard's GET /scores and durable POST /score against nginx.

Run from the project root: ``.venv/bin/python bench/http_bench.py [--quick]``.
The server is pinned to core 0 and wrk to core 1, so the numbers are for one
server core. ``--compare`` runs the embedded configuration (SQLite), PostgreSQL, and
PostgreSQL + a private Redis one after another and prints them side by side. See
bench/README.md for what is measured and the targets.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from procs import (
    DEFAULT_POSTGRES,
    RedisServer,
    cpu_seconds,
    free_port,
    load_average,
    postgres_schema,
    private_redis,
    redis_problems,
    stop,
    token,
    user_pids,
    wait_until_up,
)

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
WRK_SCRIPT = BENCH_DIR / "wrk.lua"
RESULTS = BENCH_DIR / "results" / "http.json"
GET_TARGET_RATIO = 0.3  # GET /scores against nginx serving the same bytes (restated 2026-12)
POST_TARGET_RATE = 8000.0  # durable POST /score per second
SPREAD_TARGET_RATIO = 0.9  # POSTs spread over many boards, against one board
SCATTERED_IDS = False  # --ids scattered
INSTANCE_USERS = 50_000_000  # instance i's bench users start at i times this
SEED_USERS = 10  # users with distinct scores >= 10, so the top 10 looks like a real board
# The configurations: where the server stores, and whether it shares through Redis.
CONFIGS = {
    "embedded": "embedded (SQLite)",
    "postgres": "PostgreSQL",
    "shared": "PostgreSQL + Redis",
}


@dataclass
class WrkResult:
    """One wrk run, read from the BENCH_JSON line that bench/wrk.lua prints."""

    name: str
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: dict[str, int]
    statuses: dict[str, int] = field(default_factory=dict)
    generated: int = 0
    last_index: int = -1
    exhausted: int = 0

    @property
    def rate(self) -> float:
        """Answers per second; for POST only the 200s count (an error is not an update)."""
        done = self.statuses.get("200", 0) if self.statuses else self.requests
        return done / self.seconds if self.seconds else 0.0

    @property
    def non_200(self) -> int:
        """Answers that were not 200 (POST: exact; GET: wrk's >= 400 count) plus socket errors."""
        if self.statuses:
            answered = sum(n for code, n in self.statuses.items() if code != "200")
        else:
            answered = self.errors.get("status", 0)
        sockets = sum(n for kind, n in self.errors.items() if kind != "status")
        return answered + sockets


@dataclass
class Env:
    """Everything one benchmark run starts, so cleanup knows what to stop."""

    tmp: Path
    secret: str
    server_port: int
    nginx_port: int
    database_url: str | None = None  # None: the embedded SQLite in the temp dir
    redis: RedisServer | None = None  # a private redis-server: the shared configuration
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    servers: list[str] = field(default_factory=list)  # every instance's URL, in start order
    server_pids: list[int] = field(default_factory=list)
    # CPU microseconds per durable write in the last POST run: the instances, PostgreSQL
    # (all its processes: backends, WAL writer, checkpointer) and Redis.
    cpu_per_write: dict[str, float] = field(default_factory=dict)

    @property
    def server_url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}"

    @property
    def nginx_url(self) -> str:
        return f"http://127.0.0.1:{self.nginx_port}"


# --- command line -----------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per measured run")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up before each")
    parser.add_argument("--connections", type=int, default=64,
                        help="wrk connections for GET /scores and nginx")
    parser.add_argument(
        "--post-connections", type=int, default=256,
        help="wrk connections for POST /score: group commit needs writers queued "
        "while a commit's fsync runs, or the loop idles during it",
    )
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (all on core 1)")
    parser.add_argument(
        "--requests", type=int, default=300_000,
        help="POST requests (user, token, key) to pre-generate; more are made if needed",
    )
    parser.add_argument("--quick", action="store_true", help="2-second runs, a smoke check")
    parser.add_argument(
        "--postgres", metavar="URL",
        help="store in this PostgreSQL (a fresh schema, dropped afterwards) instead of SQLite; "
        f"also the database for --redis, --compare and --configs (default {DEFAULT_POSTGRES})",
    )
    parser.add_argument(
        "--redis", action="store_true",
        help="with --postgres: also share through a private redis-server (pinned to core "
        "0 with the server, memory only, stopped afterwards): the shared configuration",
    )
    parser.add_argument(
        "--configs", type=config_list, default=None,
        help=f"comma-separated configurations to run one after another: {', '.join(CONFIGS)}"
        " (embedded: SQLite; postgres: PostgreSQL; shared: PostgreSQL + Redis)",
    )
    parser.add_argument("--boards", type=int, default=0,
                        help="then POST to one board and spread over this many boards "
                        "(issue 12: 100), alternating on fresh servers; ratio of the medians")
    parser.add_argument("--ids", choices=["sequential", "scattered"], default="sequential",
                        help="bench user ids (and keys): u0000001, u0000002, ... (each index "
                        "grows at its end) or hashes (each write lands anywhere, as real ids do)")
    parser.add_argument("--instances", type=int, default=0, choices=[0, 2],
                        help="then durable POSTs to one instance against two instances on "
                        "one PostgreSQL + Redis (shared; instance 2 on core 1 beside wrk), "
                        "alternating on fresh servers; ratio of the medians of the sums")
    parser.add_argument("--rounds", type=int, default=3,
                        help="with --boards or --instances: rounds of (one board, spread) "
                        "or (one instance, two)")
    parser.add_argument("--compare", action="store_true",
                        help="--configs embedded,postgres,shared: side by side")
    parser.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (logs, db)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="where to write JSON")
    args = parser.parse_args(argv)
    global SCATTERED_IDS
    SCATTERED_IDS = args.ids == "scattered"
    if args.quick:
        args.duration, args.warmup, args.requests = 2, 1, 60_000
    if args.redis and not args.postgres:
        parser.error("--redis needs --postgres URL (the shared configuration is both)")
    if args.configs and (args.compare or args.redis):
        parser.error("--configs names the configurations: no --compare or --redis with it")
    if args.instances and args.configs and "shared" not in args.configs:
        parser.error("--instances measures the shared configuration: add it to --configs")
    if args.compare:
        args.configs = list(CONFIGS)
    elif not args.configs:  # --postgres [--redis] alone, or the embedded default
        args.configs = ["shared" if args.redis else "postgres" if args.postgres else "embedded"]
    args.postgres = args.postgres or DEFAULT_POSTGRES
    if min(args.connections, args.post_connections) < args.threads:
        parser.error("--connections and --post-connections must be at least --threads")
    return args


def config_list(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names or set(names) - set(CONFIGS) or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"a comma-separated list of {', '.join(CONFIGS)}")
    return names


def check_tools(configs: list[str]) -> None:
    tools = ["wrk", "nginx", "taskset"] + (["redis-server"] if "shared" in configs else [])
    missing = [tool for tool in tools if find_tool(tool) is None]
    if missing:
        sys.exit(f"missing {missing}: apt-get install wrk nginx-light util-linux redis-server")


def find_tool(name: str) -> str | None:
    # nginx lives in /usr/sbin, which a non-root PATH often lacks.
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")



# --- processes --------------------------------------------------------------------


def start_server(env: Env, core: int = 0) -> str:
    """One more instance pinned to ``core``: the first on ``env.server_port``, logging to
    server.log and server.err, the n-th on a free port to server-<n>.log/.err. Its URL."""
    n = len(env.servers) + 1
    suffix = "" if n == 1 else f"-{n}"
    port = env.server_port if n == 1 else free_port()
    data_dir = env.tmp / f"data{suffix}"
    data_dir.mkdir()
    # Drop inherited SCOREBOARD_* so a developer's shell cannot change what is measured.
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("SCOREBOARD_")}
    child_env |= {
        "SCOREBOARD_DATA_DIR": str(data_dir),
        "SCOREBOARD_JWT_SECRET": env.secret,
        "SCOREBOARD_RATE_LIMIT": "1000000/minute",  # every request is a new user anyway
        "SCOREBOARD_MAX_BOARDS": "10000",  # --boards N plus "default"
    }
    if env.database_url:
        child_env["SCOREBOARD_DATABASE_URL"] = env.database_url
    if env.redis is not None:
        child_env["SCOREBOARD_REDIS_URL"] = env.redis.url
    cmd = [
        "taskset", "-c", str(core), str(ROOT / ".venv/bin/scoreboard"),
        "serve", "--host", "127.0.0.1", "--port", str(port),
    ]
    # One JSON log line per request: to a file, never to a pipe nobody drains.
    log, err_path = env.tmp / f"server{suffix}.log", env.tmp / f"server{suffix}.err"
    with open(log, "wb") as out, open(err_path, "wb") as err:
        env.processes.append(subprocess.Popen(cmd, env=child_env, stdout=out, stderr=err))
    url = f"http://127.0.0.1:{port}"
    wait_until_up(env.processes[-1], f"{url}/healthz", err_path)
    env.servers.append(url)
    env.server_pids.append(env.processes[-1].pid)
    return url


def start_nginx(env: Env, body: bytes) -> None:
    www = env.tmp / "www"
    www.mkdir()
    (www / "scores").write_bytes(body)
    # nginx's worker runs as nobody when started by root: it must be able to read the file.
    env.tmp.chmod(0o755)
    conf = env.tmp / "nginx.conf"
    conf.write_text(nginx_config(env.tmp, www, env.nginx_port))
    cmd = [
        "taskset", "-c", "0", find_tool("nginx") or "nginx",
        "-p", str(env.tmp), "-e", str(env.tmp / "error.log"), "-c", str(conf),
    ]
    with open(env.tmp / "nginx.out", "wb") as out:
        env.processes.append(subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT))
    wait_until_up(env.processes[-1], f"{env.nginx_url}/scores", env.tmp / "error.log")


def nginx_config(tmp: Path, www: Path, port: int) -> str:
    return f"""\
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    # uvicorn never closes a busy keep-alive connection; nginx would after 1000
    # requests by default, which would make the comparison about reconnects.
    keepalive_requests 10000000;
    server {{
        listen 127.0.0.1:{port};
        root {www};
        location = /scores {{ default_type application/json; }}
    }}
}}
"""





@contextmanager
def bench_env(keep_tmp: bool, config: str, postgres: str) -> Iterator[Env]:
    """A temp dir and, for ``postgres``/``shared``, a fresh schema (dropped at the end);
    for ``shared`` also a private redis-server, pinned to core 0 beside the server."""
    tmp = Path(tempfile.mkdtemp(prefix="scoreboard-bench-"))
    env = Env(tmp, secrets.token_urlsafe(36), free_port(), free_port())
    try:
        with ExitStack() as stack:
            if config != "embedded":
                env.database_url = stack.enter_context(postgres_schema(postgres))
            if config == "shared":
                env.redis = stack.enter_context(private_redis(tmp / "redis", core=0))
            try:
                yield env
            finally:  # the server goes before its Redis and its schema
                for proc in reversed(env.processes):
                    stop(proc)
    finally:
        if keep_tmp:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


# --- tokens and requests ----------------------------------------------------------



def bench_user(i: int) -> str:
    """Request i's user: ``u<i>`` in order, or (``--ids scattered``) a hash of i, as real
    user ids and keys are: then every write lands somewhere else in each index."""
    if SCATTERED_IDS:
        return "u" + hashlib.blake2b(b"%d" % i, digest_size=8).hexdigest()
    return f"u{i:07d}"


def append_requests(path: Path, secret: str, start: int, count: int, boards: int = 0) -> None:
    """Lines "user_id token key [path]" for bench/wrk.lua: request i's user (bench_user),
    key k<user>; with ``boards``, request i writes board b<i % boards>."""
    with path.open("a") as out:
        for i in range(start, start + count):
            user = bench_user(i)
            where = f" /boards/b{i % boards:03d}/score" if boards else ""
            out.write(f"{user} {token(secret, user)} k{user}{where}\n")


def make_boards(env: Env, count: int) -> None:
    """``count`` increment boards b000, b001, ... on the server."""
    admin = token(env.secret, "bench-admin", scope="scoreboard:admin")
    with httpx.Client(base_url=env.server_url, timeout=30) as client:
        for i in range(count):
            made = client.put(f"/admin/boards/b{i:03d}", json={"title": f"Board {i}"},
                              headers={"Authorization": f"Bearer {admin}"})
            made.raise_for_status()


def seed_board(env: Env) -> None:
    """A few users with distinct scores, so GET /scores serves a realistic top 10."""
    with httpx.Client(base_url=env.server_url) as client:
        for i in range(SEED_USERS):
            user = f"seed{i}"
            response = client.post(
                "/score",
                json={"user_id": user, "increment": 100 - i * 9},
                headers={
                    "Authorization": f"Bearer {token(env.secret, user, f'Player {i}')}",
                    "Idempotency-Key": f"seed-{i}",
                },
            )
            response.raise_for_status()


# --- wrk --------------------------------------------------------------------------


def run_wrk(
    name: str, url: str, args: argparse.Namespace, seconds: int,
    post_file: Path | None = None, first_index: int = 0,
) -> WrkResult:
    return finish_wrk(name, start_wrk(url, args, seconds, post_file, first_index))


def start_wrk(
    url: str, args: argparse.Namespace, seconds: int,
    post_file: Path | None = None, first_index: int = 0,
) -> subprocess.Popen[str]:
    connections = args.post_connections if post_file is not None else args.connections
    cmd = [
        "taskset", "-c", "1", find_tool("wrk") or "wrk",
        f"-t{args.threads}", f"-c{connections}", f"-d{seconds}s",
        "-s", str(WRK_SCRIPT), url,
    ]
    child_env = dict(os.environ)
    child_env.pop("BENCH_POST_FILE", None)
    if post_file is not None:
        child_env["BENCH_POST_FILE"] = str(post_file)
        cmd += ["--", str(first_index), str(args.threads)]
    return subprocess.Popen(cmd, env=child_env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish_wrk(name: str, proc: subprocess.Popen[str]) -> WrkResult:
    stdout, stderr = proc.communicate()
    match = re.search(r"^BENCH_JSON (.*)$", stdout, re.MULTILINE)
    if proc.returncode != 0 or match is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}):\n{stdout}\n{stderr}")
    return parse_wrk(name, json.loads(match.group(1)))


def parse_wrk(name: str, raw: dict[str, Any]) -> WrkResult:
    def num(key: str) -> float:
        return float(raw.get(key, 0))

    return WrkResult(
        name=name,
        requests=int(num("requests")),
        seconds=num("duration_us") / 1e6,
        p50_ms=num("p50_us") / 1000,
        p99_ms=num("p99_us") / 1000,
        max_ms=num("max_us") / 1000,
        errors={k: int(v) for k, v in raw["errors"].items()},
        statuses={k: int(v) for k, v in raw.get("statuses", {}).items()},
        generated=int(num("generated")),
        last_index=int(num("last_index")) if "last_index" in raw else -1,
        exhausted=int(num("exhausted")),
    )


def measure_get(name: str, url: str, args: argparse.Namespace) -> WrkResult:
    run_wrk(f"{name} warm-up", url, args, args.warmup)
    return run_wrk(name, url, args, args.duration)


def measure_post(env: Env, args: argparse.Namespace, boards: int = 0,
                 ) -> tuple[WrkResult, dict[str, int], int]:
    """Warm up, then measure (with ``boards``, every request to one of that many boards,
    in turn).

    Returns the run, the server's count of updates by outcome during it, and the first
    request index it used.
    """
    return measure_posts(env, args, [env.server_url], boards)[0]


def measure_posts(env: Env, args: argparse.Namespace, urls: list[str], boards: int = 0,
                  ) -> list[tuple[WrkResult, dict[str, int], int]]:
    """``measure_post`` against each of ``urls`` at once: a wrk per instance, each with
    the full ``--post-connections`` and users of its own."""
    name = f"POST over {boards} boards" if boards else "POST /score (durable)"
    files, bases = [], []
    for i in range(len(urls)):
        files.append(env.tmp / f"requests-{boards}-{i}.txt")
        # Users of their own: every write a first write, as in every other run.
        bases.append((10_000_000 if boards else 0) + INSTANCE_USERS * i)
        append_requests(files[i], env.secret, bases[i], args.requests, boards)
    warm = [finish_wrk("POST warm-up", proc) for proc in [
        start_wrk(url, args, args.warmup, file, 0) for url, file in zip(urls, files, strict=True)]]
    firsts = []
    for i, w in enumerate(warm):
        check_not_exhausted(w)
        firsts.append(w.last_index + 1)  # past every line any warm-up thread took
        # Never run out of fresh lines: twice the warm-up rate over the run, plus slack.
        needed = int(w.rate * args.duration * 2) + 20_000
        if args.requests - firsts[i] < needed:
            append_requests(files[i], env.secret, bases[i] + args.requests,
                            needed - (args.requests - firsts[i]), boards)
    before = [update_counts(url) for url in urls]
    cpu_before = cpu_use(env)
    procs = [start_wrk(url, args, args.duration, file, first)
             for url, file, first in zip(urls, files, firsts, strict=True)]
    runs = [finish_wrk(name, proc) for proc in procs]
    for run in runs:
        check_not_exhausted(run)
    time.sleep(0.5)  # let requests that were in flight when wrk stopped finish
    cpu_after = cpu_use(env)
    after = [update_counts(url) for url in urls]
    writes = sum(a.get("accepted", 0) - b.get("accepted", 0)
                 for a, b in zip(after, before, strict=True))
    env.cpu_per_write = {
        part: sum(cpu_after[part].get(pid, 0.0) - cpu_before[part].get(pid, 0.0)
                  for pid in cpu_after[part]) / max(writes, 1) * 1e6
        for part in cpu_after}
    return [(run, {k: a.get(k, 0) - b.get(k, 0) for k in a}, first)
            for run, a, b, first in zip(runs, after, before, firsts, strict=True)]


def cpu_use(env: Env) -> dict[str, dict[int, float]]:
    """CPU seconds so far of the instances, PostgreSQL's processes and Redis, by pid."""
    parts = {"instances": env.server_pids,
             "postgres": user_pids("postgres") if env.database_url else [],
             "redis": [env.redis.proc.pid] if env.redis else []}
    return {part: {pid: cpu_seconds(pid) for pid in pids} for part, pids in parts.items()
            if pids}


def check_not_exhausted(result: WrkResult) -> None:
    if result.exhausted:
        raise RuntimeError(f"{result.name}: ran out of pre-generated requests; raise --requests")


# --- checks -----------------------------------------------------------------------


def update_counts(server_url: str) -> dict[str, int]:
    """An instance's scoreboard_score_updates_total by outcome ("accepted", "replayed")."""
    text = httpx.get(f"{server_url}/metrics").text
    pattern = r'^scoreboard_score_updates_total\{outcome="(\w+)"\} (\S+)$'
    return {m[1]: int(float(m[2])) for m in re.finditer(pattern, text, re.MULTILINE)}


def check_post(
    env: Env, post: WrkResult, first: int, outcomes: dict[str, int], connections: int,
    base: int = 0,
) -> list[str]:
    """Cheap durability checks after the POST run; returns problems found."""
    problems = []
    if outcomes.get("replayed", 0):
        problems.append(f"{outcomes['replayed']} replays: an Idempotency-Key was sent twice")
    # Each connection has at most one request in flight when wrk stops counting, in the
    # measured run and in the warm-up before it (a slow server answers those late).
    extra = outcomes.get("accepted", 0) - post.statuses.get("200", 0)
    if not 0 <= extra <= 2 * connections:
        problems.append(f"server accepted {extra:+d} updates vs the 200s wrk saw")
    board = httpx.get(f"{env.server_url}/scores", params={"limit": 100}).json()
    bench_rows = [row for row in board if not row["user_id"].startswith("seed")]
    if len(board) != 100 or any(row["score"] != 1 for row in bench_rows):
        problems.append(f"GET /scores?limit=100: expected bench users with score 1, got {board}")
    # Users from the middle of the run were sent by every thread and answered long before
    # wrk stopped (the very first line may have gone to wrk's own request check).
    middle = base + (first + post.last_index) // 2
    for i in range(middle, middle + 10):
        user = bench_user(i)
        row = httpx.get(f"{env.server_url}/users/{user}")
        if row.status_code != 200 or row.json()["score"] != 1:
            problems.append(f"GET /users/{user}: {row.status_code} {row.text}")
    return problems


# --- report -----------------------------------------------------------------------


def report(
    config: str, results: list[WrkResult], outcomes: dict[str, int], problems: list[str],
    cpu_per_write: dict[str, float],
) -> dict[str, object]:
    nginx, get, post = results
    ratio = get.rate / nginx.rate if nginx.rate else 0.0
    print()
    print(f"== {CONFIGS[config]}")
    print(f"{'target':<26}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}{'non-200':>10}")
    for r in results:
        print(
            f"{r.name:<26}{r.rate:>10.0f}{r.p50_ms:>10.2f}{r.p99_ms:>10.2f}"
            f"{r.max_ms:>10.1f}{r.non_200:>10}"
        )
    get_met, post_met = ratio >= GET_TARGET_RATIO, post.rate >= POST_TARGET_RATE
    print(f"GET/nginx ratio: {ratio:.2f} (target >= {GET_TARGET_RATIO}: {verdict(get_met)})")
    print(f"POST rate: {post.rate:.0f}/s (target >= {POST_TARGET_RATE:.0f}: {verdict(post_met)})")
    wrk_200s, server_200s = post.statuses.get("200", 0), outcomes.get("accepted", 0)
    print(f"POST statuses seen by wrk: {post.statuses}; socket errors: {socket_errors(post)}")
    print(f"POST 200s: wrk saw {wrk_200s}, server accepted {server_200s} "
          f"({server_200s - wrk_200s:+d}; in flight when wrk stopped)")
    print(f"CPU per durable write: {describe_cpu(cpu_per_write)}")
    for r in results:
        if r.non_200:
            print(f"WARNING: {r.name}: {r.non_200} non-200 answers or socket errors {r.errors}")
    for problem in problems:
        print(f"PROBLEM: {problem}")
    return {
        "config": config,
        "results": [asdict(r) | {"rate": r.rate, "non_200": r.non_200} for r in results],
        "get_nginx_ratio": ratio,
        "get_target_met": get_met,
        "post_rate": post.rate,
        "post_target_met": post_met,
        "post_200_wrk": wrk_200s,
        "post_200_server": server_200s,
        "cpu_us_per_write": cpu_per_write,
        "problems": problems,
    }


CPU_NAMES = {"instances": "scoreboard", "postgres": "PostgreSQL", "redis": "Redis"}


def describe_cpu(cpu_per_write: dict[str, float]) -> str:
    """"scoreboard 170 µs (5,900/s a core), PostgreSQL ...": what one core of each carries."""
    return ", ".join(f"{CPU_NAMES[part]} {us:.0f} µs ({1e6 / max(us, 1e-9):,.0f}/s a core)"
                     for part, us in cpu_per_write.items())


def compare_table(summaries: dict[str, dict[str, Any]]) -> None:
    """The configurations side by side: one column each, nginx measured once."""
    names = list(summaries)
    width = max(20, *(len(CONFIGS[n]) + 2 for n in names))

    def row(label: str, cells: list[str]) -> None:
        print(f"{label:<30}" + "".join(f"{cell:>{width}}" for cell in cells))

    def cell(name: str, index: int, fmt: str) -> str:
        r = summaries[name]["results"][index]
        return fmt.format(**r)

    print()
    print("side by side (one run each; nginx measured once, in the first configuration)")
    row("", [CONFIGS[n] for n in names])
    row("nginx static top-10 req/s", [cell(names[0], 0, "{rate:,.0f}")] + [""] * (len(names) - 1))
    row("GET /scores req/s", [cell(n, 1, "{rate:,.0f}") for n in names])
    row("GET /scores p50 / p99 ms", [cell(n, 1, "{p50_ms:.2f} / {p99_ms:.2f}") for n in names])
    row("GET /scores / nginx", [f"{summaries[n]['get_nginx_ratio']:.2f}" for n in names])
    row("POST /score (durable) 200/s", [cell(n, 2, "{rate:,.0f}") for n in names])
    row("POST /score p50 / p99 ms", [cell(n, 2, "{p50_ms:.1f} / {p99_ms:.1f}") for n in names])
    row("POST /score max ms", [cell(n, 2, "{max_ms:.0f}") for n in names])
    for part, label in CPU_NAMES.items():
        row(f"CPU µs per write: {label}", [
            f"{summaries[n]['cpu_us_per_write'][part]:.0f}"
            if part in summaries[n]["cpu_us_per_write"] else "" for n in names])
    row("non-200 + socket errors", [
        str(sum(r["non_200"] for r in summaries[n]["results"][1:])) for n in names])
    row("problems", [str(len(summaries[n]["problems"])) for n in names])
    base = summaries[names[0]]
    for n in names[1:]:
        get = summaries[n]["results"][1]["rate"] / max(1.0, base["results"][1]["rate"])
        post = summaries[n]["post_rate"] / max(1.0, base["post_rate"])
        print(f"{CONFIGS[n]} / {CONFIGS[names[0]]}: GET x{get:.2f}, POST x{post:.2f}")


def log_problems(env: Env) -> list[str]:
    """Warnings, errors and tracebacks in the server's log and stderr, and in Redis'."""
    found = []
    for path in sorted([*env.tmp.glob("server*.log"), *env.tmp.glob("server*.err")]):
        name = path.name
        for line in path.read_text(errors="replace").splitlines():
            low = line.lower()
            if any(word in low for word in ('"warning"', '"error"', '"critical"', "traceback",
                                            "level=warning", "level=error", "exception")):
                found.append(f"{name}: {line[:300]}")
    if env.redis is not None:
        found += [f"redis.log: {line}" for line in redis_problems(env.redis)]
    return found


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def socket_errors(result: WrkResult) -> dict[str, int]:
    return {kind: n for kind, n in result.errors.items() if kind != "status"}


def write_json(path: Path, summary: dict[str, object], args: argparse.Namespace) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: str(v) for k, v in vars(args).items()}
    path.write_text(json.dumps(summary | {"settings": settings, "at": time.time()}, indent=2))
    print(f"wrote {path}")


def run_config(config: str, args: argparse.Namespace,
               nginx: WrkResult | None) -> tuple[dict[str, Any], WrkResult]:
    """One configuration on a fresh server; nginx is measured here unless given."""
    with bench_env(args.keep_tmp, config, args.postgres) as env:
        start_server(env)
        seed_board(env)
        top10 = httpx.get(f"{env.server_url}/scores").content
        load = load_average()
        print(f"{CONFIGS[config]}: server on port {env.server_port}"
              + (f", redis {env.redis.url}" if env.redis else "")
              + f"; load average {load}", flush=True)
        if nginx is None:
            start_nginx(env, top10)
            print(f"top-10 body: {len(top10)} bytes; wrk -t{args.threads} -d{args.duration}s "
                  f"after {args.warmup}s warm-up; -c{args.connections} for GET, "
                  f"-c{args.post_connections} for POST", flush=True)
            nginx = measure_get("nginx static top-10", f"{env.nginx_url}/scores", args)
        get = measure_get("GET /scores", f"{env.server_url}/scores", args)
        post, outcomes, first = measure_post(env, args)
        problems = check_post(env, post, first, outcomes, args.post_connections)
        stop(env.processes[0])  # the server: whatever it logs on the way out counts too
        logged = log_problems(env)
        for line in logged[:10]:
            print(f"  log: {line}")
        problems += [f"{len(logged)} warning/error lines in the logs"] if logged else []
        summary = report(config, [nginx, get, post], outcomes, problems, env.cpu_per_write)
        summary["log_problems"] = logged[:50]
        summary["load_average"] = [load, load_average()]  # at the start, at the end
        if any(r.non_200 for r in (nginx, get, post)):
            summary["problems"] = [*problems, "non-200 answers or socket errors"]
    if args.boards:
        summary["spread"] = spread_rounds(config, args)
        summary.setdefault("problems", []).extend(summary["spread"].pop("problems"))
    if args.instances and config == "shared":
        summary["instances"] = scale_rounds(config, args)
        summary.setdefault("problems", []).extend(summary["instances"].pop("problems"))
    return summary, nginx


def spread_rounds(config: str, args: argparse.Namespace) -> dict[str, Any]:
    """Durable POSTs to one board against the same spread over ``args.boards`` boards,
    alternating, each on a fresh server (a run on a database the other one grew, or at
    a quieter minute of this shared machine, would decide the ratio): the ratio of the
    medians."""
    rates: dict[int, list[float]] = {0: [], args.boards: []}
    problems: list[str] = []
    for round_no in range(1, args.rounds + 1):
        for boards in rates:
            with bench_env(args.keep_tmp, config, args.postgres) as env:
                start_server(env)
                seed_board(env)
                if boards:
                    make_boards(env, boards)
                run, outcomes, _ = measure_post(env, args, boards)
                extra = outcomes.get("accepted", 0) - run.statuses.get("200", 0)
                if run.non_200 or not 0 <= extra <= 2 * args.post_connections:
                    problems.append(f"{run.name}: {run.non_200} non-200s; server accepted "
                                    f"{extra:+d} updates vs wrk's 200s")
                stop(env.processes[0])
                problems += [f"{run.name}: {line}" for line in log_problems(env)[:10]]
            rates[boards].append(run.rate)
            print(f"round {round_no}: {run.name}: {run.rate:.0f}/s, p50 {run.p50_ms:.1f} ms, "
                  f"p99 {run.p99_ms:.1f} ms", flush=True)
    single, spread = statistics.median(rates[0]), statistics.median(rates[args.boards])
    ratio = spread / single if single else 0.0
    for problem in problems:
        print(f"  problem: {problem}")
    print(f"POST over {args.boards} boards: median {spread:.0f}/s against {single:.0f}/s on "
          f"one board; x{ratio:.2f} (target >= {SPREAD_TARGET_RATIO}: "
          f"{verdict(ratio >= SPREAD_TARGET_RATIO)})", flush=True)
    return {"boards": args.boards, "single_rates": rates[0], "spread_rates": rates[args.boards],
            "ratio": ratio, "problems": problems}


def scale_rounds(config: str, args: argparse.Namespace) -> dict[str, Any]:
    """Durable POSTs to one instance (core 0) against the same load on each of two
    instances (cores 0 and 1) of one PostgreSQL + Redis, alternating, each on a fresh
    schema and Redis: the ratio of the medians of the sums. This box has two cores, so
    the second instance shares core 1 with wrk, and PostgreSQL runs on either."""
    rates: dict[int, list[float]] = {1: [], 2: []}
    cpu: dict[int, list[dict[str, float]]] = {1: [], 2: []}
    problems: list[str] = []
    for round_no in range(1, args.rounds + 1):
        for count in rates:
            with bench_env(args.keep_tmp, config, args.postgres) as env:
                urls = [start_server(env, core) for core in range(count)]
                seed_board(env)
                measured = measure_posts(env, args, urls)
                for i, (url, (run, outcomes, first)) in enumerate(zip(urls, measured, strict=True)):
                    extra = outcomes.get("accepted", 0) - run.statuses.get("200", 0)
                    if run.non_200 or not 0 <= extra <= 2 * args.post_connections:
                        problems.append(f"{url}: {run.non_200} non-200s; server accepted "
                                        f"{extra:+d} updates vs wrk's 200s")
                    problems += [f"{url}: {p}" for p in check_post(
                        env, run, first, outcomes, args.post_connections, INSTANCE_USERS * i)]
                for proc in env.processes[:count]:
                    stop(proc)
                problems += log_problems(env)[:10]
            each = [run.rate for run, _, _ in measured]
            rates[count].append(sum(each))
            cpu[count].append(env.cpu_per_write)
            print(f"round {round_no}: {count} instance(s): {sum(each):.0f}/s ("
                  + " + ".join(f"{r:.0f}" for r in each) + "), p99 "
                  + " / ".join(f"{run.p99_ms:.1f}" for run, _, _ in measured) + " ms; "
                  + f"CPU per write: {describe_cpu(env.cpu_per_write)}", flush=True)
    one, two = statistics.median(rates[1]), statistics.median(rates[2])
    ratio = two / one if one else 0.0
    for problem in problems:
        print(f"  problem: {problem}")
    print(f"two instances: median {two:.0f}/s in all against {one:.0f}/s for one; "
          f"x{ratio:.2f} (target > 1: {verdict(ratio > 1)})", flush=True)
    return {"one_rates": rates[1], "two_rates": rates[2], "ratio": ratio,
            "one_cpu_us_per_write": cpu[1], "two_cpu_us_per_write": cpu[2],
            "problems": problems}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_tools(args.configs)
    summaries: dict[str, dict[str, Any]] = {}
    nginx: WrkResult | None = None
    for config in args.configs:
        summaries[config], nginx = run_config(config, args, nginx)
    if len(summaries) > 1:
        compare_table(summaries)
    write_json(args.output, {"configs": summaries}, args)
    return 1 if any(s["problems"] for s in summaries.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
