"""uvicorn's server, stopping the way an operator expects."""

from __future__ import annotations

import socket
from types import FrameType

import uvicorn


class Server(uvicorn.Server):
    """uvicorn's server, but a stop asked for by a signal exits 0 once it is clean, and
    long-lived streams end before uvicorn waits for open responses.

    uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown (``_captured_signals``),
    so the process would report "killed by a signal" even though every request was
    finished.
    """

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self._captured_signals.clear()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # End live streams first: uvicorn waits for open responses before the lifespan
        # shutdown, and a stream never ends on its own.
        before = getattr(self.config.app, "before_shutdown", None)
        if callable(before):
            before()
        await super().shutdown(sockets)
