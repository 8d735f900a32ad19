"""Strict JSON request bodies.

The standard parser with hooks that refuse what RFC 8259 leaves open: duplicate
keys, ``NaN`` and ``Infinity``. Floats are kept as floats so that ``5.0`` and ``1e2``
fail an integer check instead of being coerced.
"""

from __future__ import annotations

import json
import re
from typing import Any

from scoreboard.errors import BadRequest, Unprocessable, UnsupportedMediaType
from scoreboard.model import is_user_id


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate key")
    return result


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_decoder = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_constant=_no_constant)


def check_media_type(content_type: str | None) -> None:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media != "application/json":
        raise UnsupportedMediaType("send the body as application/json", "media_type")


def parse_json(body: bytes) -> Any:
    try:
        return _decoder.decode(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BadRequest("the body is not well-formed JSON", "malformed_json") from exc


def canonical(value: Any) -> str:
    """A stable form of a JSON value, so bodies that are equal as JSON compare equal.

    ASCII with escapes: a lone surrogate (``"\\ud800"``, valid JSON, not valid UTF-8)
    stays a string the fingerprint can hash, and the field checks refuse it (422)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def json_object(value: Any, fields: dict[str, bool]) -> dict[str, Any]:
    """Check that ``value`` is an object with exactly the known ``fields`` (name -> required)."""
    if not isinstance(value, dict):
        raise Unprocessable("the body must be a JSON object", "not_object")
    extra = sorted(set(value) - set(fields))
    if extra:
        raise Unprocessable(f"unknown field(s): {', '.join(extra)}", "extra_field")
    missing = sorted(name for name, required in fields.items() if required and name not in value)
    if missing:
        raise Unprocessable(f"missing field(s): {', '.join(missing)}", "missing_field")
    return value


def user_id_field(value: Any) -> str:
    if not is_user_id(value):
        raise Unprocessable(
            "user_id must be 1-128 characters of A-Z a-z 0-9 _ . : @ | -", "bad_user_id"
        )
    return str(value)


def integer_field(name: str, value: Any, low: int, high: int) -> int:
    # bool is an int in Python; JSON true is not a number.
    if type(value) is not int:
        raise Unprocessable(f"{name} must be a JSON integer", "bad_type")
    if not low <= value <= high:
        raise Unprocessable(f"{name} must be from {low} to {high}", "out_of_range")
    return value


_ACTION_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")


def action_id_field(value: Any) -> str:
    if not isinstance(value, str) or not _ACTION_ID.fullmatch(value):
        raise Unprocessable("action_id must be a ticket id from POST /actions", "bad_action_id")
    return value
