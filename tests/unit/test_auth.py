"""The HMAC fast path (HS256/384/512) and the claims checks, differentially against PyJWT."""

from __future__ import annotations

import asyncio
import datetime
from pathlib import Path
from typing import Any

import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scoreboard.auth import TokenVerifier, clean_name
from scoreboard.errors import Unauthorized
from tests.support import settings_for

NOW = 1_800_000_000


class FrozenDatetime(datetime.datetime):
    @classmethod
    def now(cls, tz: datetime.tzinfo | None = None) -> FrozenDatetime:
        return cls.fromtimestamp(NOW, tz)


def verifier(tmp: Path, **overrides: Any) -> TokenVerifier:
    return TokenVerifier(settings_for(tmp, **overrides), clock=lambda: NOW)


KEY = "k" * 64  # long enough for HS512 (RFC 7518 3.2)


def pyjwt_accepts(token: str, alg: str, audience: str | None, issuer: str | None) -> bool:
    try:
        claims = jwt.decode(token, KEY, algorithms=[alg], leeway=30, audience=audience,
                            issuer=issuer, options={"require": ["exp", "sub"]})
    except jwt.PyJWTError:
        return False
    return claims["exp"] - claims.get("iat", NOW) <= 86400


offsets = st.one_of(st.none(), st.integers(-200, 200), st.integers(-10**6, 10**6))
subs = st.one_of(st.just("alice"), st.just("bad sub"), st.just(""), st.integers(0, 3))
auds = st.one_of(st.none(), st.just("scoreboard"), st.just("other"),
                 st.lists(st.sampled_from(["scoreboard", "other"]), max_size=2))


@settings(max_examples=300, deadline=None)
@given(exp=offsets, nbf=offsets, iat=offsets, sub=subs, aud=auds,
       expect_aud=st.sampled_from([None, "scoreboard"]), iss=st.sampled_from([None, "me", "you"]),
       expect_iss=st.sampled_from([None, "me"]),
       tamper=st.sampled_from(["none", "bytes", "spelling"]),
       alg=st.sampled_from(["HS256", "HS384", "HS512"]))
def test_fast_path_agrees_with_pyjwt(tmp_path_factory: pytest.TempPathFactory, exp: int | None,
                                     nbf: int | None, iat: int | None, sub: Any, aud: Any,
                                     expect_aud: str | None, iss: str | None,
                                     expect_iss: str | None, tamper: str, alg: str) -> None:
    claims: dict[str, Any] = {"sub": sub}
    for name, offset in (("exp", exp), ("nbf", nbf), ("iat", iat)):
        if offset is not None:
            claims[name] = NOW + offset
    if aud is not None:
        claims["aud"] = aud
    if iss is not None:
        claims["iss"] = iss
    token = jwt.encode(claims, KEY, algorithm=alg)
    if tamper == "bytes":
        token = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    elif tamper == "spelling":  # the same signature bytes, spelled non-canonically
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        token = token[:-1] + alphabet[alphabet.index(token[-1]) ^ 1]
    v = verifier(tmp_path_factory.mktemp("v"), jwt_audience=expect_aud, jwt_issuer=expect_iss,
                 jwt_secret=KEY, jwt_algorithms=(alg,))
    try:
        asyncio.run(v.verify(f"Bearer {token}"))
        ours = True
    except Unauthorized:
        ours = False
    original = jwt.api_jwt.datetime
    jwt.api_jwt.datetime = FrozenDatetime  # PyJWT reads the wall clock
    try:
        theirs = pyjwt_accepts(token, alg, expect_aud, expect_iss) and isinstance(sub, str) \
            and sub not in ("bad sub", "")
        # Deliberately stricter than PyJWT: with no audience configured, a token that
        # carries "aud" at all (even an empty list) is refused (API.md, Identity).
        if expect_aud is None and aud is not None:
            theirs = False
    finally:
        jwt.api_jwt.datetime = original
    assert ours == theirs, claims


@pytest.mark.parametrize("bad", [
    "a.b", "a.b.c.d", "....", "e30.e30.", "e30.e30.!!!!", "W10.e30.AAAA", "bm9uZQ.e30.AAAA",
])
async def test_malformed_tokens(tmp_path: Path, bad: str) -> None:
    with pytest.raises(Unauthorized):
        await verifier(tmp_path).verify(f"Bearer {bad}")


def test_clean_name() -> None:
    assert clean_name("A\u202eB\u200bC\x00D\nE") == "ABCDE"
    assert clean_name("é" * 100) == "é" * 64
    assert clean_name("\u200b") is None
    assert clean_name(5) is None
