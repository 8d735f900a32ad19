"""Entity tags for the public reads: ``ETag`` out, ``If-None-Match`` in (RFC 9110 13.1.2)."""

from __future__ import annotations

import hashlib


def etag_of(body: bytes) -> str:
    return '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'


def none_match(if_none_match: str | None, etag: str) -> bool:
    """Whether ``If-None-Match`` names the current representation (``*``: any): a 304."""
    if not if_none_match:
        return False
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return "*" in tags or etag in tags
