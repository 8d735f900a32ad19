"""Opaque page cursors: where a page of a board ended, signed by the server.

A cursor names a place in a board's order (the score, seq and user of the entry a page
ended on), on one board and season: the next page starts strictly after that place,
whether or not the entry is still there, so an unchanged board is paged with every
entry once. In a closed season's final standings, which never change, it names a rank.
It is HMAC-signed with a secret every instance shares (kept in the store), so a cursor
the server did not make, or made for another board or season, is refused.
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

    def encode_rank(self, board_id: str, season: int, rank: int) -> str:
        place = orjson.dumps([board_id, season, rank])
        return f"{_b64(place)}.{_b64(self._tag(place))}"

    def decode(self, board: Board, cursor: str) -> Entry:
        """The place ``cursor`` marks on ``board``'s current season; 422 otherwise."""
        place = self._place(cursor, board.id, board.season, 5)
        score, seq, user_id = place
        if not (isinstance(score, int) and isinstance(seq, int) and isinstance(user_id, str)
                and is_user_id(user_id)):
            raise Unprocessable("after is not a cursor this server made", "bad_cursor")
        return Entry(board.id, board.season, user_id, score, seq)

    def decode_rank(self, board_id: str, season: int, cursor: str) -> int:
        """The rank ``cursor`` marks in a closed season's standings; 422 otherwise."""
        (rank,) = self._place(cursor, board_id, season, 3)
        if not isinstance(rank, int) or rank < 1:
            raise Unprocessable("after is not a cursor this server made", "bad_cursor")
        return rank

    def _place(self, cursor: str, board_id: str, season: int, size: int) -> list[object]:
        """The signed place's fields after its board and season."""
        try:
            body, _, tag = cursor.partition(".")
            place = _unb64(body)
            if not hmac.compare_digest(_unb64(tag), self._tag(place)):
                raise ValueError("not signed by this server")
            fields = orjson.loads(place)
            if not isinstance(fields, list) or len(fields) < 3:
                raise ValueError("not a place")
        except (ValueError, TypeError, binascii.Error) as exc:
            raise Unprocessable("after is not a cursor this server made", "bad_cursor") from exc
        if fields[0] != board_id or fields[1] != season or len(fields) != size:
            raise Unprocessable("after is a cursor of another board or season", "bad_cursor")
        return fields[2:]

    def _tag(self, place: bytes) -> bytes:
        return hmac.new(self._secret, place, hashlib.sha256).digest()[:_TAG_BYTES]
