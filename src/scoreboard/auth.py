"""Token verification and the identity it yields.

One ``TokenVerifier`` per app. Its key comes from exactly one place — an HS256
secret, a PEM public key, or a JWKS endpoint — and its algorithm list is pinned to
that key, so an attacker cannot pick the algorithm (``none``, or HS256 signed with
the public key). Header parameters that point at keys (``jku``, ``x5u``, ``jwk``,
``x5c``) are never read; ``kid`` is only a lookup key into the configured JWKS.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import os
import re
import secrets
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

import httpx
import jwt
import orjson
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from scoreboard.errors import Unauthorized
from scoreboard.model import is_user_id
from scoreboard.settings import Settings, SettingsError

MAX_TOKEN_BYTES = 8192
LEEWAY_SECONDS = 30
JWKS_REFETCH_SECONDS = 30
ADMIN_SCOPE = "scoreboard:admin"
WRITE_SCOPE = "scoreboard:write"  # a trusted game server: writes any user's score
DEV_KEY_FILE = "dev-jwt-secret"
_NAME_LENGTH = 64


@dataclass(frozen=True, slots=True)
class Identity:
    sub: str
    name: str | None
    admin: bool
    writer: bool = False  # scoreboard:write: any user's score and tickets, never /admin
    expires: float = float("inf")  # the token's exp (epoch seconds)

    @property
    def writes_for_others(self) -> bool:
        return self.admin or self.writer


def clean_name(value: object) -> str | None:
    """Drop control and format characters (bidi overrides too), cut to 64 code points."""
    if not isinstance(value, str):
        return None
    kept = "".join(ch for ch in value if unicodedata.category(ch) not in ("Cc", "Cf"))
    kept = kept[:_NAME_LENGTH].strip()
    return kept or None


def scopes(claim: object) -> set[str]:
    """The ``scope`` claim: a space-separated string, or a JSON array of strings."""
    if isinstance(claim, str):
        return set(claim.split(" "))
    if isinstance(claim, list):
        return {s for s in claim if isinstance(s, str)}
    return set()


def load_or_create_dev_secret(data_dir: Path) -> str:
    """The development HS256 key: read from the data directory, made on first use (0600)."""
    path = data_dir / DEV_KEY_FILE
    try:
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            pass
        data_dir.mkdir(parents=True, exist_ok=True)
        secret = secrets.token_urlsafe(48)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first: use theirs
            return path.read_text().strip()
        with os.fdopen(fd, "w") as f:
            f.write(secret + "\n")
        return secret
    except OSError as exc:
        raise SettingsError(
            f"SCOREBOARD_DATA_DIR: cannot keep the development key in {str(data_dir)!r} "
            f"({exc.strerror}); make it writable, or set SCOREBOARD_JWT_SECRET"
        ) from exc


# The JOSE algorithms PyJWT implements, by the kind of key that verifies them; the first
# of each is the default for that key.
ALGORITHMS: dict[str, tuple[str, ...]] = {
    "secret": ("HS256", "HS384", "HS512"),
    "RSA": ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"),
    "P-256": ("ES256",),
    "P-384": ("ES384",),
    "P-521": ("ES512", "ES521"),
    "secp256k1": ("ES256K",),
    "OKP": ("EdDSA",),
}
_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521",
           "secp256k1": "secp256k1"}
_ASYMMETRIC = tuple(alg for kind, algs in ALGORITHMS.items() if kind != "secret" for alg in algs)
_HMAC_DIGESTS = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}


def key_kind(key: object) -> str | None:
    """The kind of a public key, as ``ALGORITHMS`` names it; None for one we cannot use."""
    if isinstance(key, rsa.RSAPublicKey):
        return "RSA"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return _CURVES.get(key.curve.name)
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return "OKP"
    return None


def allowed_algorithms(kind: str, configured: tuple[str, ...]) -> list[str]:
    """The allow-list for a key of ``kind`` ("jwks": any asymmetric key): the configured
    one when every algorithm in it fits, else a ``SettingsError`` that says which do."""
    fitting = _ASYMMETRIC if kind == "jwks" else ALGORITHMS[kind]
    if not configured:
        return ["RS256", "ES256", "EdDSA"] if kind == "jwks" else [fitting[0]]
    misfits = [alg for alg in configured if alg not in fitting]
    if misfits:
        what = "a JWKS (asymmetric keys)" if kind == "jwks" else f"the configured {kind} key"
        raise SettingsError(
            f"SCOREBOARD_JWT_ALGORITHMS: {', '.join(misfits)} cannot be verified with {what}; "
            f"it takes {', '.join(fitting)}"
        )
    return list(dict.fromkeys(configured))


class JwksKeys:
    """Keys of an identity provider, cached; an unknown ``kid`` refetches at most every 30 s."""

    def __init__(self, url: str, clock: Callable[[], float] = time.monotonic) -> None:
        self._url = url
        self._clock = clock
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()

    async def key_for(self, kid: object) -> jwt.PyJWK:
        if not isinstance(kid, str) or not kid or len(kid) > 256:
            raise Unauthorized("the token has no usable key id", "bad_kid")
        if kid not in self._keys:
            async with self._lock:
                now = self._clock()
                stale = self._fetched_at is None or now - self._fetched_at >= JWKS_REFETCH_SECONDS
                if kid not in self._keys and stale:
                    self._fetched_at = now
                    await self._fetch()
        key = self._keys.get(kid)
        if key is None:
            raise Unauthorized("the token's key is not known", "unknown_kid")
        return key

    async def _fetch(self) -> None:
        try:
            async with httpx.AsyncClient(timeout=5.0, follow_redirects=False) as client:
                response = await client.get(self._url)
            response.raise_for_status()
            keyset = jwt.PyJWKSet.from_dict(response.json())
        except (httpx.HTTPError, ValueError, jwt.PyJWTError) as exc:
            raise Unauthorized("the identity provider's keys are unavailable", "jwks_down") from exc
        self._keys = {k.key_id: k for k in keyset.keys if k.key_id}


class TokenVerifier:
    """Turns an ``Authorization`` header into an ``Identity`` or raises ``Unauthorized``."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._max_ttl = settings.jwt_max_ttl
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience
        self._jwks: JwksKeys | None = None
        self._key: Any = None
        self._hmac_key: bytes | None = None
        self._jws = jwt.PyJWS()
        configured = settings.jwt_algorithms
        if settings.jwt_jwks_url:
            self._jwks = JwksKeys(settings.jwt_jwks_url)
            self.algorithms = allowed_algorithms("jwks", configured)
        elif settings.jwt_public_key is not None:
            try:
                self._key = load_pem_public_key(settings.jwt_public_key.read_bytes())
            except (OSError, ValueError) as exc:
                raise SettingsError(
                    f"SCOREBOARD_JWT_PUBLIC_KEY: cannot read a PEM public key from "
                    f"{str(settings.jwt_public_key)!r}"
                ) from exc
            kind = key_kind(self._key)
            if kind is None:
                raise SettingsError("SCOREBOARD_JWT_PUBLIC_KEY must be an RSA, EC (P-256, P-384, "
                                    "P-521, secp256k1), Ed25519 or Ed448 public key")
            self.algorithms = allowed_algorithms(kind, configured)
        else:
            secret = settings.jwt_secret or load_or_create_dev_secret(settings.data_dir)
            self._hmac_key = secret.encode()
            self.algorithms = allowed_algorithms("secret", configured)
            for alg in self.algorithms:  # RFC 7518 3.2: a key at least as long as the hash
                needed = _HMAC_DIGESTS[alg]().digest_size
                if len(self._hmac_key) < needed:
                    raise SettingsError(
                        f"SCOREBOARD_JWT_SECRET must be at least {needed} bytes for {alg}")

    async def verify(self, authorization: str | None) -> Identity:
        token = _bearer_token(authorization)
        parts = token.split(".")
        if len(parts) != 3 or not all(_SEGMENT.fullmatch(p) for p in parts):
            raise Unauthorized("the token is malformed", "malformed")
        header = _json_object(parts[0])
        try:
            _b64decode(parts[2])  # canonical, whichever path checks the signature
        except (binascii.Error, ValueError) as exc:
            raise Unauthorized("the token is malformed", "malformed") from exc
        if "crit" in header:
            raise Unauthorized("critical header extensions are not supported", "crit")
        if header.get("alg") not in self.algorithms:
            raise Unauthorized("the token's algorithm is not accepted", "bad_algorithm")
        if self._hmac_key is not None:
            _check_hmac(parts, self._hmac_key, header["alg"])
        else:
            key = self._key
            if self._jwks is not None:
                jwk = await self._jwks.key_for(header.get("kid"))
                key = jwk.key
                if header["alg"] not in ALGORITHMS.get(key_kind(key) or "", ()):
                    raise Unauthorized("the token's algorithm does not fit its key",
                                       "bad_algorithm")
            try:
                self._jws.decode_complete(token, key, algorithms=[header["alg"]])
            except jwt.PyJWTError as exc:
                raise Unauthorized("the token is not valid", "bad_signature") from exc
        return self._identity(_json_object(parts[1]))

    def _identity(self, claims: dict[str, Any]) -> Identity:
        """Check the claims of a token whose signature is good."""
        now = self._clock()
        exp, nbf, iat = claims.get("exp"), claims.get("nbf"), claims.get("iat")
        if not _is_number(exp) or any(v is not None and not _is_number(v) for v in (nbf, iat)):
            raise Unauthorized("exp is required; exp, nbf and iat must be numbers", "bad_times")
        if exp + LEEWAY_SECONDS <= now:
            raise Unauthorized("the token has expired", "expired")
        if (nbf is not None and nbf - LEEWAY_SECONDS > now) or (
            iat is not None and iat - LEEWAY_SECONDS > now
        ):
            raise Unauthorized("the token is not valid yet", "not_yet_valid")
        if exp - (iat if iat is not None else now) > self._max_ttl:
            raise Unauthorized("the token lives longer than allowed", "ttl_too_long")
        if self._issuer is not None and claims.get("iss") != self._issuer:
            raise Unauthorized("the token's issuer is not accepted", "bad_issuer")
        if not _audience_ok(claims.get("aud", _ABSENT), self._audience):
            raise Unauthorized("the token's audience is not accepted", "bad_audience")
        sub = claims.get("sub")
        if not is_user_id(sub):
            raise Unauthorized("the token's subject is not a valid user id", "bad_sub")
        name = clean_name(claims.get("name"))
        granted = scopes(claims.get("scope"))
        return Identity(sub=str(sub), name=name, admin=ADMIN_SCOPE in granted,
                        writer=WRITE_SCOPE in granted, expires=float(exp))


_ABSENT = object()
_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _audience_ok(aud: object, expected: str | None) -> bool:
    if expected is None:
        return aud is _ABSENT  # a token meant for some audience is not meant for us
    if isinstance(aud, str):
        return aud == expected
    return isinstance(aud, list) and expected in [a for a in aud if isinstance(a, str)]


def _b64decode(segment: str) -> bytes:
    """A base64url segment without padding, decoded; only its canonical form is accepted
    (as PyJWT does): other strings that decode to the same bytes would let a changed
    token verify."""
    decoded = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    if base64.urlsafe_b64encode(decoded).rstrip(b"=") != segment.encode("ascii"):
        raise ValueError("not the canonical base64url encoding")
    return decoded


def _json_object(segment: str) -> dict[str, Any]:
    try:
        value = orjson.loads(_b64decode(segment))
    except (binascii.Error, ValueError) as exc:
        raise Unauthorized("the token is malformed", "malformed") from exc
    if not isinstance(value, dict):
        raise Unauthorized("the token is malformed", "malformed")
    return value


def _check_hmac(parts: list[str], key: bytes, algorithm: str) -> None:
    """HS256/384/512 with the standard library's HMAC: a fifth of PyJWT's cost (bench/),
    the same checks. ``algorithm`` is the header's, already checked against the allow-list."""
    signing_input = f"{parts[0]}.{parts[1]}".encode("ascii")
    expected = hmac.new(key, signing_input, _HMAC_DIGESTS[algorithm]).digest()
    try:
        signature = _b64decode(parts[2])
    except (binascii.Error, ValueError) as exc:
        raise Unauthorized("the token is malformed", "malformed") from exc
    if not hmac.compare_digest(expected, signature):
        raise Unauthorized("the token is not valid", "bad_signature")


def _bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise Unauthorized("a bearer token is required", "missing_token")
    if len(authorization) > MAX_TOKEN_BYTES + 7:
        raise Unauthorized("the token is too large", "token_too_large")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("use the Bearer scheme", "bad_scheme")
    if len(token) > MAX_TOKEN_BYTES:
        raise Unauthorized("the token is too large", "token_too_large")
    return token


class TokenSigner:
    """Signs tokens with the server's own HS256 key (``scoreboard token``)."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.time) -> None:
        if settings.jwt_public_key is not None or settings.jwt_jwks_url:
            raise SettingsError(
                "this server only verifies tokens (public key or JWKS): "
                "sign tokens with your identity provider"
            )
        self._secret = settings.jwt_secret or load_or_create_dev_secret(settings.data_dir)
        self._algorithm = allowed_algorithms("secret", settings.jwt_algorithms)[0]
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience
        self._clock = clock

    def sign(self, user_id: str, name: str | None = None, ttl: int = 3600,
             admin: bool = False) -> str:
        if not is_user_id(user_id):
            raise ValueError(f"not a valid user id: {user_id!r}")
        now = int(self._clock())
        claims: dict[str, Any] = {"sub": user_id, "iat": now, "exp": now + ttl}
        if name is not None:
            claims["name"] = name
        if admin:
            claims["scope"] = ADMIN_SCOPE
        if self._issuer:
            claims["iss"] = self._issuer
        if self._audience:
            claims["aud"] = self._audience
        return jwt.encode(claims, self._secret, algorithm=self._algorithm)
