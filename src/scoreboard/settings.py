"""Every ``SCOREBOARD_*`` variable, parsed and checked once, at start-up.

``Settings.from_env`` is the only place that reads the environment. A bad value
stops the process with a message that names the variable and the value.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from jwt.algorithms import get_default_algorithms
from limits import RateLimitItem, parse

from scoreboard.model import DEFAULT_BOARD, MAX_TOTAL, ActionKind, is_board_id

DEMO_ACTION = ActionKind("demo", points=10, min_seconds=1, ttl_seconds=600)
_KIND = re.compile(r"[a-z0-9_-]{1,64}")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_KNOWN_ALGORITHMS = set(get_default_algorithms()) - {"none"}  # what PyJWT implements


class SettingsError(ValueError):
    """A configuration value that the service refuses to start with."""


@dataclass(frozen=True, slots=True)
class Settings:
    data_dir: Path = Path("./data")
    database_url: str = ""
    redis_url: str | None = field(default=None, repr=False)
    redis_prefix: str = "{scoreboard}:"  # one hash slot: a board's keys stay on one shard
    jwt_secret: str | None = field(default=None, repr=False)
    jwt_public_key: Path | None = None
    jwt_jwks_url: str | None = None
    jwt_algorithms: tuple[str, ...] = ()
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_max_ttl: int = 86400
    rate_limit: str = "60/minute"
    auth_failure_limit: str = "30/minute"
    max_increment: int = 100
    cors_origins: tuple[str, ...] = ()
    push_interval_ms: int = 100
    live_max: int = 20_000
    live_max_per_address: int = 64
    live_stall_seconds: float = 5.0
    live_heartbeat_seconds: float = 10.0
    docs: bool = True
    actions: tuple[ActionKind, ...] = (DEMO_ACTION,)
    require_action: bool = False
    log_level: str = "info"
    commit_queue_limit: int = 10_000
    receipt_timeout: float = 10.0
    max_boards: int = 100

    def __post_init__(self) -> None:
        keys = [self.jwt_secret, self.jwt_public_key, self.jwt_jwks_url]
        if sum(k is not None for k in keys) > 1:
            raise SettingsError(
                "set at most one of SCOREBOARD_JWT_SECRET, SCOREBOARD_JWT_PUBLIC_KEY, "
                "SCOREBOARD_JWT_JWKS_URL"
            )
        if self.jwt_secret is not None and len(self.jwt_secret.encode()) < 32:
            raise SettingsError("SCOREBOARD_JWT_SECRET must be at least 32 bytes")
        if self.jwt_jwks_url is not None:
            _check_jwks_url(self.jwt_jwks_url)
        unknown = set(self.jwt_algorithms) - _KNOWN_ALGORITHMS
        if unknown:
            raise SettingsError(
                f"SCOREBOARD_JWT_ALGORITHMS: unsupported {sorted(unknown)!r}; "
                f"choose from {sorted(_KNOWN_ALGORITHMS)}"
            )
        if not 1 <= self.max_increment <= MAX_TOTAL:
            raise SettingsError(
                f"SCOREBOARD_MAX_INCREMENT must be 1 to 2^53 - 1, got {self.max_increment}"
            )
        if not 1 <= self.push_interval_ms <= 60_000:
            raise SettingsError(
                f"SCOREBOARD_PUSH_INTERVAL_MS must be 1 to 60000, got {self.push_interval_ms}"
            )
        if self.live_max < 1 or self.live_max_per_address < 1:
            raise SettingsError("SCOREBOARD_LIVE_MAX and _LIVE_MAX_PER_ADDRESS must be positive")
        if not 0 < self.receipt_timeout <= 3600:
            raise SettingsError(
                f"SCOREBOARD_RECEIPT_TIMEOUT must be more than 0 and at most 3600 seconds, "
                f"got {self.receipt_timeout}"
            )
        if not 1 <= self.max_boards <= 10_000:
            raise SettingsError(f"SCOREBOARD_MAX_BOARDS must be 1 to 10000, got {self.max_boards}")
        if self.jwt_max_ttl < 1:
            raise SettingsError(f"SCOREBOARD_JWT_MAX_TTL must be positive, got {self.jwt_max_ttl}")
        for name, value in (
            ("SCOREBOARD_RATE_LIMIT", self.rate_limit),
            ("SCOREBOARD_AUTH_FAILURE_LIMIT", self.auth_failure_limit),
        ):
            _parse_limit(name, value)
        if not re.fullmatch(r"[A-Za-z0-9_.:{}-]{1,64}", self.redis_prefix):
            raise SettingsError(
                "SCOREBOARD_REDIS_PREFIX must be 1-64 of A-Z a-z 0-9 _ . : { } -, "
                f"got {self.redis_prefix!r}"
            )
        if self.redis_url is not None:
            parts = urlsplit(self.redis_url)
            if parts.scheme not in ("redis", "rediss", "unix") or not (parts.netloc or parts.path):
                raise SettingsError(
                    "SCOREBOARD_REDIS_URL must be redis://host:port/db (or rediss://, unix://), "
                    f"got {self.redis_label!r}"
                )
        postgres = self.database_url.startswith(("postgresql://", "postgres://"))
        sqlite = self.database_url.startswith("sqlite:///") and self.sqlite_path != Path()
        if not (postgres or sqlite):
            raise SettingsError(
                "SCOREBOARD_DATABASE_URL must be sqlite:///path or postgresql://user@host/db, "
                f"got {self.database_label!r}"
            )

    @property
    def uses_postgres(self) -> bool:
        return not self.database_url.startswith("sqlite:")

    @property
    def database_label(self) -> str:
        """The database URL without its password: safe to log and to show."""
        return _without_password(self.database_url)

    @property
    def redis_label(self) -> str:
        """The Redis URL without its password: safe to log and to show."""
        return _without_password(self.redis_url or "")

    @property
    def sqlite_path(self) -> Path:
        return Path(self.database_url.removeprefix("sqlite:///"))

    @property
    def rate_limit_item(self) -> RateLimitItem:
        return _parse_limit("SCOREBOARD_RATE_LIMIT", self.rate_limit)

    @property
    def auth_failure_limit_item(self) -> RateLimitItem:
        return _parse_limit("SCOREBOARD_AUTH_FAILURE_LIMIT", self.auth_failure_limit)

    @property
    def uses_dev_key(self) -> bool:
        return self.jwt_secret is None and self.jwt_public_key is None and not self.jwt_jwks_url

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = dict(os.environ if environ is None else environ)

        def get(name: str) -> str | None:
            value = env.get(f"SCOREBOARD_{name}")
            return value if value not in (None, "") else None

        data_dir = Path(get("DATA_DIR") or "./data")
        algorithms = get("JWT_ALGORITHMS")
        origins = get("CORS_ORIGINS")
        public_key = get("JWT_PUBLIC_KEY")
        actions = get("ACTIONS")
        return cls(
            data_dir=data_dir,
            database_url=get("DATABASE_URL") or f"sqlite:///{data_dir / 'scoreboard.db'}",
            redis_url=get("REDIS_URL"),
            redis_prefix=get("REDIS_PREFIX") or "{scoreboard}:",
            jwt_secret=get("JWT_SECRET"),
            jwt_public_key=Path(public_key) if public_key else None,
            jwt_jwks_url=get("JWT_JWKS_URL"),
            jwt_algorithms=_split(algorithms) if algorithms else (),
            jwt_issuer=get("JWT_ISSUER"),
            jwt_audience=get("JWT_AUDIENCE"),
            jwt_max_ttl=_int("SCOREBOARD_JWT_MAX_TTL", get("JWT_MAX_TTL"), 86400),
            rate_limit=get("RATE_LIMIT") or "60/minute",
            auth_failure_limit=get("AUTH_FAILURE_LIMIT") or "30/minute",
            max_increment=_int("SCOREBOARD_MAX_INCREMENT", get("MAX_INCREMENT"), 100),
            cors_origins=tuple(_check_origin(o) for o in _split(origins)) if origins else (),
            push_interval_ms=_int("SCOREBOARD_PUSH_INTERVAL_MS", get("PUSH_INTERVAL_MS"), 100),
            live_max=_int("SCOREBOARD_LIVE_MAX", get("LIVE_MAX"), 20_000),
            live_max_per_address=_int("SCOREBOARD_LIVE_MAX_PER_ADDRESS",
                                      get("LIVE_MAX_PER_ADDRESS"), 64),
            docs=_bool("SCOREBOARD_DOCS", get("DOCS"), True),
            actions=load_actions(Path(actions)) if actions else (DEMO_ACTION,),
            require_action=_bool("SCOREBOARD_REQUIRE_ACTION", get("REQUIRE_ACTION"), False),
            log_level=(get("LOG_LEVEL") or "info").lower(),
            receipt_timeout=_seconds("SCOREBOARD_RECEIPT_TIMEOUT", get("RECEIPT_TIMEOUT"), 10.0),
            max_boards=_int("SCOREBOARD_MAX_BOARDS", get("MAX_BOARDS"), 100),
        )


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _int(name: str, value: str | None, default: int) -> int:
    if value is None:
        return default
    if not re.fullmatch(r"[0-9]+", value):
        raise SettingsError(f"{name} must be a whole number, got {value!r}")
    return int(value)


def _seconds(name: str, value: str | None, default: float) -> float:
    if value is None:
        return default
    if not re.fullmatch(r"[0-9]+(\.[0-9]*)?|\.[0-9]+", value):
        raise SettingsError(f"{name} must be a number of seconds, got {value!r}")
    return float(value)


def _bool(name: str, value: str | None, default: bool) -> bool:
    if value is None:
        return default
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise SettingsError(f"{name} must be true or false, got {value!r}")


def _parse_limit(name: str, value: str) -> RateLimitItem:
    if not re.fullmatch(r"\s*[1-9][0-9]*\s*/\s*(second|minute|hour)\s*", value):
        raise SettingsError(f"{name} must look like N/second, N/minute or N/hour, got {value!r}")
    return parse(value)


def _check_origin(origin: str) -> str:
    parts = urlsplit(origin)
    if origin == "*" or parts.scheme not in ("http", "https") or not parts.netloc or parts.path:
        raise SettingsError(
            f"SCOREBOARD_CORS_ORIGINS: {origin!r} is not an origin like https://example.com"
        )
    return origin


def _check_jwks_url(url: str) -> None:
    parts = urlsplit(url)
    loopback = parts.hostname in ("127.0.0.1", "localhost", "::1")
    if parts.scheme == "https" or (parts.scheme == "http" and loopback):
        return
    raise SettingsError(
        f"SCOREBOARD_JWT_JWKS_URL must be https:// (or http:// on loopback), got {url!r}"
    )


def load_actions(path: Path) -> tuple[ActionKind, ...]:
    """``{"kind": {"points": 10, "min_seconds": 1, "ttl_seconds": 600}, ...}`` from a file;
    a kind may name its board (``"board": "weekly"``, default ``default``)."""
    name = "SCOREBOARD_ACTIONS"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SettingsError(f"{name}: cannot read a JSON object from {str(path)!r}") from exc
    if not isinstance(data, dict) or not data:
        raise SettingsError(f"{name}: {str(path)!r} must hold a non-empty JSON object")
    kinds = []
    for kind, spec in data.items():
        if not _KIND.fullmatch(kind):
            raise SettingsError(f"{name}: kind {kind!r} must be 1-64 of a-z 0-9 _ -")
        required = {"points", "min_seconds", "ttl_seconds"}
        if not isinstance(spec, dict) or not required <= set(spec) <= required | {"board"}:
            raise SettingsError(
                f"{name}: {kind!r} needs points, min_seconds and ttl_seconds (and may name "
                "a board)"
            )
        board = spec.get("board", DEFAULT_BOARD)
        if not is_board_id(board):
            raise SettingsError(f"{name}: {kind!r} board must be 1-64 of a-z 0-9 _ -")
        points, low, ttl = spec["points"], spec["min_seconds"], spec["ttl_seconds"]
        if type(points) is not int or not 1 <= points <= MAX_TOTAL:
            raise SettingsError(f"{name}: {kind!r} points must be an integer 1 to 2^53 - 1")
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (low, ttl)):
            raise SettingsError(f"{name}: {kind!r} min_seconds and ttl_seconds must be numbers")
        if low < 0 or ttl <= low:
            raise SettingsError(f"{name}: {kind!r} needs 0 <= min_seconds < ttl_seconds")
        kinds.append(ActionKind(kind, points, float(low), float(ttl), board))
    return tuple(kinds)
