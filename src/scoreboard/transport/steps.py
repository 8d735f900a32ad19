"""Stepping a coroutine by hand, as an asyncio Task would."""

from __future__ import annotations

from typing import Any


def take_over(waiting: Any) -> Any:
    """Do what a Task does with a future its coroutine yields (clear the future's
    ``_asyncio_future_blocking`` flag), so the caller can await the future itself."""
    if getattr(waiting, "_asyncio_future_blocking", False):
        waiting._asyncio_future_blocking = False
    return waiting
