"""uvicorn's WebSocket protocol (websockets' sans-I/O core), with bounded buffers.

uvicorn answers every PING with a PONG written to the transport, whether or not the
client reads, and its closes wait to flush: a client that sends pings and never reads
grew the server's memory without bound, past any timeout. Here, as in the hub, nothing
is buffered without bound:

- while the transport's write buffer is over its high-water mark, the connection is not
  read (every frame read may add a reply), whoever else asks to resume reading;
- a connection whose writes do not drain within ``drain_seconds`` is aborted;
- a close that cannot flush within ``drain_seconds`` is an abort.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar, cast

import structlog
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

log = structlog.get_logger("scoreboard.transport")
security_log = structlog.get_logger("scoreboard.security")

HIGH_WATER = 64 * 1024  # bytes queued for a client before its reading stops


class _GuardedTransport:
    """The transport as uvicorn's protocol sees it. Reading resumes only when neither
    uvicorn's own flow control nor a full write buffer holds it; ``close`` aborts
    what cannot flush in time."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop,
                 grace: float) -> None:
        self._transport = transport
        self._loop = loop
        self._grace = grace
        self.reading_wanted = True  # by uvicorn: it pauses while the app's queue is full
        self.writes_paused = False  # by the transport: over the high-water mark

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def pause_reading(self) -> None:
        self.reading_wanted = False
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self.reading_wanted = True
        self.sync_reading()

    def sync_reading(self) -> None:
        if self._transport.is_closing():
            return
        if self.reading_wanted and not self.writes_paused:
            self._transport.resume_reading()
        else:
            self._transport.pause_reading()

    def close(self) -> None:
        self._transport.close()
        if self._transport.get_write_buffer_size():
            self._loop.call_later(self._grace, self._abort_if_stuck)

    def _abort_if_stuck(self) -> None:
        if self._transport.get_write_buffer_size():
            self._transport.abort()


class BoundedWebSocketProtocol(WebSocketsSansIOProtocol):
    drain_seconds: ClassVar[float] = 5.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's: not a registered subclass
        transport.set_write_buffer_limits(high=HIGH_WATER)
        self._guard = _GuardedTransport(transport, self.loop, self.drain_seconds)
        self._drain_timer: asyncio.TimerHandle | None = None
        super().connection_made(self._guard)  # type: ignore[arg-type]

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_drain_timer()
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        super().pause_writing()
        self._guard.writes_paused = True
        self._guard.sync_reading()
        if self._drain_timer is None:
            self._drain_timer = self.loop.call_later(self.drain_seconds, self._not_draining)

    def resume_writing(self) -> None:
        super().resume_writing()
        self._guard.writes_paused = False
        self._stop_drain_timer()
        self._guard.sync_reading()

    def _stop_drain_timer(self) -> None:
        if self._drain_timer is not None:
            self._drain_timer.cancel()
            self._drain_timer = None

    def _not_draining(self) -> None:
        self._drain_timer = None
        security_log.warning("websocket_aborted", reason="not_draining",
                             client=self.client[0] if self.client else None,
                             queued=self._guard.get_write_buffer_size(),
                             seconds=self.drain_seconds)
        self._guard.abort()


def bounded_websocket_protocol(drain_seconds: float) -> type[BoundedWebSocketProtocol]:
    """``BoundedWebSocketProtocol`` with its drain deadline, for ``uvicorn.Config(ws=...)``."""

    class Configured(BoundedWebSocketProtocol):
        pass

    Configured.drain_seconds = drain_seconds
    return Configured
