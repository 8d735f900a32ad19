"""Builds the ASGI app from settings: wiring only. Nothing connects before the lifespan starts.

    Edge (ids, limits, headers, log, metrics)
      -> CORS (only when origins are configured)
        -> HotDispatch: GET /scores, POST /score, POST /actions, GET /scores/stream
           (plain ASGI)
          -> FastAPI: everything else, 404 / 405 with Allow, /docs, /openapi.json
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from scoreboard.api.admin import admin_router
from scoreboard.api.asgi import AsgiEndpoint
from scoreboard.api.authn import authenticate
from scoreboard.api.boards import boards_router
from scoreboard.api.cors import StrictCORS
from scoreboard.api.edge import Edge
from scoreboard.api.hot import ScoreRoutes
from scoreboard.api.live import LiveRoutes
from scoreboard.api.openapi import install_openapi
from scoreboard.api.page import load_assets, page_router
from scoreboard.api.routes import install_error_handlers, router
from scoreboard.api.seasons import seasons_router
from scoreboard.auth import Identity, TokenSigner, TokenVerifier
from scoreboard.broker.base import Broker
from scoreboard.broker.memory import MemoryBroker
from scoreboard.errors import ScoreboardError
from scoreboard.live import Hub
from scoreboard.logs import AccessLog, level_number
from scoreboard.metrics import Metrics
from scoreboard.personal import Personal
from scoreboard.ranking.base import Ranking
from scoreboard.ranking.memory import MemoryRanking
from scoreboard.ratelimit import RateLimits
from scoreboard.redislink import RedisLink
from scoreboard.service import Service
from scoreboard.settings import Settings
from scoreboard.store.base import Store
from scoreboard.store.sqlite import SQLiteStore

log = structlog.get_logger("scoreboard.app")
Handler = Callable[[Scope, Receive, Send], Awaitable[None]]

API_DESCRIPTION = """\
A live leaderboard. `GET /scores` is public; `POST /score` needs a bearer JWT whose
`sub` is the user (or an administrator's token). Every error is
`application/problem+json`.
"""


class HotDispatch:
    """Sends the hot routes straight to their apps; the rest to the framework.

    The live streams are here too: each of their pushes goes through every ASGI layer
    between the server and the app, once per subscriber, and each suspended layer is
    held in memory for as long as the connection lives. ``/boards/{board}/...`` paths
    of the hot routes match by their last segment.
    """

    def __init__(self, routes: Sequence[tuple[str, BaseRoute, Handler]],
                 fallback: ASGIApp) -> None:
        self._routes = {(method, getattr(route, "path", "")): (route, handler)
                        for method, route, handler in routes}
        self._fallback = fallback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http" or kind == "websocket":
            method = scope["method"] if kind == "http" else "WEBSOCKET"
            path = scope["path"]
            found = self._routes.get((method, path))
            if found is None and path.startswith("/boards/"):
                _, _, board, tail = path.split("/", 3) if path.count("/") == 3 else ("",) * 4
                found = self._routes.get((method, f"/boards/{{board}}/{tail}")) if tail else None
                if found is not None:
                    scope["path_params"] = {"board": board}
            if found is not None:
                scope["route"] = found[0]
                await found[1](scope, receive, send)
                return
        await self._fallback(scope, receive, send)


def make_store(settings: Settings) -> Store:
    """The store the settings name: chosen here, once; nothing else asks which runs."""
    if settings.uses_postgres:
        from scoreboard.store.postgres import PostgresStore  # the driver loads only if chosen

        return PostgresStore(settings.database_url)
    return SQLiteStore(settings.sqlite_path)


class Shared:
    """The parts many instances share through Redis, when it is configured."""

    def __init__(self, settings: Settings, store: Store, metrics: Metrics) -> None:
        from scoreboard.broker.redis import RedisBroker  # loaded only if chosen
        from scoreboard.ranking.failover import FailoverRanking
        from scoreboard.ranking.redis import RedisRanking

        assert settings.redis_url is not None
        self.link = RedisLink(settings.redis_url, settings.redis_prefix,
                              on_state=metrics.redis_state)
        self.ranking = FailoverRanking(RedisRanking(self.link.client, settings.redis_prefix),
                                       self.link, store)
        self.broker = RedisBroker(self.link)

    async def run(self, service: Service) -> None:
        """Watch Redis while the service runs: rebuild the ranking when Redis is back."""
        await self.ranking.watch(service.refresh)


def create_app(settings: Settings) -> Edge:
    metrics = Metrics()
    store = make_store(settings)
    shared = Shared(settings, store, metrics) if settings.redis_url else None
    ranking: Ranking = shared.ranking if shared else MemoryRanking()
    broker: Broker = shared.broker if shared else MemoryBroker()
    limits = RateLimits(settings.rate_limit_item, settings.auth_failure_limit_item,
                        redis=shared.link if shared else None)
    verifier = TokenVerifier(settings)
    hub = Hub(
        push_interval=settings.push_interval_ms / 1000,
        max_subscribers=settings.live_max,
        max_per_address=settings.live_max_per_address,
        stall_timeout=settings.live_stall_seconds,
        heartbeat=settings.live_heartbeat_seconds,
        on_push=metrics.push,
        on_drop=metrics.live_dropped,
    )
    broker.subscribe(hub.offer)
    metrics.count_live(hub.__len__)
    service = Service(store, ranking, limits, broker, observe_batch=metrics.batch,
                      max_queue=settings.commit_queue_limit, actions=settings.actions,
                      require_action=settings.require_action, max_boards=settings.max_boards,
                      on_flag=metrics.flagged, on_rebuild=metrics.rebuilt,
                      on_board_gone=hub.board_gone, on_reset=metrics.season_reset,
                      on_stored=metrics.standings_stored)
    access_log = AccessLog(enabled=level_number(settings.log_level) <= logging.INFO)
    scores = ScoreRoutes(service, verifier, limits, metrics, settings.max_increment)
    personal = Personal(ranking, settings.push_interval_ms / 1000, metrics.me_sent,
                        metrics.me_coalesced)
    broker.subscribe(personal.heard)

    async def sign_in(address: str, token: str) -> Identity:
        return await authenticate(verifier, limits, address, [b"Bearer " + token.encode()])

    live = LiveRoutes(hub, service.boards.find, settings.cors_origins, personal, sign_in)
    metrics.count_signed_in(lambda: live.signed_in)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        flusher = asyncio.create_task(access_log.run(), name="access-log")
        background: list[asyncio.Task[None]] = [flusher]
        try:
            await store.open()
        except ScoreboardError as error:
            # What the operator must fix, said once, without a traceback (see Edge).
            log.error("start_failed", detail=error.detail)
            app.state.start_error = error.detail
            flusher.cancel()
            await asyncio.gather(flusher, return_exceptions=True)
            raise
        try:
            await broker.start()
            hub.start()
            await service.start()
            if shared is not None:
                background.append(asyncio.create_task(shared.run(service), name="shared"))
            log.info("started", database=settings.database_label, dev_key=settings.uses_dev_key,
                     redis=settings.redis_label or None, algorithms=verifier.algorithms)
            if settings.uses_dev_key:
                log.warning("development_key", detail="signing key generated in the data "
                            "directory; set SCOREBOARD_JWT_SECRET, _PUBLIC_KEY or _JWKS_URL")
            yield
        finally:
            await hub.stop()
            await personal.stop()
            await service.stop()
            await broker.stop()
            if shared is not None:
                await shared.link.close()
            await store.close()
            log.info("stopped")
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)

    api = FastAPI(
        title="scoreboard",
        version="0.1.0",
        description=API_DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served from the install by api/page.py, not from a CDN
        redoc_url=None,
        openapi_url="/openapi.json" if settings.docs else None,
    )
    api.state.service = service
    api.state.metrics = metrics
    api.state.hub = hub
    api.state.verifier = verifier
    api.state.limits = limits
    api.state.redis = shared.link if shared else None
    # Registered with the framework too, for 405 with Allow (and HEAD) on these paths.
    hot: list[tuple[str, BaseRoute, Handler]] = [
        (method, Route(path, AsgiEndpoint(handler), methods=[method], include_in_schema=False),
         handler)
        for method, path, handler in (
            ("GET", "/scores", scores.get_scores),
            ("POST", "/score", scores.post_score),
            ("POST", "/actions", scores.post_action),
            ("GET", "/scores/stream", live.stream),
            ("GET", "/boards/{board}/scores", scores.get_scores),
            ("POST", "/boards/{board}/score", scores.post_score),
            ("GET", "/boards/{board}/stream", live.stream),
        )
    ]
    hot.append(("WEBSOCKET", WebSocketRoute("/scores/ws", AsgiEndpoint(live.websocket)),
                live.websocket))
    api.router.routes.extend(route for _, route, _ in hot)
    api.include_router(router)
    api.include_router(boards_router)
    api.include_router(seasons_router)
    api.include_router(admin_router)
    signer = TokenSigner(settings) if settings.uses_dev_key else None
    api.include_router(page_router(load_assets(settings.uses_dev_key, settings.docs), signer))
    install_error_handlers(api)
    install_openapi(api, settings.max_increment, [kind.name for kind in settings.actions])

    app: ASGIApp = HotDispatch(hot, api)
    if settings.cors_origins:
        app = StrictCORS(
            app,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key"],
            expose_headers=["ETag", "Retry-After", "Idempotent-Replayed", "X-Request-ID"],
            max_age=600,
        )
    return Edge(app, metrics, access_log, state=api.state, before_shutdown=hub.close_all)
