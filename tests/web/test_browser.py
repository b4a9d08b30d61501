"""The web pages in a real browser: Debian's Chromium driven by Playwright, against the
service running under uvicorn on a loopback port, over a real indexed store and a real
SQLite annotations database (the browser fixtures: ``tests/browser.py``). Each test leaves a
screenshot in ``test-output/``.

Why every read after an action is an ``expect(...)`` assertion: the page's script answers
an action asynchronously (a fetch, then the DOM), so a plain read right after the response
arrived can see the page before the script wrote it — flaky on a loaded machine. Playwright's
assertions retry until the page says so (or the timeout).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.browser import SHOTS, live_server
from tiefvision_core.annotations.repository import AnnotationDatabase
from tiefvision_core.catalog.manifest import read_manifest
from tiefvision_core.storage.urls import open_store
from tiefvision_web import create_app

_ALL_LOADED = (
    "() => [...document.querySelectorAll('IMAGES')].every(i => i.complete && i.naturalWidth > 0)"
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("web-browser") / "annotations.sqlite"


@pytest.fixture(scope="module")
def server(indexed_catalog, database, lite0) -> Iterator[str]:
    """The service under uvicorn in a background thread; yields its base URL."""
    with live_server(create_app(indexed_catalog.settings(database), encoder=lite0)) as url:
        yield url


def test_gallery_click_shows_similar_images_with_scores_and_boxes(server, page) -> None:
    page.goto(server + "/")
    thumbs = page.locator("#gallery .thumb")
    expect(thumbs).to_have_count(18)
    clicked = thumbs.nth(2).get_attribute("data-id")
    thumbs.nth(2).click()
    hits = page.locator("#hits .hit")
    expect(hits).to_have_count(12)
    ids = [hits.nth(n).get_attribute("data-id") for n in range(hits.count())]
    assert clicked not in ids
    scores = [float(hits.nth(n).get_attribute("data-score")) for n in range(hits.count())]
    assert scores == sorted(scores, reverse=True)
    expect(page.locator("#hits .hit .box")).to_have_count(12)  # every result has its box
    expect(page.locator("#query .box")).to_have_count(1)
    expect(page.locator("#message")).to_contain_text("results from the unsupervised index")
    # Every result image loaded (natural width > 0), through the API.
    page.wait_for_function(_ALL_LOADED.replace("IMAGES", "#hits img"))


def test_upload_a_photo_and_see_results(server, page, indexed_catalog) -> None:
    photo = sorted(indexed_catalog.photos.rglob("*.jpg"))[7]
    page.goto(server + "/search")
    page.set_input_files("#photo", str(photo))
    hits = page.locator("#hits .hit")
    expect(hits).to_have_count(12)
    assert float(hits.first.get_attribute("data-score")) > 0.99  # it finds itself first
    expect(page.locator("#query .box")).to_have_count(1)  # the located box on the upload
    page.wait_for_function(_ALL_LOADED.replace("IMAGES", "#results img"))


def test_upload_of_a_non_image_says_what_is_wrong(server, page, tmp_path) -> None:
    fake = tmp_path / "photo.jpg"
    fake.write_text("<html>not a photo</html>")
    page.goto(server + "/search")
    with page.expect_response(lambda r: r.url.endswith("/api/search?k=12&space=unsupervised")):
        page.set_input_files("#photo", str(fake))
    message = page.locator("#message")
    expect(message).to_contain_text("not an image")
    expect(message).to_have_class(re.compile(r"\berror\b"))


def test_a_stale_box_is_flagged_until_saved_again(server, page, database, indexed_catalog):
    """A box drawn on a photo's earlier bytes: the editor says it is stale; saving it
    confirms it for the photo as it is now, and the notice goes."""
    image_id = sorted(
        r["image_id"] for r in read_manifest(open_store(indexed_catalog.store_url)).to_pylist()
    )[-1]
    with AnnotationDatabase(f"sqlite:///{database}") as annotations:
        annotations.set_box(image_id, (2, 3, 40, 50), sha256="0" * 64)
    page.goto(f"{server}/boxes/{image_id}")
    expect(page.locator("#stale")).to_be_visible()
    expect(page.locator("#stale")).to_contain_text("Stale box")
    page.locator("#save").click()
    expect(page.locator("#message")).to_contain_text("Saved box 2, 3, 40, 50")
    expect(page.locator("#stale")).to_be_hidden()


def test_draw_a_box_and_it_is_stored(server, page, database) -> None:
    page.goto(server + "/boxes")  # redirects to the first image without a box
    editor = page.locator("#editor")
    image_id = editor.get_attribute("data-id")
    width, height = (
        int(editor.get_attribute("data-width")),
        int(editor.get_attribute("data-height")),
    )
    page.wait_for_function("() => document.getElementById('photo').naturalWidth > 0")
    # The stored box has arrived (drawing before it does is the user's choice, not a test's).
    expect(page.locator("#message")).to_have_text(re.compile("Annotated box|No box yet"))
    shown = page.locator("#photo").bounding_box()
    start = (shown["x"] + 0.2 * shown["width"], shown["y"] + 0.25 * shown["height"])
    end = (shown["x"] + 0.7 * shown["width"], shown["y"] + 0.8 * shown["height"])
    page.locator("#reset").click()
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move(*end, steps=8)
    page.mouse.up()
    expect(page.locator("#box")).to_be_visible()
    # Adjust: drag the bottom-right corner further out.
    corner = (shown["x"] + 0.9 * shown["width"], shown["y"] + 0.9 * shown["height"])
    page.mouse.move(*end)
    page.mouse.down()
    page.mouse.move(*corner, steps=5)
    page.mouse.up()
    page.locator("#save").click()
    expect(page.locator("#message")).to_contain_text("Saved box")
    with AnnotationDatabase(f"sqlite:///{database}") as annotations:
        record = annotations.get_box(image_id)
    assert record is not None and record.source == "web"
    expected = (0.2 * width, 0.25 * height, 0.9 * width, 0.9 * height)
    assert all(abs(got - want) <= 3 for got, want in zip(record.box, expected, strict=True)), (
        record.box,
        expected,
    )
    # The editor moves on: the next unannotated image is another one.
    following = page.locator("#next").get_attribute("href")
    assert following and image_id not in following
    page.goto(server + "/boxes")
    assert page.locator("#editor").get_attribute("data-id") != image_id


def test_pick_positive_and_negative_and_the_triplet_is_stored(server, page, database) -> None:
    page.goto(server + "/triplets")
    reference = page.locator("#reference").get_attribute("data-id")
    hits = page.locator("#hits .hit")
    expect(hits.nth(4)).to_be_visible()
    save = page.locator("#save")
    expect(save).to_be_disabled()
    positive, negative = hits.nth(0), hits.nth(4)
    positive.click()
    negative.click()
    expect(positive).to_have_class(re.compile(r"\bpositive\b"))
    expect(negative).to_have_class(re.compile(r"\bnegative\b"))
    expect(positive).to_have_css("border-top-color", "rgb(21, 101, 192)")  # blue
    expect(negative).to_have_css("border-top-color", "rgb(198, 40, 40)")  # red
    expect(save).to_be_enabled()
    ids = positive.get_attribute("data-id"), negative.get_attribute("data-id")
    page.screenshot(path=str(SHOTS / "triplet-picked.png"), full_page=True)
    save.click()
    expect(page.locator("#message")).to_contain_text("Saved triplet")
    with AnnotationDatabase(f"sqlite:///{database}") as annotations:
        stored = annotations.triplets()
    rows = stored[(stored["reference"] == reference)]
    assert [tuple(r) for r in rows[["positive", "negative"]].itertuples(index=False)] == [ids]


def test_status_page_shows_versions_and_counts(server, page, indexed_catalog) -> None:
    from tiefvision_core.storage.urls import open_store

    page.goto(server + "/status")
    live = open_store(indexed_catalog.store_url).read_pointer("indexes/unsupervised/CURRENT")
    assert live in page.content()
    expect(page.locator("#count-ok")).to_have_text("18")
