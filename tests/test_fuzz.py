"""Schemathesis fuzzing of the served OpenAPI description against a real server.

``scoreboard serve`` runs as its own process on 127.0.0.1 (the ASGI transport would
hang on the endless live stream, which is left out). The description is loaded from the
server's own ``GET /openapi.json``; every answer must have a documented status, content
type, body schema and headers, and none may be a 5xx.

- ``test_api_conforms``: every operation, valid and invalid data, every built-in
  Schemathesis check. Writes carry a valid token minted per case whose ``sub`` is the
  body's ``user_id`` (so that updates are accepted and 200s happen); /admin carries an
  administrator's.
- ``test_tokens``: the operations that take a token, with a drawn kind of token (own,
  another user's, a banned user's, an administrator's, none, and a dozen broken ones);
  every broken one must be a 401 with ``WWW-Authenticate: Bearer``, every non-admin on
  /admin a 403.
- ``test_locked_out_address``: the same operations against a server with the default
  limits, from an address that has used up its failed authentications: the 429s must
  be documented too.
- ``test_description_states``: rules the server enforces that the description must say
  (found missing by this fuzzing once, and then added).
- ``test_server_logged_no_error``: the fuzzed server logged no error or traceback.
"""

from __future__ import annotations

import itertools
import json
import re
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import (
    CheckContext,
    CheckFunction,
    content_type_conformance,
    not_a_server_error,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support import SECRET, ServerProcess

FAST = "1000000/minute"
ACTION_KINDS = {"demo"}  # the default SCOREBOARD_ACTIONS
MAX_INCREMENT = 100  # the default SCOREBOARD_MAX_INCREMENT
MAX_BODY = 4 * 1024
IDEMPOTENCY_KEY = re.compile(r"[\x20-\x7e]{1,255}")
USER_ID = re.compile(r"[A-Za-z0-9_.:@|-]{1,128}")
WRITES = ["/score", "/actions", "/boards/{board}/score"]
WITH_TOKEN = r"^/(score|actions|admin/.*|boards/\{board\}/score)$"
ADMIN_SCOPE = "scoreboard:admin"
BANNED = "fuzz-banned"  # banned before the fuzzing starts
PROBLEM = "application/problem+json"
REVERT = "/admin/users/{user_id}/revert"
# API.md's order of checks: these answer before the body's fields are looked at.
CHECKED_BEFORE_FIELDS = {401, 404, 413, 415, 429, 431}  # 404: an unknown board
# The boards on the fuzzed servers (made by the fixture): writes take their operator's field.
BOARD_OPERATORS = {"default": "increment", "fastest": "best"}

# No schemathesis.toml is read: this is the whole configuration.
CONFIG: dict[str, Any] = {"generation": {"mode": "all"}}
# ``@schema.given`` cannot be combined with the description's examples; the coverage
# phase (missing and malformed parts, other methods) is test_api_conforms's.
FUZZING_ONLY: dict[str, Any] = {
    **CONFIG, "phases": {"examples": {"enabled": False}, "coverage": {"enabled": False}},
}

FUZZ_SETTINGS = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                           HealthCheck.data_too_large],
)

# The checks that need no knowledge of how a case was generated.
CONFORMANCE: list[CheckFunction] = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


# --- tokens ---------------------------------------------------------------------------


def token(sub: str | None = "fuzzer", *, key: str = SECRET, ttl: int = 3600,
          **claims: Any) -> str:
    now = int(time.time())
    payload: dict[str, Any] = {"iat": now, "exp": now + ttl, **claims}
    if sub is not None:
        payload["sub"] = sub
    return jwt.encode(payload, key, algorithm="HS256")


def bearer(sub: str | None = "fuzzer", **claims: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(sub, **claims)}"}


def body_user(case: schemathesis.Case) -> str | None:
    """The body's ``user_id``, when it is one a token may carry."""
    body = case.body
    if isinstance(body, dict):
        user_id = body.get("user_id")
        if isinstance(user_id, str) and USER_ID.fullmatch(user_id):
            return user_id
    return None


def own_token(case: schemathesis.Case) -> str:
    return token(body_user(case) or "fuzzer")


def _unsigned(sub: str) -> str:
    def part(value: dict[str, Any]) -> str:
        return jwt.utils.base64url_encode(json.dumps(value).encode()).decode()

    now = int(time.time())
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part({'sub': sub, 'exp': now + 600})}."


TokenMaker = Callable[[schemathesis.Case], str | None]

# Every one of these must be refused with 401, whatever the request.
BROKEN: dict[str, TokenMaker] = {
    "none": lambda case: None,
    "empty": lambda case: "",
    "scheme only": lambda case: "Bearer",
    "not a jwt": lambda case: "Bearer not-a-jwt",
    "basic": lambda case: "Basic Zm9vOmJhcg==",
    "bad signature": lambda case: f"Bearer {token(body_user(case), key='x' * 48)}",
    "alg none": lambda case: f"Bearer {_unsigned(body_user(case) or 'fuzzer')}",
    "expired": lambda case: f"Bearer {token(body_user(case), ttl=-120)}",
    "not yet valid": lambda case: f"Bearer {token(body_user(case), nbf=int(time.time()) + 600)}",
    "too long-lived": lambda case: f"Bearer {token(body_user(case), ttl=3 * 86400)}",
    "no exp": lambda case: "Bearer " + jwt.encode(
        {"sub": body_user(case) or "fuzzer", "iat": int(time.time())}, SECRET, algorithm="HS256"),
    "no sub": lambda case: f"Bearer {token(None)}",
    "invalid sub": lambda case: f"Bearer {token('not a user id!')}",
    "unexpected aud": lambda case: f"Bearer {token(body_user(case), aud='elsewhere')}",
    "over 8 KiB": lambda case: f"Bearer {token(body_user(case), pad='x' * 9000)}",
}

# Valid; what the server answers depends on the body.
VALID: dict[str, TokenMaker] = {
    "own": lambda case: f"Bearer {own_token(case)}",
    "own, lower-case scheme": lambda case: f"bearer {own_token(case)}",
    "another user's": lambda case: f"Bearer {token('someone-else')}",
    "a banned user's": lambda case: f"Bearer {token(BANNED)}",
    "an administrator's": lambda case: f"Bearer {token('root', scope=ADMIN_SCOPE)}",
}


# --- the servers ----------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _lazy_schema_node_id(request: pytest.FixtureRequest) -> None:
    """Schemathesis 4.32's ``from_fixture`` reads ``node._nodeid``, which pytest 9.2 renamed.

    It only uses the value to label each operation's report; give it the real one.
    """
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


def _start(data_dir: Path, env: dict[str, str]) -> ServerProcess:
    """``scoreboard serve`` with ``env`` and otherwise the defaults; raises if it does not start."""
    server = ServerProcess(data_dir, env)
    ours = {"SCOREBOARD_DATA_DIR", "SCOREBOARD_JWT_SECRET", *env}
    server.env = {name: value for name, value in server.env.items()
                  if not name.startswith("SCOREBOARD_") or name in ours}
    try:
        server.start()
    except BaseException:
        server.kill()
        raise
    return server


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = _start(tmp_path_factory.mktemp("fuzz"), {
        "SCOREBOARD_RATE_LIMIT": FAST,
        "SCOREBOARD_AUTH_FAILURE_LIMIT": FAST,
    })
    try:
        ban = httpx.post(f"{server.url}/admin/users/{BANNED}/ban",
                         headers=bearer("root", scope=ADMIN_SCOPE), timeout=10)
        assert ban.status_code == 200, ban.text
        made = httpx.put(f"{server.url}/admin/boards/fastest", timeout=10,
                         headers=bearer("root", scope=ADMIN_SCOPE),
                         json={"title": "Fastest", "sort": "asc", "operator": "best"})
        assert made.status_code == 201, made.text
        yield server
    finally:
        server.kill(signal.SIGTERM)


@pytest.fixture(scope="module")
def locked_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The documented default limits, and this address out of failed authentications."""
    server = _start(tmp_path_factory.mktemp("fuzz-locked"), {
        "SCOREBOARD_RATE_LIMIT": "60/minute",
        "SCOREBOARD_AUTH_FAILURE_LIMIT": "30/minute",
    })
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            statuses = {client.post("/actions", json={"kind": "demo"},
                                    headers={"Authorization": "Bearer nope"}).status_code
                        for _ in range(31)}
        assert statuses == {401, 429}, statuses
        yield server
    finally:
        server.kill(signal.SIGTERM)


def _load(server: ServerProcess, config: dict[str, Any]) -> Any:
    return schemathesis.openapi.from_url(f"{server.url}/openapi.json",
                                         config=schemathesis.Config.from_dict(config))


@pytest.fixture(scope="module")
def served_schema(fuzz_server: ServerProcess) -> Any:
    return _load(fuzz_server, CONFIG)


@pytest.fixture(scope="module")
def token_schema(fuzz_server: ServerProcess) -> Any:
    return _load(fuzz_server, FUZZING_ONLY)


@pytest.fixture(scope="module")
def locked_schema(locked_server: ServerProcess) -> Any:
    return _load(locked_server, CONFIG)


# --- what JSON Schema cannot say ----------------------------------------------------


def _is_positive(case: schemathesis.Case) -> bool:
    return case.meta is not None and case.meta.generation.mode.is_positive


def refused_valid(case: schemathesis.Case) -> tuple[int, str] | None:
    """The refusal a schema-valid request meets where JSON Schema cannot be as strict.

    JSON Schema's ``integer`` admits ``5.0``, which API.md refuses as a float; and a page
    cursor is opaque: only one the server made is one (a drawn string never is).
    """
    if not _is_positive(case):
        return None
    if (case.query or {}).get("after") is not None:
        return 422, "after is not a cursor this server made"
    if case.path not in ("/score", "/boards/{board}/score") or not isinstance(case.body, dict):
        return None
    operator = BOARD_OPERATORS.get((case.path_parameters or {}).get("board", "default"))
    if operator is not None:  # a board that exists: the field its operator takes
        wrong = "score" if operator == "increment" else "increment"
        if wrong in case.body:
            return 422, f"unknown field(s): {wrong}"
    for field in ("increment", "score"):
        if isinstance(case.body.get(field), float):
            return 422, f"{field} must be a JSON integer"
    return None


def _fresh_idempotency_key(case: schemathesis.Case) -> None:
    """Make a valid drawn Idempotency-Key unique to its case.

    Hypothesis draws the same few keys again and again; the same key with another body is
    a 422 by design (API.md), which a valid draw is not meant to meet.
    """
    headers = case.headers or {}
    key = headers.get("Idempotency-Key")
    if _is_positive(case) and isinstance(key, str) and IDEMPOTENCY_KEY.fullmatch(key):
        headers["Idempotency-Key"] = f"{next(_keys)}:{key}"[:255]


_keys = itertools.count(1)


# --- checks of API.md beyond the description --------------------------------------------


def problem_details(ctx: CheckContext, response: schemathesis.Response,
                    case: schemathesis.Case) -> bool | None:
    """Every error is problem+json whose ``status`` is the HTTP status; headers per API.md."""
    where = f"{case.method} {case.formatted_path} -> {response.status_code}"
    headers = {name.lower(): values for name, values in response.headers.items()}
    assert headers.get("x-content-type-options") == ["nosniff"], f"{where}: no nosniff"
    status = response.status_code
    if status < 400:
        return None
    content_type = headers.get("content-type", [""])[0]
    assert content_type.split(";")[0].strip() == PROBLEM, f"{where}: {content_type!r}"
    body = json.loads(response.content)
    assert isinstance(body, dict) and body.get("status") == status, f"{where}: {body!r}"
    assert {"type", "title", "detail"} <= set(body), f"{where}: {body!r}"
    for leak in ("Traceback", "SELECT", "INSERT", SECRET):
        assert leak not in response.text, f"{where}: reveals {leak!r}"
    if status == 401:
        scheme = headers.get("www-authenticate", [""])[0]
        assert scheme.lower().startswith("bearer"), f"{where}: WWW-Authenticate {scheme!r}"
    if status == 429:
        assert "retry-after" in headers, f"{where}: no Retry-After"
    if status == 405:
        assert "allow" in headers, f"{where}: no Allow"
    return None


def call_and_validate(case: schemathesis.Case, checks: list[CheckFunction] | None = None,
                      ) -> schemathesis.Response:
    """``case.call_and_validate``, with the one refusal JSON Schema cannot describe."""
    _fresh_idempotency_key(case)
    refusal = refused_valid(case)
    response = case.call(timeout=10)
    excluded: list[CheckFunction] = []
    if refusal is not None and response.status_code not in CHECKED_BEFORE_FIELDS:
        assert response.status_code == refusal[0], (refusal, response.text)
        assert refusal[1] in response.json()["detail"], (refusal, response.text)
        excluded.append(positive_data_acceptance)
    case.validate_response(
        response,
        checks=[check for check in checks or [] if check not in excluded] or None,
        additional_checks=[problem_details],
        excluded_checks=excluded,
        transport_kwargs={"timeout": 10},
    )
    return response


# --- the fuzzing ----------------------------------------------------------------------


class Tokens:
    """A valid token per case: an administrator's on /admin, on writes the body's user's."""

    def get(self, case: schemathesis.Case, ctx: schemathesis.AuthContext) -> str | None:
        if case.path.startswith("/admin/"):
            return token("fuzz-admin", scope=ADMIN_SCOPE)
        if case.path in WRITES:
            return own_token(case)
        return None  # the public reads go without

    def set(self, case: schemathesis.Case, data: str, ctx: schemathesis.AuthContext) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


api = schemathesis.pytest.from_fixture("served_schema").exclude(path_regex=r"/stream$")
api.auth(refresh_interval=None)(Tokens)


@api.parametrize()
@FUZZ_SETTINGS
def test_api_conforms(case: schemathesis.Case) -> None:
    """Every built-in check: 5xx, status, content type, schema, headers, negative data..."""
    call_and_validate(case)


with_token = schemathesis.pytest.from_fixture("token_schema").include(path_regex=WITH_TOKEN)


@with_token.parametrize()
@with_token.given(kind=st.sampled_from(sorted(VALID) + sorted(BROKEN)))
@FUZZ_SETTINGS
def test_tokens(case: schemathesis.Case, kind: str) -> None:
    value = (BROKEN.get(kind) or VALID[kind])(case)
    headers = {name: v for name, v in (case.headers or {}).items() if name != "Authorization"}
    if value is not None:
        headers["Authorization"] = value
    case.headers = headers
    response = call_and_validate(case, CONFORMANCE)
    sent = response.request.body or b""
    if kind in BROKEN and len(sent) <= MAX_BODY:
        assert response.status_code == 401, (kind, response.status_code, response.text)
    elif kind in VALID and kind != "an administrator's" and case.path.startswith("/admin/"):
        assert response.status_code == 403, (kind, response.status_code, response.text)


locked = schemathesis.pytest.from_fixture("locked_schema").include(path_regex=WITH_TOKEN)
locked.auth(refresh_interval=None)(Tokens)


@locked.parametrize()
@settings(FUZZ_SETTINGS, max_examples=30)
def test_locked_out_address(case: schemathesis.Case) -> None:
    """Answers under the default limits are mostly 429s: those must be documented too."""
    call_and_validate(case, CONFORMANCE)


# --- what the description must say ---------------------------------------------------


def _operations(raw: dict[str, Any], prefix: str) -> list[dict[str, Any]]:
    return [operation for path, item in raw["paths"].items() if path.startswith(prefix)
            for operation in item.values() if isinstance(operation, dict)]


def _documents(method: str, path: str, status: int) -> Callable[[dict[str, Any]], bool]:
    def check(raw: dict[str, Any]) -> bool:
        if path.endswith("/"):
            operations = _operations(raw, path)
        else:
            operations = [raw["paths"][path][method.lower()]]
        return bool(operations) and all(str(status) in op["responses"] for op in operations)
    return check


def _idempotency_key_pattern(raw: dict[str, Any]) -> bool:
    parameters = raw["paths"]["/score"]["post"]["parameters"]
    key = next(p for p in parameters if p["name"] == "Idempotency-Key")
    return "pattern" in key["schema"]


def _error_media_types(raw: dict[str, Any]) -> bool:
    return all(set(response.get("content", {})) <= {PROBLEM}
               for operation in _operations(raw, "/")
               for status, response in operation["responses"].items()
               if status.startswith(("4", "5")))


STATES: dict[str, Callable[[dict[str, Any]], bool]] = {
    "POST /actions documents 403 (a banned user)": _documents("POST", "/actions", 403),
    **{f"POST revert documents {status}": _documents("POST", REVERT, status)
       for status in (400, 413, 415)},
    "every /admin operation documents 429": _documents("*", "/admin/", 429),
    f"POST {REVERT} describes its JSON body": lambda raw: "requestBody" in raw["paths"][
        REVERT]["post"],
    "the /admin operations declare the bearer security scheme": lambda raw: all(
        op.get("security") for op in _operations(raw, "/admin/")),
    "the /admin 2xx answers with a body have a schema": lambda raw: all(
        response["content"]["application/json"]["schema"]
        for op in _operations(raw, "/admin/") for status, response in op["responses"].items()
        if status.startswith("2") and status != "204"),
    "Idempotency-Key has a printable-ASCII pattern": _idempotency_key_pattern,
    "ActionRequest.kind is an enum of the configured kinds": lambda raw: raw[
        "components"]["schemas"]["ActionRequest"]["properties"]["kind"].get("enum") == sorted(
        ACTION_KINDS),
    "ScoreUpdate.increment has the configured maximum": lambda raw: raw[
        "components"]["schemas"]["ScoreUpdate"]["properties"]["increment"].get(
        "maximum") == MAX_INCREMENT,
    "every documented error is application/problem+json": _error_media_types,
    "the user_id path parameters have the user-id pattern": lambda raw: all(
        "pattern" in parameter["schema"]
        for path, item in raw["paths"].items() if "{user_id}" in path
        for operation in item.values() for parameter in operation.get("parameters", [])
        if parameter["name"] == "user_id"),
}


@pytest.mark.parametrize("fact", STATES)
def test_description_states(served_schema: Any, fact: str) -> None:
    assert STATES[fact](served_schema.raw_schema)


def test_actions_check_fields_before_authorisation(fuzz_server: ServerProcess) -> None:
    """API.md: fields (422) are checked before authorisation (403), for a banned user too."""
    response = httpx.post(f"{fuzz_server.url}/actions", json={"kind": "no-such-kind"},
                          headers=bearer(BANNED), timeout=10)
    assert response.status_code == 422, response.text


def test_server_logged_no_error(fuzz_server: ServerProcess) -> None:
    """Whatever the fuzzing sent (the tests above run first), nothing was logged as an error."""
    bad = []
    for line in fuzz_server.log_lines():
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict):
            if record.get("level") in ("error", "critical", "exception"):
                bad.append(line)
        elif "Traceback" in line or line.startswith(("ERROR", "CRITICAL")):
            bad.append(line)
    assert not bad, "\n".join(bad[:20])
