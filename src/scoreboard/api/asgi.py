"""Small helpers for the plain ASGI routes (the hot paths and the live feeds)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl

from starlette.types import Receive, Scope, Send

from scoreboard.errors import BadRequest

JSON = (b"content-type", b"application/json")


class AsgiEndpoint:
    """Lets a bound method serve as a plain ASGI app in a Starlette ``Route``."""

    def __init__(self, handler: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.handler(scope, receive, send)


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def query(scope: Scope) -> dict[str, str]:
    """The query string's parameters; the last of a repeated one counts."""
    raw = scope["query_string"]
    return dict(parse_qsl(raw.decode("latin-1"), keep_blank_values=True)) if raw else {}


def path_board(scope: Scope, default: str = "default") -> str:
    """The ``{board}`` of a ``/boards/{board}/...`` path (the default board elsewhere)."""
    return str(scope.get("path_params", {}).get("board", default))


async def read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise BadRequest("the client went away", "disconnected")
        if not message.get("more_body", False):
            if not chunks:
                return bytes(message.get("body", b""))
            chunks.append(message.get("body", b""))
            return b"".join(chunks)
        chunks.append(message.get("body", b""))


async def send_json(send: Send, status: int, body: bytes,
                    headers: list[tuple[bytes, bytes]]) -> None:
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [JSON, (b"content-length", str(len(body)).encode()), *headers],
    })
    await send({"type": "http.response.body", "body": body})
