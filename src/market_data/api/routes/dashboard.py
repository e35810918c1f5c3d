"""GET /: the dashboard, one HTML page with its scripts and styles under /static.

No build step and nothing from the internet: the page is a static file of the package, its
JavaScript is plain ES modules plus the vendored chart library (static/vendor/VENDORED.md), and
everything it shows comes from the JSON endpoints (/status, /coverage, /candles, /jobs, /gaps).
The API token, when the user enters one, stays in the page's memory.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parent.parent / "static"

# Scripts only from this origin; the chart library sets element styles from script, hence
# 'unsafe-inline' for styles alone. No framing, no referrer, no sniffing.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
        "form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


@router.get("/")
async def dashboard() -> FileResponse:
    return FileResponse(STATIC / "dashboard.html", media_type="text/html", headers=PAGE_HEADERS)


def mount(app: FastAPI) -> None:
    """The page at / and its assets at /static (the API keeps every other path)."""
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
