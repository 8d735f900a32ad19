"""Opaque page cursors: where a page of a board ended, signed by the server.

A cursor names a place in a board's order (the score, seq and user of the entry a page
ended on), on one board and season: the next page starts strictly after that place,
whether or not the entry is still there, so an unchanged board is paged with every
entry once. It is HMAC-signed with a secret every instance shares (kept in the store),
so a cursor the server did not make, or made for another board or season, is refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

import orjson

from scoreboard.errors import Unprocessable
from scoreboard.model import Board, Entry, is_user_id

_TAG_BYTES = 16


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64(data) != text:
        raise ValueError("not canonical")
    return data


class CursorCodec:
    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def encode(self, board: Board, after: Entry) -> str:
        place = orjson.dumps([board.id, board.season, after.score, after.seq, after.user_id])
        return f"{_b64(place)}.{_b64(self._tag(place))}"

    def decode(self, board: Board, cursor: str) -> Entry:
        """The place ``cursor`` marks on ``board``'s current season; 422 otherwise."""
        try:
            body, _, tag = cursor.partition(".")
            place = _unb64(body)
            if not hmac.compare_digest(_unb64(tag), self._tag(place)):
                raise ValueError("not signed by this server")
            board_id, season, score, seq, user_id = orjson.loads(place)
        except (ValueError, TypeError, binascii.Error) as exc:
            raise Unprocessable("after is not a cursor this server made", "bad_cursor") from exc
        if board_id != board.id or season != board.season:
            raise Unprocessable("after is a cursor of another board or season", "bad_cursor")
        if not (isinstance(score, int) and isinstance(seq, int) and is_user_id(user_id)):
            raise Unprocessable("after is not a cursor this server made", "bad_cursor")
        return Entry(board.id, user_id, score, seq)

    def _tag(self, place: bytes) -> bytes:
        return hmac.new(self._secret, place, hashlib.sha256).digest()[:_TAG_BYTES]
