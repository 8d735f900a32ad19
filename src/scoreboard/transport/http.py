"""The HTTP transport under the app: uvicorn's httptools protocol, with limits of our own.

``ReceiptProtocol`` adds what uvicorn does not have:

- a request-receipt deadline: a request (head and whole body) must arrive within
  ``receipt_timeout`` seconds of its first byte, and the first request on a new
  connection within ``receipt_timeout`` of the connection; otherwise the connection is
  closed and ``request_timeout`` is logged. Idle time between requests on a
  keep-alive connection is not counted (uvicorn's keep-alive timeout bounds it);
- a cap on the request head as it arrives: httptools buffers a head of any size (a
  1 MiB header line is held whole before anything sees it), so past ``HEAD_CAP``
  bytes without the end of the head the connection gets ``431`` and is closed. Heads
  that do end under the cap are measured exactly by the app (``api/edge.py``);
- ``limit_concurrency`` answered like every other error (problem+json, ``nosniff``)
  instead of uvicorn's plain-text ``503``;
- ``DirectBody`` (the ASGI extension ``scoreboard.direct_body``): a streaming response
  can write pre-framed chunks straight to the socket — the live hub's pushes, the same
  bytes to every client, without a send coroutine per client.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Callable
from typing import Any, ClassVar

import structlog
from uvicorn._types import ASGIReceiveCallable, ASGISendCallable, Scope
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from scoreboard.api.edge import MAX_HEAD_BYTES
from scoreboard.api.problems import PROBLEM_TYPE, problem_body

log = structlog.get_logger("scoreboard.transport")
security_log = structlog.get_logger("scoreboard.security")

# The app measures a complete head exactly (request target + header names and values);
# the raw bytes also hold the request line's method and version, separators and
# optional whitespace, so the cut on raw bytes sits a little above the app's limit.
HEAD_CAP = MAX_HEAD_BYTES + 1024
DIRECT_BODY = "scoreboard.direct_body"
_EARLY = 0.005  # a timer may run up to this much before its time (millisecond clock)
_OVERLOAD_LOG_INTERVAL = 10.0


def _security_headers(scheme: str | None) -> list[bytes]:
    lines = [
        b"content-type: " + PROBLEM_TYPE.encode() + b"\r\n",
        b"x-content-type-options: nosniff\r\n",
        b"cache-control: no-store\r\n",
        b"connection: close\r\n",
    ]
    if scheme == "https":
        lines.append(b"strict-transport-security: max-age=63072000\r\n")
    return lines


_HEAD_TOO_LARGE = problem_body(431, f"the request head is over {MAX_HEAD_BYTES} bytes")
_OVERLOADED = problem_body(503, "the server is at its connection limit; retry shortly")


async def _overloaded(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
    headers = [
        (b"content-type", PROBLEM_TYPE.encode()),
        (b"content-length", str(len(_OVERLOADED)).encode()),
        (b"connection", b"close"),
        (b"retry-after", b"1"),
        (b"x-content-type-options", b"nosniff"),
        (b"cache-control", b"no-store"),
    ]
    if scope.get("scheme") == "https":
        headers.append((b"strict-transport-security", b"max-age=63072000"))
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": _OVERLOADED, "more_body": False})


class DirectBody:
    """Writes whole chunks of a chunked response body straight to the socket.

    ``write`` is for the middle of a body whose head went out through the ASGI ``send``
    (so uvicorn chose chunked encoding); the caller frames the chunk once, for every
    connection (``chunk``). It writes only when the connection is open and nothing is
    queued in the transport, with one send(2) on the connection's own socket (no
    transport layers: at 10,000 live clients a push is 10,000 of these); what the
    socket does not take at once is queued in the transport, behind nothing. It returns
    False when it can't write, and the caller then uses ``send``, which waits for the
    socket. The end of the body still goes through ``send``, so uvicorn's own state
    stays true.
    """

    __slots__ = ("_cycle", "_protocol", "_socket", "_transport")

    def __init__(self, cycle: RequestResponseCycle, protocol: ReceiptProtocol) -> None:
        self._cycle = cycle
        self._protocol = protocol
        self._socket: socket.socket | None = None  # both once the body is under way
        self._transport: asyncio.Transport | None = None

    def on_lost(self, callback: Callable[[], None] | None) -> None:
        """Call ``callback`` when the connection is lost (None: no longer).

        What a streaming response would otherwise need a task blocked in ``receive``
        for, per connection, only to hear of the disconnect. Registering also makes the
        socket object ``write`` uses, now rather than in the first push's sweep.
        """
        self._protocol._on_lost = callback
        if callback is not None and not self._cycle.transport.is_closing():
            self._protocol.raw_socket()

    def write(self, framed_chunk: bytes) -> bool:
        sock, transport = self._socket, self._transport
        if sock is None or transport is None:
            cycle = self._cycle
            if (cycle.disconnected or cycle.response_complete or not cycle.response_started
                    or cycle.chunked_encoding is not True):
                return False
            sock, transport = self._protocol.raw_socket(), cycle.transport
            self._socket, self._transport = sock, transport
        # Closing: the descriptor may be closed (and its number reused) already.
        # Anything queued, or writing paused (only with something queued): this chunk
        # must go after it. (The body's end goes through ``send`` only after the caller
        # stopped writing here, so it needs no check per chunk.)
        if transport.is_closing() or transport.get_write_buffer_size():
            return False
        try:
            sent = sock.send(framed_chunk)
        except BlockingIOError:
            sent = 0
        except OSError:
            return False  # reset by the peer: the transport sees it too
        if sent < len(framed_chunk):
            transport.write(framed_chunk[sent:])
        return True


class ReceiptProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a receipt deadline, a head cap and a connection
    cap that answers problem+json.

    The deadline costs no timer per request: a request's start is only recorded, and
    one timer per connection, when it runs, either closes the connection or is set
    again for the current request's deadline. A connection whose requests arrive
    quickly sees that timer about once per ``receipt_timeout``.
    """

    # Our own state in slots: the base class sets 27 attributes, and past 30 an
    # instance's __dict__ stops sharing its keys (measured: 1,584 bytes instead of 296
    # per connection, at 10,000 live connections 13 MB).
    __slots__ = ("_app", "_done", "_head_bytes", "_in_body", "_limit", "_on_lost", "_raw",
                 "_receiving", "_since", "_timer")

    receipt_timeout: ClassVar[float] = 10.0
    _shed: ClassVar[int] = 0
    _shed_logged: ClassVar[float] = float("-inf")

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        # uvicorn's own check answers text/plain; ours answers a problem (see on_headers_complete).
        limit, self.limit_concurrency = self.limit_concurrency, None
        self._limit = limit if limit is not None else sys.maxsize
        self._app = self.app
        self._receiving = False  # between a request's first byte and its last
        self._in_body = False  # between the end of its head and its last byte
        self._since = 0.0  # when the request being received started (loop time)
        self._head_bytes = 0  # bytes read while in a head (a bound, not an exact count)
        self._done: Scope | None = None  # the last request received whole (or given up on)
        self._timer: asyncio.TimerHandle | None = None
        self._raw: socket.socket | None = None  # see raw_socket
        self._on_lost: Callable[[], None] | None = None  # see DirectBody.on_lost

    def raw_socket(self) -> socket.socket:
        """A socket object over the connection's descriptor that does not own it.

        Made on first use and detached when the connection is lost or upgraded, so it
        never closes the descriptor (uvloop does): the transport holds this protocol
        until ``connection_lost``, so the object cannot be collected before that.
        """
        if self._raw is None:
            fd = self.transport.get_extra_info("socket").fileno()
            self._raw = socket.socket(fileno=fd)  # keeps the descriptor non-blocking
        return self._raw

    def _detach_raw(self) -> None:
        if self._raw is not None:
            self._raw.detach()
            self._raw = None

    # The deadline

    def _start(self) -> None:
        self._receiving = True
        self._since = self.loop.time()
        if self._timer is None:
            self._timer = self.loop.call_at(self._since + self.receipt_timeout, self._check)

    def _check(self) -> None:
        self._timer = None
        if not self._receiving or self.transport.is_closing():
            return
        now = self.loop.time()
        if self.flow.read_paused:
            # The server has stopped reading (a pipelined request waits for the response
            # to the one before it): that wait is not the client's.
            self._since = now
        due = self._since + self.receipt_timeout
        if now + _EARLY < due:
            self._timer = self.loop.call_at(due, self._check)
            return
        log.warning("request_timeout", client=self.client[0] if self.client else None,
                    phase="body" if self._in_body else "head", seconds=self.receipt_timeout)
        self._receiving = False
        self.transport.close()
        if self.transport.get_write_buffer_size():
            self.transport.abort()  # a client that does not read would hold the close open

    def _stop_timer(self) -> None:
        self._receiving = False
        self._done = self.scope
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start()  # a connection that never sends anything is bounded too

    def connection_lost(self, exc: Exception | None) -> None:
        on_lost, self._on_lost = self._on_lost, None
        if on_lost is not None:
            on_lost()
        self._detach_raw()
        self._stop_timer()
        super().connection_lost(exc)

    # The three methods below run for every request: they call the base class directly
    # (cheaper than super()) and start the deadline inline; see docs/operations.md for
    # what this costs per request.

    def data_received(self, data: bytes) -> None:
        if not self._receiving:  # the first byte of the next request
            self._receiving = True
            self._since = self.loop.time()
            if self._timer is None:
                self._timer = self.loop.call_at(self._since + self.receipt_timeout, self._check)
        if self._in_body:
            HttpToolsProtocol.data_received(self, data)
        else:
            self._head_bytes += len(data)
            HttpToolsProtocol.data_received(self, data)
            # Still in a head (none completed in this chunk) and past the cap: httptools
            # would keep buffering it whole, so stop here.
            if self._head_bytes > HEAD_CAP and not self._in_body and self._receiving:
                self._refuse_head()
        if not self._receiving and self.scope is not self._done:
            self._start()  # the next request began in the same read as the last one ended

    def _refuse_head(self) -> None:
        if self.transport.is_closing():
            return
        security_log.warning("request_refused", reason="head_size", status=431,
                             client=self.client[0] if self.client else None)
        self._stop_timer()
        # Not in the middle of an earlier (pipelined) response: that would corrupt it.
        if self.cycle is None or self.cycle.response_complete:
            self._write_problem(b"431 Request Header Fields Too Large", _HEAD_TOO_LARGE)
        self.transport.close()

    def send_400_response(self, msg: str) -> None:
        """A request the parser refuses (malformed HTTP): a problem, like every error."""
        self._write_problem(b"400 Bad Request", problem_body(400, msg.rstrip(".")))
        self.transport.close()

    def _write_problem(self, status: bytes, body: bytes) -> None:
        """A whole problem response, written here: the app never saw this request."""
        lines = [b"HTTP/1.1 " + status + b"\r\n"]
        lines += [name + b": " + value + b"\r\n"
                  for name, value in self.server_state.default_headers]
        lines += _security_headers(self.scheme)
        lines.append(b"content-length: %d\r\n\r\n" % len(body))
        lines.append(body)
        self.transport.write(b"".join(lines))

    def handle_websocket_upgrade(self) -> None:
        self._stop_timer()  # the transport now belongs to the WebSocket protocol
        self._detach_raw()
        super().handle_websocket_upgrade()

    # httptools callbacks

    def on_headers_complete(self) -> None:
        self._in_body = True
        self._head_bytes = 0
        # Connections only: a connection runs one request at a time, so requests in
        # progress never outnumber connections by more than a few finishing tasks.
        if len(self.connections) >= self._limit and not self.parser.should_upgrade():
            self._note_shed()
            self.app = _overloaded
            try:
                HttpToolsProtocol.on_headers_complete(self)
            finally:
                self.app = self._app
            return
        HttpToolsProtocol.on_headers_complete(self)
        cycle = self.cycle
        if cycle is not None and cycle.scope is self.scope:  # not an upgrade
            extensions: dict[str, Any] = self.scope.setdefault("extensions", {})
            extensions[DIRECT_BODY] = DirectBody(cycle, self)

    def on_message_complete(self) -> None:
        self._receiving = False
        self._in_body = False
        self._head_bytes = 0
        self._done = self.scope
        HttpToolsProtocol.on_message_complete(self)

    def _note_shed(self) -> None:
        cls = ReceiptProtocol
        cls._shed += 1
        now = self.loop.time()
        if now - cls._shed_logged >= _OVERLOAD_LOG_INTERVAL:
            log.warning("overloaded", refused=cls._shed, limit=self._limit,
                        connections=len(self.connections), tasks=len(self.tasks))
            cls._shed = 0
            cls._shed_logged = now


def receipt_protocol(timeout: float) -> type[ReceiptProtocol]:
    """``ReceiptProtocol`` with its deadline, for ``uvicorn.Config(http=...)``."""

    class Configured(ReceiptProtocol):
        receipt_timeout = timeout

    return Configured


# Self-signed certificate for local HTTPS
