"""A real Chromium driven by Playwright, for the dashboard tests and the screenshot script.

Debian's chromium at /usr/bin/chromium (`apt-get install chromium`; .ci/run installs it;
CHROMIUM_PATH points elsewhere); no browser is ever downloaded. Without it the browser tests
skip, except under CI=true where they fail.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


def missing_browser() -> str | None:
    """Why the browser tests cannot run here, or None."""
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[dev]')"
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    return None


@asynccontextmanager
async def chromium() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=LAUNCH_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            await browser.close()


@dataclass
class PageProblems:
    """Everything that went wrong while a page was open: console errors, uncaught exceptions,
    requests that failed or answered >= 400, and every URL requested (to check for secrets)."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)

    def any(self) -> list[str]:
        return [*self.console_errors, *self.page_errors, *self.failed_requests]


def watch(page: Any) -> PageProblems:
    problems = PageProblems()
    page.on("console", lambda m: m.type == "error" and problems.console_errors.append(m.text))
    page.on("pageerror", lambda e: problems.page_errors.append(str(e)))
    page.on(
        "requestfailed",
        lambda r: problems.failed_requests.append(f"{r.method} {r.url}: {r.failure}"),
    )
    page.on("request", lambda r: problems.urls.append(r.url))

    def answered(response: Any) -> None:
        if response.status >= 400:
            problems.failed_requests.append(
                f"{response.request.method} {response.url}: HTTP {response.status}"
            )

    page.on("response", answered)
    return problems
