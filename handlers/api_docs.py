"""The API's own description: the OpenAPI document and a browsable reference rendering it.

The reference is Swagger UI from the ``swagger-ui-bundle-v2`` package, served from this service: no
asset is fetched from elsewhere at run time, and the page runs no inline script, so it works under
a Content-Security-Policy of ``script-src 'self'``.
"""

from __future__ import annotations

import json
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from aiohttp import web
from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

from handlers.keys import endpoints_key, openapi_body_key
from handlers.openapi import build_openapi
from handlers.routing import Endpoint, contracts_of

DOCS_ASSETS = "/api/docs/assets"

#: The reference needs its own scripts, styles (Swagger UI sets some inline) and the document.
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>caremsg API reference</title>
<link rel="stylesheet" href="docs/assets/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="docs/assets/swagger-ui-bundle.js"></script>
<script src="docs/start.js"></script>
</body>
</html>
"""

_START = """window.ui = SwaggerUIBundle({
  url: "openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  defaultModelsExpandDepth: 0,
  validatorUrl: null, // the default posts the document to an online validator
});
"""


def _version() -> str:
    try:
        return version("caremsg")
    except PackageNotFoundError:
        return "0.0.0"


def document_of(app: web.Application) -> dict[str, Any]:
    """The document of this app: its route table and what its installed middlewares (and the
    response-prepare hooks, which can add headers too) declare."""
    adders: list[object] = [*app.middlewares, *app.on_response_prepare]
    contracts = [c for m in adders for c in contracts_of(m) or ()]
    return build_openapi(app[endpoints_key], version=_version(), contracts=contracts)


async def openapi_document(request: web.Request) -> web.Response:
    """The document, built once per app (~40 ms of CPU each time it was built per request)."""
    served = request.app[openapi_body_key]
    if "body" not in served:
        served["body"] = json.dumps(document_of(request.app)).encode()
    return web.Response(body=served["body"], content_type="application/json")


async def docs_page(request: web.Request) -> web.Response:
    return web.Response(text=_PAGE, content_type="text/html", headers={"Content-Security-Policy": DOCS_CSP})


async def docs_start(request: web.Request) -> web.Response:
    return web.Response(text=_START, content_type="text/javascript")


def add_asset_routes(app: web.Application) -> None:
    """Swagger UI's files and the script that starts it (not API operations: not in the document)."""
    app.router.add_get("/api/docs/start.js", docs_start, name="docs-start")
    app.router.add_static(DOCS_ASSETS, swagger_ui_path, name="docs-assets")


ENDPOINTS: list[Endpoint] = [
    Endpoint(
        "GET",
        "/api/openapi.json",
        openapi_document,
        "getOpenApiDocument",
        "This OpenAPI 3.1 document",
        "service",
        public=True,
        errors=(),
        media_type="application/json",
        description="Generated from the route table and the middlewares that produce each status and header.",
    ),
    Endpoint(
        "GET",
        "/api/docs",
        docs_page,
        "getApiReference",
        "A browsable API reference rendering this document",
        "service",
        public=True,
        errors=(),
        media_type="text/html",
    ),
]
