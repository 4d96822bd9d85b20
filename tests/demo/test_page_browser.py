"""The demo page in headless Chromium (Debian's package, driven by Playwright): upload pictures
the test makes, turned 0/90/180/270 degrees clockwise, and read the confidence bars."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, FilePayload, Page, expect, sync_playwright

from .conftest import DemoServer
from .pictures import encode, page, turned_clockwise

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
WAIT_MS = 30_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.is_file() and shutil.which("chromium") is None:
        pytest.fail("Debian's chromium is needed for the browser test: apt-get install chromium "
                    "(bash .ci/system-packages.sh does it)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM if CHROMIUM.is_file() else shutil.which("chromium")))
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def demo_page(browser: Browser, demo_server: DemoServer) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda err: errors.append(str(err)))
    pg.goto(demo_server.url + "/")
    pg.wait_for_selector("body[data-ready=true]", timeout=WAIT_MS)
    yield pg
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def upload(pg: Page, name: str, mime: str, data: bytes) -> None:
    pg.set_input_files("#file", files=[FilePayload(name=name, mimeType=mime, buffer=data)])


def bars(pg: Page) -> list[tuple[str, float, float]]:
    """(label, score, drawn percent) of each bar, top to bottom; the percent is measured on
    screen: the filled part's width over the track's."""
    pg.wait_for_timeout(600)  # the bars grow with a 0.4 s transition
    rows = pg.locator("#bars .bar")
    out = []
    for i in range(rows.count()):
        row = rows.nth(i)
        track = row.locator(".bar-track").bounding_box()
        fill = row.locator(".bar-fill").bounding_box()
        assert track is not None and fill is not None and track["width"] > 50, (track, fill)
        out.append((
            row.get_attribute("data-label") or "",
            float(row.get_attribute("data-score") or "nan"),
            100 * fill["width"] / track["width"],
        ))
    return out


def test_turned_pages_get_the_right_top_bar(demo_page: Page, tmp_path: Path) -> None:
    pg = demo_page
    for degrees in (0, 90, 180, 270):
        upload(pg, f"page-{degrees}.jpg", "image/jpeg", encode(turned_clockwise(page(degrees // 90), degrees)))
        expect(pg.locator("#result")).to_be_visible(timeout=WAIT_MS)
        shown = bars(pg)
        assert [label for label, _, _ in shown][0] == str(degrees), shown
        assert sorted(label for label, _, _ in shown) == sorted(["0", "90", "180", "270"])
        assert [s for _, s, _ in shown] == sorted((s for _, s, _ in shown), reverse=True), shown
        for _, score, percent in shown:
            assert percent == pytest.approx(score * 100, abs=1.5), shown  # the track's border, rounding
        assert shown[0][2] > 50, shown
        expect(pg.locator("#bars .bar.top")).to_have_count(1)
        expect(pg.locator("#bars .bar.top .bar-score")).to_have_text(f"{shown[0][1] * 100:.1f}%")
        verdict = "Upright" if degrees == 0 else f"Turned {degrees}° clockwise"
        expect(pg.locator("#verdict")).to_have_text(verdict)
        expect(pg.locator("#message")).to_be_hidden()
        # The preview shows the uploaded picture itself.
        expect(pg.locator("#preview")).to_have_js_property("complete", True)
        assert pg.eval_on_selector("#preview", "img => img.naturalWidth") > 0
        shot = tmp_path / f"classify-{degrees}.png"
        pg.screenshot(path=str(shot), full_page=True)
        print(f"screenshot: {shot}")
        assert shot.stat().st_size > 10_000


def test_not_an_image_shows_a_clear_message(demo_page: Page, tmp_path: Path) -> None:
    upload(demo_page, "notes.txt", "text/plain", b"shopping list: bread, milk, apples\n")
    message = demo_page.locator("#message")
    expect(message).to_be_visible(timeout=WAIT_MS)
    expect(message).to_have_class("message error")
    expect(message).to_contain_text("Not an image")
    expect(message).to_contain_text("not a JPEG or PNG")
    expect(demo_page.locator("#result")).to_be_hidden()
    shot = tmp_path / "classify-not-an-image.png"
    demo_page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot: {shot}")


def test_too_large_upload_shows_a_clear_message(demo_page: Page) -> None:
    big = encode(page(0)) + bytes(5 * 1024 * 1024)
    upload(demo_page, "huge.jpg", "image/jpeg", big)
    message = demo_page.locator("#message")
    expect(message).to_be_visible(timeout=WAIT_MS)
    expect(message).to_have_class("message error")
    expect(message).to_contain_text("Too large")
    expect(message).to_contain_text("the limit is 4.0 MiB")
    expect(demo_page.locator("#result")).to_be_hidden()


def test_a_good_upload_after_an_error_clears_the_message(demo_page: Page) -> None:
    upload(demo_page, "notes.txt", "text/plain", b"not a picture")
    expect(demo_page.locator("#message")).to_be_visible(timeout=WAIT_MS)
    upload(demo_page, "page.png", "image/png", encode(turned_clockwise(page(1), 90), "PNG"))
    expect(demo_page.locator("#result")).to_be_visible(timeout=WAIT_MS)
    expect(demo_page.locator("#message")).to_be_hidden()
    expect(demo_page.locator("#bars .bar.top")).to_have_attribute("data-label", "90")
