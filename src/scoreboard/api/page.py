"""The scoreboard page at ``/`` and its two assets, and the development token helper.

The files are read once at start and served from memory under fixed names (no path
is ever taken from the request). The page gets a strict Content-Security-Policy: no
inline script or style, connections only to this origin, no framing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from scoreboard.api import body as checks
from scoreboard.auth import TokenSigner, clean_name

PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_TYPES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "icon.svg": "image/svg+xml",
}
DEV_TOKEN_TTL = 3600


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


def load_assets(dev_key: bool) -> dict[str, Asset]:
    folder = resources.files("scoreboard").joinpath("static")
    assets = {}
    for name, media_type in _TYPES.items():
        body = folder.joinpath(name).read_bytes()
        if name == "index.html":
            flag = b"true" if dev_key else b"false"
            body = body.replace(b'content="dev-key-flag"', b'content="' + flag + b'"')
        etag = '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'
        assets[name] = Asset(body, media_type, etag)
    return assets


def page_router(assets: dict[str, Asset], signer: TokenSigner | None) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    def serving(name: str) -> Callable[[Request], Awaitable[Response]]:
        asset = assets[name]
        headers = {"etag": asset.etag, "cache-control": "no-cache"}
        if name == "index.html":
            headers |= {"content-security-policy": PAGE_CSP, "x-frame-options": "DENY",
                        "referrer-policy": "no-referrer"}

        async def serve(request: Request) -> Response:
            if request.headers.get("if-none-match") == asset.etag:
                return Response(status_code=304, headers=headers)
            return Response(asset.body, media_type=asset.media_type, headers=headers)

        return serve

    for name in _TYPES:
        path = "/" if name == "index.html" else f"/static/{name}"
        router.add_api_route(path, serving(name), methods=["GET"])

    if signer is not None:
        @router.post("/dev/token")
        async def dev_token(request: Request) -> Response:
            """A one-hour token for any user, only while the server runs on its dev key."""
            checks.check_media_type(request.headers.get("content-type"))
            fields = checks.json_object(checks.parse_json(await request.body()),
                                        {"user_id": True, "name": False})
            user_id = checks.user_id_field(fields["user_id"])
            name = clean_name(fields.get("name"))
            token = signer.sign(user_id, name=name, ttl=DEV_TOKEN_TTL)
            return JSONResponse({"token": token, "expires_in": DEV_TOKEN_TTL},
                                headers={"cache-control": "no-store"})

    return router
