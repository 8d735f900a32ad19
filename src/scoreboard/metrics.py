"""Prometheus metrics, in a registry of the app's own (no global state)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from scoreboard.logs import STDOUT

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


def _tasks() -> int:
    try:
        return len(asyncio.all_tasks())
    except RuntimeError:  # no loop running: rendered outside the server
        return 0


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._requests = Counter(
            "scoreboard_http_requests", "HTTP requests answered",
            ["route", "method", "status"], registry=self.registry,
        )
        self._latency = Histogram(
            "scoreboard_http_request_duration_seconds", "Time to answer an HTTP request",
            ["route", "method"], buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self._updates = Counter(
            "scoreboard_score_updates", "Score updates answered with success",
            ["outcome"], registry=self.registry,
        )
        self._refused = Counter(
            "scoreboard_score_updates_refused", "Score updates refused, by reason",
            ["reason"], registry=self.registry,
        )
        self._batch = Histogram(
            "scoreboard_group_commit_batch_size", "Updates committed per transaction",
            buckets=_BATCH_BUCKETS, registry=self.registry,
        )
        self._push_latency = Histogram(
            "scoreboard_live_push_latency_seconds",
            "From the commit that changed the top 10 to its push to the live clients",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0),
            registry=self.registry,
        )
        self._live_dropped = Counter(
            "scoreboard_live_dropped", "Live connections the server ended, by reason",
            ["reason"], registry=self.registry,
        )
        self._rebuild = Gauge(
            "scoreboard_ranking_rebuild_seconds", "How long the last ranking rebuild took",
            registry=self.registry,
        )
        self._flagged = Counter(
            "scoreboard_users_flagged", "Users flagged by detection, by reason",
            ["reason"], registry=self.registry,
        )
        self._resets = Counter(
            "scoreboard_season_resets", "Season resets this instance committed (each closes "
            "one season of one board)", registry=self.registry,
        )
        self._stored = Histogram(
            "scoreboard_standings_store_seconds",
            "How long storing a closed season's final standings took",
            buckets=(0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
            registry=self.registry,
        )
        self._me_sent = Counter(
            "scoreboard_me_pushes", "Personal 'me' messages sent to signed-in WebSocket "
            "connections", registry=self.registry,
        )
        self._me_coalesced = Counter(
            "scoreboard_me_coalesced", "Changes a signed-in user saw that joined a personal "
            "push already pending (no message of their own)", registry=self.registry,
        )
        self._signed_in = Gauge(
            "scoreboard_ws_authenticated", "WebSocket connections signed in (personal pushes)",
            registry=self.registry,
        )
        self._redis_up: Gauge | None = None  # exported only when Redis is configured
        self._live = Gauge("scoreboard_live_connections", "Open SSE and WebSocket connections",
                           registry=self.registry)
        # A leak of tasks (one per connection, plus a few of the service's) shows here.
        Gauge("scoreboard_asyncio_tasks", "asyncio tasks alive in this process",
              registry=self.registry).set_function(_tasks)
        Gauge("scoreboard_log_writes_failed", "Log writes that failed (a full disk, a closed "
              "pipe) since start; the service went on", registry=self.registry,
              ).set_function(lambda: STDOUT.dropped)
        # labels() costs a dict build and a lock; keep the children we have made.
        self._children: dict[tuple[str, ...], tuple[Counter, Histogram]] = {}

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, str(status))
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = (
                self._requests.labels(route, method, key[2]),
                self._latency.labels(route, method),
            )
        child[0].inc()
        child[1].observe(seconds)

    def update_accepted(self, replayed: bool) -> None:
        self._updates.labels("replayed" if replayed else "accepted").inc()

    def update_refused(self, reason: str) -> None:
        self._refused.labels(reason).inc()

    def batch(self, size: int) -> None:
        self._batch.observe(size)

    def rebuilt(self, seconds: float) -> None:
        self._rebuild.set(seconds)

    def flagged(self, reason: str) -> None:
        self._flagged.labels(reason).inc()

    def season_reset(self, closed: int) -> None:
        self._resets.inc(closed)

    def standings_stored(self, seconds: float) -> None:
        self._stored.observe(seconds)

    def push(self, seconds: float) -> None:
        self._push_latency.observe(seconds)

    def live_dropped(self, reason: str) -> None:
        self._live_dropped.labels(reason).inc()

    def count_live(self, count: Callable[[], int]) -> None:
        self._live.set_function(count)

    def me_sent(self, count: int) -> None:
        self._me_sent.inc(count)

    def me_coalesced(self, count: int) -> None:
        if count > 0:
            self._me_coalesced.inc(count)

    def count_signed_in(self, count: Callable[[], int]) -> None:
        self._signed_in.set_function(count)

    def redis_state(self, up: bool) -> None:
        if self._redis_up is None:
            self._redis_up = Gauge(
                "scoreboard_redis_up", "1 while Redis answers and holds the ranking; 0 while "
                "the service is degraded to the store", registry=self.registry,
            )
        self._redis_up.set(1 if up else 0)

    def render(self) -> bytes:
        return generate_latest(self.registry)
