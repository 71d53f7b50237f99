"""The gateway's ASGI app: routes (services.gateway.routes.*), errors, CORS, limits.

Every error is JSON: `{"error": "...", "fields": [...]}`, where each field names where
in the request the problem is (`body.text`, `query.topics`).
"""

import json
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

import contracts
from services.gateway.link import BusLink
from services.gateway.routes import (
    audio,
    control,
    dead_letters,
    dialogue,
    events,
    long_term,
    memory,
    pages,
    status,
    stream_tools,
    vision,
)
from services.gateway.security import BodyLimit
from services.gateway.settings import GatewaySettings
from services.vision.images import MAX_IMAGE_BYTES

OPENAPI_PATH = Path(contracts.__file__).parent / "openapi.json"
MAX_IMPORT_BYTES = 4 * 1024 * 1024
"""A long-term memory import: its export's JSON (~20,000 items, about a minute of embedding
on two cores; `marionette memory import` has no limit)."""
DESCRIPTION = """The character's HTTP and WebSocket face.

Every call that changes something publishes a typed message on the bus (`control` or
`chat.message`) and answers with what it published. With keys configured, send
`Authorization: Bearer KEY` (or `?key=KEY`): the read key may GET and watch
`/ws/events`; the operator key may do everything.

WebSockets (not in this document's paths):
- `/ws/events?topics=a,b&session=S&since=POSITION&audio=0`: topics live as JSON events
  `{topic, position, message}`; reconnect with `since=` the last position to miss nothing.
- `/ws/audio?session=S&rate=16000`: a remote microphone (binary s16le mono frames in) and
  speaker (the reply's audio out, paced, with playback progress reported for the session).
"""


def create_app(link: BusLink) -> FastAPI:
    """The app, serving through `link`."""
    app = _routes(link.settings)
    app.state.link = link
    return app


def openapi_document() -> str:
    """The committed contracts/openapi.json (`marionette docs` writes it)."""
    document = _routes(GatewaySettings.model_construct()).openapi()
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def _routes(settings: GatewaySettings) -> FastAPI:
    app = FastAPI(
        title="Marionette gateway",
        version="1",
        description=DESCRIPTION,
        docs_url="/api/docs",
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    app.state.settings = settings
    for module in (status, control, stream_tools, memory, long_term, dead_letters, events, audio,
                   dialogue, vision, pages):  # fmt: skip
        app.include_router(module.router)
    app.mount("/static", pages.static, name="static")
    app.add_exception_handler(RequestValidationError, _invalid_request)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
    larger = [
        ("/api/vision", MAX_IMAGE_BYTES),  # a picture, checked by the route (its key first)
        ("/api/memory/scopes/[^/]+/import", MAX_IMPORT_BYTES),  # a long-term memory export
    ]
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes, larger=larger)
    return app


def field_name(location: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(part) for part in location)


async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    fields = [
        {"field": field_name(error["loc"]), "problem": error["msg"]} for error in exc.errors()
    ]
    named = ", ".join(f["field"] for f in fields)
    return JSONResponse(
        status_code=422, content={"error": f"invalid request: {named}", "fields": fields}
    )


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return JSONResponse(
        status_code=exc.status_code,
        content={"error": str(exc.detail), "fields": getattr(exc, "fields", [])},
        headers=getattr(exc, "headers", None),
    )
