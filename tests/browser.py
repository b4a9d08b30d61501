"""What the browser tests share: the web service under uvicorn on a loopback port, and
Debian's Chromium driven by Playwright (fixtures ``browser`` and ``page``, registered for
every test by ``tests/conftest.py``).

Chromium comes from the Debian package (``make chromium``); ``playwright install`` and its
browser downloads are never used. Each page leaves a screenshot in ``test-output/``.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import free_port

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = Path(__file__).resolve().parents[1] / "test-output"
_EXPECTED_4XX = "the server responded with a status of 4"


@contextmanager
def live_server(app) -> Iterator[str]:
    """``app`` under uvicorn in a background thread; yields its base URL.

    The thread runs in a copy of the caller's context, so settings a test set in context
    variables (Prefect's ``temporary_settings``) reach the requests too."""
    import uvicorn

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    running = uvicorn.Server(config)
    context = contextvars.copy_context()
    thread = threading.Thread(target=context.run, args=(running.run,), daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not running.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        running.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        pytest.fail("Chromium is missing: run `make chromium` (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser, request: pytest.FixtureRequest) -> Iterator[object]:
    """A fresh page; JavaScript errors and failed requests fail the test; a screenshot of
    the final state is saved under test-output/ (also when the test fails)."""
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(60_000)  # search by upload encodes on a busy CPU
    expect.set_options(timeout=60_000)  # expect() has its own limit (5 s by default)
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))

    def console(message) -> None:
        # A 4xx the page shows as a message is tested for explicitly; anything else (a
        # script error, a blocked resource, a 5xx) is a problem.
        if message.type == "error" and _EXPECTED_4XX not in message.text:
            problems.append(f"console: {message.text}")

    page.on("console", console)
    yield page
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{request.node.name}.png"), full_page=True)
    context.close()
    assert not problems, problems
