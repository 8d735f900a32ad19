"""The ``scoreboard`` command: ``serve``, ``token``, ``migrate``."""

from __future__ import annotations

import argparse
import asyncio
import gc
import ssl
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
    import uvicorn

    from scoreboard.app import create_app
    from scoreboard.logs import configure_logging

    if bool(args.ssl_certfile) != bool(args.ssl_keyfile):
        raise SettingsError("--ssl-certfile and --ssl-keyfile go together")
    configure_logging(settings.log_level)
    config = uvicorn.Config(
        create_app(settings),
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,  # the app writes one structured line per request
        proxy_headers=False,  # client addresses are the peers'; see docs/operations.md
        server_header=False,
        ssl_certfile=args.ssl_certfile,
        ssl_keyfile=args.ssl_keyfile,
        ssl_version=ssl.PROTOCOL_TLS_SERVER,
        ssl_ciphers="ECDHE+AESGCM:ECDHE+CHACHA20",
        lifespan="on",
    )
    # Fewer, larger young-generation collections: the default (700 allocations) runs the
    # collector every few requests; the service builds few reference cycles.
    gc.set_threshold(50_000, 20, 100)
    server = uvicorn.Server(config)
    if args.ssl_certfile:
        _pin_tls_versions(config)
    server.run()
    return 0 if server.started else 1


def _pin_tls_versions(config: object) -> None:
    """TLS 1.2 and 1.3 only: uvicorn builds the context; we raise its floor."""
    config.load()  # type: ignore[attr-defined]
    context = config.ssl  # type: ignore[attr-defined]
    if isinstance(context, ssl.SSLContext):
        context.minimum_version = ssl.TLSVersion.TLSv1_2


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
    from scoreboard.store.sqlite import SQLiteStore

    async def run() -> None:
        store = SQLiteStore(settings.sqlite_path)
        await store.open()
        await store.close()

    asyncio.run(run())
    print(f"scoreboard: schema is up to date in {settings.database_url}")
    return 0
