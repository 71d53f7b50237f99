"""The gateway's pages: `/` the control panel, `/overlay` the character for OBS, and their
static files under `/static/` (plain ES modules and CSS, no build step).

The pages hold no data and no secrets, so they are served to anyone who can reach the
gateway; everything they show or do goes through the API and its keys (a page takes its
key from `?key=` in its own address and passes it on).
"""

import mimetypes
from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

PAGES = Path(__file__).resolve().parents[1] / "pages"

# Browsers refuse a module served as text/plain, and Python 3.11 only knows .mjs from the
# system's /etc/mime.types, which a slim container lacks.
mimetypes.add_type("text/javascript", ".mjs")

router = APIRouter(tags=["pages"])


def page(name: str) -> FileResponse:
    path = PAGES / name
    if not path.is_file():
        raise HTTPException(404, f"the {name} page is not part of this build")
    # Always the current page: they change with the gateway.
    return FileResponse(path, headers={"Cache-Control": "no-cache"})


@router.get("/", include_in_schema=False)
async def panel() -> FileResponse:
    return page("panel.html")


@router.get("/overlay", include_in_schema=False)
async def overlay() -> FileResponse:
    return page("overlay.html")


static = StaticFiles(directory=PAGES, check_dir=False)
