"""Key sources and the attacks a reviewer would try on them."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from scoreboard.settings import SettingsError
from tests.support import Server, problem

RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC = ec.generate_private_key(ec.SECP256R1())
ED = ed25519.Ed25519PrivateKey.generate()


def pem(private: Any, path: Path) -> Path:
    path.write_bytes(private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return path


def claims(sub: str = "alice", **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": sub, "iat": now, "exp": now + 600, **extra}


async def post_with(s: Server, token: str) -> int:
    r = await s.client.post("/score", json={"user_id": "alice", "increment": 1},
                            headers={"Authorization": f"Bearer {token}"})
    if r.status_code != 200:
        problem(r, r.status_code)
    return r.status_code


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    return ".".join([b64(json.dumps(header).encode()), b64(json.dumps(payload).encode()),
                     b64(signature)])


EC384 = ec.generate_private_key(ec.SECP384R1())
EC521 = ec.generate_private_key(ec.SECP521R1())
K1 = ec.generate_private_key(ec.SECP256K1())
ED448 = ed448.Ed448PrivateKey.generate()


@pytest.mark.parametrize(("private", "alg"), [(RSA, "RS256"), (EC, "ES256"), (ED, "EdDSA")])
async def test_public_key_algorithms(make_server, tmp_path: Path, private: Any, alg: str) -> None:  # type: ignore[no-untyped-def]
    async with make_server(jwt_secret=None, jwt_public_key=pem(private, tmp_path / "k.pem")) as s:
        assert await post_with(s, jwt.encode(claims(), private, algorithm=alg)) == 200
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        assert await post_with(s, jwt.encode(claims(), other, algorithm="RS256")) == 401


# Every JOSE algorithm PyJWT implements, with the key type that verifies it.
@pytest.mark.parametrize(("private", "allowed", "refused"), [
    (RSA, ("RS384", "RS512", "PS256", "PS384", "PS512"), "RS256"),
    (EC384, ("ES384",), None),
    (EC521, ("ES512",), None),
    (K1, ("ES256K",), None),
    (ED448, ("EdDSA",), None),
])
async def test_every_algorithm_of_each_key_type(make_server, tmp_path: Path, private: Any,  # type: ignore[no-untyped-def]
                                                allowed: tuple[str, ...], refused: str | None) -> None:
    async with make_server(jwt_secret=None, jwt_public_key=pem(private, tmp_path / "k.pem"),
                           jwt_algorithms=allowed) as s:
        for alg in allowed:
            assert await post_with(s, jwt.encode(claims(), private, algorithm=alg)) == 200, alg
        if refused is not None:  # the same key, an algorithm left off the list
            assert await post_with(s, jwt.encode(claims(), private, algorithm=refused)) == 401


@pytest.mark.parametrize("alg", ["HS384", "HS512"])
async def test_longer_hmac_algorithms(make_server, alg: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SettingsError, match=f"at least {int(alg[2:]) // 8} bytes for {alg}"):
        async with make_server(jwt_algorithms=(alg,)):  # the 42-byte test secret
            pass
    secret = "k" * 64
    async with make_server(jwt_secret=secret, jwt_algorithms=(alg,)) as s:
        assert await post_with(s, s.token(key=secret, algorithm=alg)) == 200
        assert await post_with(s, s.token(key=secret, algorithm="HS256")) == 401  # not listed


def flip_low_bits(token: str) -> str:
    """The same signature bytes in a non-canonical base64url spelling: the last character
    carries bits past the end of the data, which decoders ignore."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    head, _, signature = token.rpartition(".")
    last = alphabet[alphabet.index(signature[-1]) ^ 1]
    changed = f"{head}.{signature[:-1]}{last}"
    assert base64.urlsafe_b64decode(signature + "==") == base64.urlsafe_b64decode(
        changed.rpartition(".")[2] + "==")
    return changed


async def test_signatures_are_not_malleable(make_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    async with make_server() as s:  # HS256, the fast path
        token = s.token()
        assert await post_with(s, token) == 200
        assert await post_with(s, flip_low_bits(token)) == 401
    async with make_server(jwt_secret=None, jwt_public_key=pem(EC, tmp_path / "k.pem")) as s:
        token = jwt.encode(claims(), EC, algorithm="ES256")
        assert await post_with(s, token) == 200
        assert await post_with(s, flip_low_bits(token)) == 401


async def test_hs_rs_key_confusion_is_refused(make_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    key_path = pem(RSA, tmp_path / "k.pem")
    async with make_server(jwt_secret=None, jwt_public_key=key_path) as s:
        # The classic attack: HMAC-sign with the public key's PEM bytes as the secret.
        import hashlib
        import hmac
        header = {"alg": "HS256", "typ": "JWT"}
        signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims()).encode())}"
        sig = hmac.new(key_path.read_bytes(), signing_input.encode(), hashlib.sha256).digest()
        assert await post_with(s, f"{signing_input}.{b64(sig)}") == 401


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
async def test_alg_none_in_any_casing(server: Server, alg: str) -> None:
    assert await post_with(server, forged({"alg": alg, "typ": "JWT"}, claims())) == 401


@pytest.mark.parametrize("header", [
    {"alg": "HS256", "kid": "../../etc/passwd"},
    {"alg": "HS256", "kid": "' OR 1=1 --"},
    {"alg": "HS384"},
    {"alg": "HS256", "crit": ["exp"]},
])
async def test_header_tricks(server: Server, header: dict[str, Any]) -> None:
    token = jwt.encode(claims(), "x" * 40, algorithm="HS256", headers=header) \
        if header["alg"] == "HS256" else jwt.encode(claims(), "x" * 48, algorithm="HS384")
    assert await post_with(server, token) == 401


async def test_issuer_and_audience(make_server) -> None:  # type: ignore[no-untyped-def]
    async with make_server(jwt_issuer="https://id.example", jwt_audience="scoreboard") as s:
        good = s.token(iss="https://id.example", aud=["other", "scoreboard"])
        assert await post_with(s, good) == 200
        assert await post_with(s, s.token(iss="https://evil.example", aud="scoreboard")) == 401
        assert await post_with(s, s.token(iss="https://id.example", aud="other")) == 401
        assert await post_with(s, s.token(aud="scoreboard")) == 401  # no iss
        assert await post_with(s, s.token(iss="https://id.example")) == 401  # no aud


async def test_max_ttl_setting(make_server) -> None:  # type: ignore[no-untyped-def]
    async with make_server(jwt_max_ttl=60) as s:
        assert await post_with(s, s.token(ttl=60)) == 200
        assert await post_with(s, s.token(ttl=120)) == 401
        now = int(time.time())
        no_iat = jwt.encode({"sub": "alice", "exp": now + 3600}, s.settings.jwt_secret,
                            algorithm="HS256")
        assert await post_with(s, no_iat) == 401


class KeyServer:
    """A tiny HTTP listener that serves a JWKS and counts the connections it gets."""

    def __init__(self, body: bytes = b"{}") -> None:
        self.body = body
        self.hits = 0
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.hits += 1
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(self.body) + self.body)
        await writer.drain()
        writer.close()


@pytest.fixture
async def key_server() -> AsyncIterator[KeyServer]:
    ks = KeyServer()
    server = await asyncio.start_server(ks.handle, "127.0.0.1", 0)
    ks.port = server.sockets[0].getsockname()[1]
    async with server:
        yield ks


async def test_key_location_headers_are_never_followed(server: Server, key_server: KeyServer) -> None:
    url = f"http://127.0.0.1:{key_server.port}/jwks.json"
    attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(attacker.public_key()))
    for header in ({"jku": url}, {"x5u": url}, {"jwk": jwk}):
        token = jwt.encode(claims(), attacker, algorithm="RS256", headers=header)
        assert await post_with(server, token) == 401
    assert key_server.hits == 0


async def test_jwks_keys_by_kid(make_server, key_server: KeyServer) -> None:  # type: ignore[no-untyped-def]
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(RSA.public_key()))
    key_server.body = json.dumps({"keys": [{**jwk, "kid": "k1", "alg": "RS256"}]}).encode()
    url = f"http://127.0.0.1:{key_server.port}/jwks.json"
    async with make_server(jwt_secret=None, jwt_jwks_url=url) as s:
        assert await post_with(s, jwt.encode(claims(), RSA, "RS256", headers={"kid": "k1"})) == 200
        assert await post_with(s, jwt.encode(claims(), RSA, "RS256", headers={"kid": "k1"})) == 200
        assert key_server.hits == 1  # cached
        # An unknown kid refetches at most once per 30 s.
        for _ in range(3):
            token = jwt.encode(claims(), RSA, "RS256", headers={"kid": "k2"})
            assert await post_with(s, token) == 401
        assert key_server.hits == 1
        assert await post_with(s, jwt.encode(claims(), RSA, "RS256")) == 401  # no kid


def test_settings_refuse_bad_keys(tmp_path: Path) -> None:
    from tests.support import settings_for
    with pytest.raises(SettingsError, match="at least 32"):
        settings_for(tmp_path, jwt_secret="short")
    with pytest.raises(SettingsError, match="at most one"):
        settings_for(tmp_path, jwt_public_key=tmp_path / "k.pem")
    with pytest.raises(SettingsError, match="https"):
        settings_for(tmp_path, jwt_secret=None, jwt_jwks_url="http://example.com/jwks")
    with pytest.raises(SettingsError, match="unsupported"):
        settings_for(tmp_path, jwt_algorithms=("none",))


async def test_algorithm_list_must_match_the_key(make_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SettingsError, match="RS256 cannot be verified with the configured secret"):
        async with make_server(jwt_algorithms=("RS256",)):
            pass
    rsa_key = pem(RSA, tmp_path / "k.pem")
    # A mixed list used to start, then answer every HS256 token with a 500.
    with pytest.raises(SettingsError, match="HS256 cannot be verified with the configured RSA"):
        async with make_server(jwt_secret=None, jwt_public_key=rsa_key,
                               jwt_algorithms=("HS256", "RS256")):
            pass
    with pytest.raises(SettingsError, match="ES384 cannot be verified with the configured P-256"):
        async with make_server(jwt_secret=None, jwt_public_key=pem(EC, tmp_path / "e.pem"),
                               jwt_algorithms=("ES384",)):
            pass
    with pytest.raises(SettingsError, match="HS256 cannot be verified with a JWKS"):
        async with make_server(jwt_secret=None, jwt_jwks_url="https://id.example/jwks",
                               jwt_algorithms=("HS256",)):
            pass


async def test_failed_authentications_are_limited_per_address(make_server) -> None:  # type: ignore[no-untyped-def]
    async with make_server(auth_failure_limit="3/minute") as s:
        for _ in range(3):
            problem(await s.client.post("/score", headers={"Authorization": "Bearer x.y.z"}), 401)
        r = await s.client.post("/score", headers={"Authorization": "Bearer x.y.z"})
        problem(r, 429)
        assert int(r.headers["retry-after"]) >= 1
        problem(await s.client.get("/admin/suspicious", headers={"Authorization": "Bearer x"}),
                429)
        # A valid token from the same address (NAT, a proxy) is not locked out.
        assert (await s.post("alice", 1)).status_code == 200
