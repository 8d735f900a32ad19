"""The scoreboard page at ``/`` and its assets, the API explorer at ``/docs``, and the
development token helper.

The files are read once at start from the installed packages and served from memory
under fixed paths (no path is ever taken from the request). Both pages get a strict
Content-Security-Policy: no inline script or style, connections only to this origin,
no framing.
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
# Swagger UI draws some icons as data: images; nothing else differs from the page's.
DOCS_CSP = PAGE_CSP.replace("img-src 'self'", "img-src 'self' data:")
_JS = "text/javascript; charset=utf-8"
_CSS = "text/css; charset=utf-8"
_HTML = "text/html; charset=utf-8"
# path -> (package, file, media type)
PAGE_FILES = {
    "/": ("scoreboard.static", "index.html", _HTML),
    "/static/app.js": ("scoreboard.static", "app.js", _JS),
    "/static/app.css": ("scoreboard.static", "app.css", _CSS),
    "/static/icon.svg": ("scoreboard.static", "icon.svg", "image/svg+xml"),
}
# The API explorer, from the install: no CDN, so it works offline and under the CSP.
DOCS_FILES = {
    "/docs": ("scoreboard.static", "docs.html", _HTML),
    "/docs/init.js": ("scoreboard.static", "docs.js", _JS),
    "/docs/swagger-ui-bundle.js": ("fastapi_swagger.resources", "swagger-ui-bundle.js", _JS),
    "/docs/swagger-ui.css": ("fastapi_swagger.resources", "swagger-ui.css", _CSS),
}
DEV_TOKEN_TTL = 3600


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    media_type: str
    etag: str
    csp: str | None = None


def load_assets(dev_key: bool, docs: bool) -> dict[str, Asset]:
    """Every file served at a fixed path, read once from the installed packages."""
    files = {**PAGE_FILES, **(DOCS_FILES if docs else {})}
    assets = {}
    for path, (package, name, media_type) in files.items():
        body = resources.files(package).joinpath(name).read_bytes()
        if path == "/":
            flag = b"true" if dev_key else b"false"
            body = body.replace(b'content="dev-key-flag"', b'content="' + flag + b'"')
        etag = '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'
        csp = {"/": PAGE_CSP, "/docs": DOCS_CSP}.get(path)
        assets[path] = Asset(body, media_type, etag, csp)
    return assets


def page_router(assets: dict[str, Asset], signer: TokenSigner | None) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    def serving(asset: Asset) -> Callable[[Request], Awaitable[Response]]:
        headers = {"etag": asset.etag, "cache-control": "no-cache"}
        if asset.csp is not None:
            headers |= {"content-security-policy": asset.csp, "x-frame-options": "DENY"}

        async def serve(request: Request) -> Response:
            if request.headers.get("if-none-match") == asset.etag:
                return Response(status_code=304, headers=headers)
            return Response(asset.body, media_type=asset.media_type, headers=headers)

        return serve

    for path, asset in assets.items():
        router.add_api_route(path, serving(asset), methods=["GET"])

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
