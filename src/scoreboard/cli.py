"""The ``scoreboard`` command: ``serve``, ``token``, ``migrate``."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import sys

from scoreboard.settings import Settings, SettingsError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scoreboard", description="A live leaderboard service.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="start the service")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--ssl-certfile", help="PEM certificate chain: serve HTTPS")
    serve.add_argument("--ssl-keyfile", help="PEM private key for --ssl-certfile")
    serve.add_argument("--self-signed", action="store_true",
                       help="serve HTTPS with a self-signed certificate for localhost, made in "
                            "(and reused from) the data directory")

    token = commands.add_parser("token", help="print a signed token for local use")
    token.add_argument("user_id")
    token.add_argument("--name", help="display name claim")
    token.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds (default 3600)")
    token.add_argument("--admin", action="store_true", help="add the scoreboard:admin scope")

    commands.add_parser("migrate", help="create or upgrade the database schema, then exit")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        if args.command == "serve":
            return _serve(settings, args)
        if args.command == "token":
            return _token(settings, args)
        return _migrate(settings)
    except SettingsError as exc:
        print(f"scoreboard: {exc}", file=sys.stderr)
        return 2


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    from scoreboard.server import serve

    if args.self_signed and (args.ssl_certfile or args.ssl_keyfile):
        raise SettingsError("--self-signed cannot be combined with --ssl-certfile/--ssl-keyfile")
    if bool(args.ssl_certfile) != bool(args.ssl_keyfile):
        raise SettingsError("--ssl-certfile and --ssl-keyfile go together")
    if settings.uses_dev_key and not is_loopback(args.host):
        # The development key is for one machine: off it, anyone could ask /dev/token
        # for anybody's token.
        raise SettingsError(
            f"--host {args.host} is not a loopback address, and no signing key is configured: "
            "set SCOREBOARD_JWT_SECRET, SCOREBOARD_JWT_PUBLIC_KEY or SCOREBOARD_JWT_JWKS_URL "
            "(the development key only serves 127.0.0.1, ::1 or localhost)"
        )
    return serve(settings, args.host, args.port, args.ssl_certfile, args.ssl_keyfile,
                 self_signed=args.self_signed)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) only listens on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def _token(settings: Settings, args: argparse.Namespace) -> int:
    from scoreboard.auth import TokenSigner

    if args.ttl < 1 or args.ttl > settings.jwt_max_ttl:
        raise SettingsError(f"--ttl must be 1 to {settings.jwt_max_ttl} seconds")
    try:
        signer = TokenSigner(settings)
    except SettingsError as exc:
        print(f"scoreboard: {exc}", file=sys.stderr)
        return 1
    try:
        print(signer.sign(args.user_id, name=args.name, ttl=args.ttl, admin=args.admin))
    except ValueError as exc:
        print(f"scoreboard: {exc}", file=sys.stderr)
        return 2
    return 0


def _migrate(settings: Settings) -> int:
    from scoreboard.app import make_store

    async def run() -> None:
        store = make_store(settings)
        await store.open()
        await store.close()

    asyncio.run(run())
    print(f"scoreboard: schema is up to date in {settings.database_label}")
    return 0
