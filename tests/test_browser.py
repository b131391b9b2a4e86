"""The demo in a real browser: `uvicorn app:app` on a free port, headless Debian Chromium driven
by Playwright.  Uploads a photo and reads the grid of 3 models + their ensemble x 4 methods against POST
/api/caption; keyboard on the controls, examples keeping the settings, one clear message for a
bad file, the live webcam with Chromium's fake camera, the other tabs; at desktop and phone
widths (screenshots in the test's tmp dir, or in $CAPTION_SCREENSHOTS when set).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from bad_inputs import write_bad_inputs
from captioning.settings import METHODS
from demo.models import MODELS, VARIANTS
from fake_camera import write_y4m
from conftest import served_app, tracebacks_through_our_code
from demo.server import ROOT

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
PHOTO = ROOT / "demo" / "examples" / "chelsea_cat.jpg"
DESKTOP, PHONE = (1280, 900), (390, 844)
GRID_CELLS = len(MODELS) * len(METHODS)  # every model by every method: 16
TIMEOUT_MS = 60_000

if not Path(CHROMIUM).is_file() and not shutil.which(CHROMIUM):
    __import__("conftest").skip_unless_ci(  # under CI=true a missing Chromium fails (a collection error)
        f"no Chromium at {CHROMIUM} (apt-get install chromium, or set CHROMIUM)", allow_module_level=True)
from playwright.sync_api import sync_playwright  # noqa: E402  (requirements-dev.txt: never skipped)
import httpx  # noqa: E402


@pytest.fixture(scope="module")
def server(weights, tmp_path_factory):
    with served_app(weights[0], tmp_path_factory.mktemp("browser_app"), command="uvicorn") as served:
        yield served


@pytest.fixture(scope="module")
def playwright():
    with sync_playwright() as instance:  # one per module: Playwright's sync API allows only one at a time
        yield instance


@pytest.fixture(scope="module")
def browser(playwright):
    chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield chromium
    chromium.close()


@pytest.fixture
def screenshots(tmp_path) -> Path:
    folder = Path(os.environ.get("CAPTION_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def open_page(browser, server, size):
    page = browser.new_page(viewport={"width": size[0], "height": size[1]})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(server["url"] + "/")
    page.wait_for_selector("#photo input[type=file]", state="attached")
    return page


def grid_captions(page, selector: str = "#caption-grid") -> dict[tuple[str, str], str]:
    """{(model, method): caption} as the page shows them."""
    cells = page.locator(f"{selector} .cell")
    return {(c.get_attribute("data-model"), c.get_attribute("data-method")): c.locator(".caption").inner_text()
            for c in cells.all()}


def wait_for_grid(page, settings: str, selector: str = "#caption-grid") -> dict[tuple[str, str], str]:
    """Wait until the grid shows captions made with ``settings`` (e.g. "beam width 3"); return them."""
    page.wait_for_function(
        """([sel, text, cells]) => {
            const grid = document.querySelector(sel + ' .grid');
            return grid && grid.dataset.settings.includes(text) && grid.querySelectorAll('.cell').length === cells;
        }""", arg=[selector, settings, GRID_CELLS], timeout=TIMEOUT_MS)
    return grid_captions(page, selector)


def open_tab(page, name: str) -> None:
    """Click a tab; on a phone Gradio tucks the tabs that do not fit into a "More tabs" menu."""
    page.get_by_role("tablist").first.wait_for(state="visible")
    tab = page.get_by_role("tab", name=name, exact=True)
    if tab.count():
        tab.click()
    else:
        page.get_by_label("More tabs").click()
        page.locator(".overflow-dropdown button", has_text=name).click()


def upload(page, path: Path) -> None:
    page.set_input_files("#photo input[type=file]", str(path))


def api_captions(server, photo: Path, method: str, width: int = 3) -> dict[str, str]:
    answer = httpx.post(server["url"] + "/api/caption", timeout=60, data={"method": method, "beam_width": str(width)},
                        files={"image": (photo.name, photo.read_bytes(), "image/jpeg")}).json()
    return {v: answer[v] for v in MODELS}


def test_upload_shows_every_model_and_method_at_once(browser, server, weights, screenshots):
    expected = {(v, m): c for m in METHODS for v, c in api_captions(server, PHOTO, m).items()}
    for name, size in (("desktop", DESKTOP), ("phone", PHONE)):
        page = open_page(browser, server, size)
        upload(page, PHOTO)
        shown = wait_for_grid(page, "beam width 3")
        assert shown == expected
        if weights[1]:
            assert all(c.strip() for c in shown.values()), shown
            assert all("cat" in shown[(v, "guided")].split() for v in VARIANTS), shown
            page.wait_for_selector("#seen .bar")  # what the encoder sees
            assert "cat" in page.locator("#seen").inner_text().lower()
            assert "Familiarity" in page.locator("#seen").inner_text()
        # The captions are in view after the upload, without scrolling by hand.
        page.wait_for_timeout(800)  # the smooth scroll
        top = page.evaluate("document.querySelector('#caption-grid').getBoundingClientRect().top")
        assert -2 <= top < size[1] - 200, f"{name}: the captions start at {top}px"
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, f"{name}: page is {overflow}px wider than the window"
        page.screenshot(path=str(screenshots / f"caption_{name}.png"))
        page.close()


def test_details_show_ranked_nbest(browser, server):
    page = open_page(browser, server, DESKTOP)
    upload(page, PHOTO)
    wait_for_grid(page, "beam width 3")
    page.get_by_text("Word by word").click()
    table = page.locator("#details-learned table.nbest").first
    table.wait_for(state="visible")
    scores = [float(t) for t in table.locator("tr td:nth-child(3)").all_inner_texts()]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True), scores
    page.close()


def test_keyboard_on_the_controls_recaptions(browser, server):
    page = open_page(browser, server, DESKTOP)
    upload(page, PHOTO)
    wait_for_grid(page, "beam width 3")
    number = page.locator("#beam-width input[type=number]")
    number.fill("5")
    number.press("Enter")
    wait_for_grid(page, "beam width 5")
    page.locator("#beam-width input[type=range]").focus()
    page.keyboard.press("ArrowRight")
    wait_for_grid(page, "beam width 6")
    page.locator("#max-length input[type=range]").focus()
    page.keyboard.press("ArrowLeft")
    longest = int(page.locator("#max-length input[type=range]").get_attribute("max"))
    wait_for_grid(page, f"at most {longest - 1} words")
    page.close()


def test_example_click_keeps_the_settings(browser, server):
    page = open_page(browser, server, DESKTOP)
    number = page.locator("#beam-width input[type=number]")
    number.fill("4")
    number.press("Enter")
    page.locator("#examples button, #examples .gallery-item").nth(1).click()
    shown = wait_for_grid(page, "beam width 4")
    assert page.locator("#beam-width input[type=number]").input_value() == "4"
    assert len(shown) == GRID_CELLS
    page.close()


def test_bad_file_gives_one_clear_message_then_a_photo_works(browser, server, tmp_path, screenshots):
    cases = write_bad_inputs(tmp_path / "bad", photo=PHOTO)
    page = open_page(browser, server, DESKTOP)
    upload(page, cases["text_named.jpg"][0])
    message = page.locator("#caption-grid .grid-message.error")
    message.wait_for(state="visible")
    assert "not an image we can read" in message.inner_text()
    page.wait_for_timeout(500)
    badges = page.get_by_text("Error", exact=True).all()
    assert [b for b in badges if b.is_visible()] == [], "error badges on the outputs"
    page.screenshot(path=str(screenshots / "bad_file.png"))
    page.locator('#photo button[aria-label="Remove Image"]').first.click()
    upload(page, PHOTO)
    assert len(wait_for_grid(page, "beam width 3")) == GRID_CELLS
    page.close()


def test_live_webcam_captions_follow_the_camera(playwright, server, tmp_path, screenshots):
    """Chromium's fake camera plays a video of the cat, then the rocket: the live grid must update
    and change with the picture; "Caption this frame" keeps a frame on the Caption tab."""
    video = write_y4m([PHOTO, ROOT / "demo" / "examples" / "rocket.jpg"], tmp_path / "camera.y4m")
    args = CHROMIUM_ARGS + ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                            f"--use-file-for-fake-video-capture={video}"]
    chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=args)
    try:
        context = chromium.new_context(viewport={"width": DESKTOP[0], "height": DESKTOP[1]}, permissions=["camera"])
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(server["url"] + "/")
        open_tab(page, "Live")
        page.get_by_text("Click to Access Webcam").first.click()
        page.locator("#live").get_by_text("Record").first.click()
        seen, frames = set(), set()
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and (len(seen) < 2 or len(frames) < 4):
            if page.locator("#live-grid .grid").count():
                captions = grid_captions(page, "#live-grid")
                seen.add(tuple(sorted(captions.items())))
                frames.add(page.locator("#live-grid .timing").inner_text())
            page.wait_for_timeout(250)
        page.screenshot(path=str(screenshots / "live_webcam.png"))
        assert len(frames) >= 4, f"live updates seen: {frames}"
        assert len(seen) >= 2, "the captions did not change when the camera's picture did"
        page.locator("#live").get_by_text("Stop").first.click()
        page.wait_for_timeout(1500)  # let the last frame's captions arrive
        last = grid_captions(page, "#live-grid")
        page.get_by_role("button", name="Caption this frame").click()
        kept = wait_for_grid(page, "beam width 3")  # on the Caption tab, with the frame in the photo
        assert kept == last
        page.wait_for_function("document.querySelector('#photo img') !== null")
    finally:
        chromium.close()


def test_other_tabs_render(browser, server, screenshots):
    for name, size in (("desktop", DESKTOP), ("phone", PHONE)):
        page = open_page(browser, server, size)
        open_tab(page, "Embeddings")
        page.wait_for_selector("#projection-learned", state="visible")
        word = page.locator("#word textarea, #word input").first
        word.fill("man")
        word.press("Enter")
        table = page.locator("#neighbour-table")
        page.get_by_text("nearest to man").first.wait_for(state="visible")
        assert table.locator("th").all_inner_texts() == ["Learned", "FastText", "Word2Vec"]
        # Side by side on a phone too: the table fits the window.
        assert page.evaluate("document.querySelector('#neighbour-table').getBoundingClientRect().right") <= size[0]
        page.screenshot(path=str(screenshots / f"embeddings_{name}.png"), full_page=True)
        open_tab(page, "About")
        page.wait_for_selector("#results", state="visible")
        page.wait_for_selector("#loss-curves", state="visible")
        page.screenshot(path=str(screenshots / f"about_{name}.png"), full_page=True)
        page.close()


def test_unknown_word_is_shown_as_text_not_html(browser, server):
    """The Embeddings tab's warning repeats what was typed: as text, never as markup."""
    page = open_page(browser, server, DESKTOP)
    open_tab(page, "Embeddings")
    word = page.locator("#word textarea, #word input").first
    typed = '<b id="injected">bold</b>zz'
    word.fill(typed)
    word.press("Enter")
    page.get_by_text("is in none of the vocabularies").first.wait_for(state="visible")
    assert page.locator("#injected").count() == 0
    assert page.get_by_text(typed, exact=False).count() >= 1
    page.close()


def test_no_traceback_from_our_code_in_server_log(server):
    assert tracebacks_through_our_code(server["log"].read_text(errors="replace")) == []
