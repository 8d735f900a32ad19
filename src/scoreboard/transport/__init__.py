"""The one room for other people's internals: the server's protocols, adapted.

Speed and the limits of docs/spec.md need a few private names of uvicorn, httptools,
uvloop and asyncio. They are used here and nowhere else; pyproject.toml pins those
dependencies to the minor releases CI tested, and docs/architecture.md lists each name.

- ``http.py``: uvicorn's ``HttpToolsProtocol`` with a receipt deadline, a head cap, a
  connection cap answered as a problem, and ``DirectBody`` (writes to the socket).
- ``websocket.py``: uvicorn's ``WebSocketsSansIOProtocol`` with bounded buffers.
- ``server.py``: ``uvicorn.Server`` that exits 0 on a clean signalled stop.
- ``steps.py``: stepping a send coroutine by hand, as an asyncio Task would.
"""
