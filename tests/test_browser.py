"""The demo in a real browser (issue 3.8): `uvicorn app:app` on a free port, headless Debian
Chromium driven by Playwright.  Uploads a photo, switches to beam search, reads the three
captions from the page and checks them against POST /api/caption; also a bad file, an
example, and the layout at desktop and phone widths (screenshots in the test's tmp dir, or
in $CAPTION_SCREENSHOTS when set).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from bad_inputs import write_bad_inputs
from demo.models import VARIANTS
from conftest import served_app, tracebacks_through_our_code
from demo.server import ROOT

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
PHOTO = ROOT / "demo" / "examples" / "chelsea_cat.jpg"
DESKTOP, PHONE = (1280, 900), (390, 844)
TIMEOUT_MS = 60_000

if not Path(CHROMIUM).is_file() and not shutil.which(CHROMIUM):
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set CHROMIUM)", allow_module_level=True)
sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
httpx = pytest.importorskip("httpx")


@pytest.fixture(scope="module")
def server(weights, tmp_path_factory):
    with served_app(weights[0], tmp_path_factory.mktemp("browser_app"), command="uvicorn") as served:
        yield served


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
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


def wait_for_captions(page, summary_contains: str) -> list[str]:
    """Wait until the three models answered with the given settings; return their captions."""
    page.wait_for_function(
        """([text, names]) => {
            const summary = document.querySelector('#summary');
            return summary && summary.innerText.includes(text)
                && names.every(n => (document.querySelector(`#timing-${n}`)?.innerText || '').includes('decoded'));
        }""", arg=[summary_contains, list(VARIANTS)], timeout=TIMEOUT_MS)
    return [page.input_value(f"#caption-{v} textarea") for v in VARIANTS]


def upload(page, path: Path) -> None:
    page.set_input_files("#photo input[type=file]", str(path))


def test_upload_switch_to_beam_and_read_captions(browser, server, weights, screenshots):
    for name, size in (("desktop", DESKTOP), ("phone", PHONE)):
        page = open_page(browser, server, size)
        upload(page, PHOTO)
        greedy = wait_for_captions(page, "greedy search")
        page.get_by_role("radio", name="Beam search").check()
        beam = wait_for_captions(page, "beam search, width 3")
        page.wait_for_selector("#nbest-learned", state="visible")
        page.screenshot(path=str(screenshots / f"caption_{name}.png"), full_page=True)

        expected = httpx.post(server["url"] + "/api/caption", timeout=60,
                              files={"image": (PHOTO.name, PHOTO.read_bytes(), "image/jpeg")},
                              data={"method": "beam", "beam_width": "3"}).json()
        assert beam == [expected[v] for v in VARIANTS]
        if weights[1]:
            assert all(c.strip() for c in greedy + beam), (greedy, beam)
        # The layout fits the window: nothing pushes the page sideways.
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, f"{name}: page is {overflow}px wider than the window"
        page.close()


def test_bad_file_shows_a_message_then_a_photo_works(browser, server, tmp_path, screenshots):
    cases = write_bad_inputs(tmp_path / "bad", photo=PHOTO)
    page = open_page(browser, server, DESKTOP)
    upload(page, cases["text_named.jpg"][0])
    toast = page.get_by_text("not an image we can read").first
    toast.wait_for(state="visible")
    page.screenshot(path=str(screenshots / "bad_file.png"))
    page.locator('#photo button[aria-label="Remove Image"]').first.click()
    upload(page, PHOTO)
    captions = wait_for_captions(page, "greedy search")
    assert len(captions) == 3
    page.close()


def test_example_click_captions_and_is_cached_lazily(browser, server):
    assert not list(server["examples_cache"].rglob("log.csv")), "examples were cached at start-up"
    page = open_page(browser, server, DESKTOP)
    page.locator("#examples button, #examples .gallery-item").first.click()
    wait_for_captions(page, "beam search, width 3")  # examples are shown with beam search
    page.wait_for_selector("#nbest-learned", state="visible")
    page.wait_for_function("document.querySelector('#photo img') !== null")
    page.close()
    assert list(server["examples_cache"].rglob("log.csv")), "the example's outputs were not cached"


def test_other_tabs_render(browser, server, screenshots):
    for name, size in (("desktop", DESKTOP), ("phone", PHONE)):
        page = open_page(browser, server, size)
        page.get_by_role("tab", name="Embeddings").click()
        page.wait_for_selector("#projection-learned", state="visible")
        word = page.locator("#word textarea, #word input").first
        word.fill("man")
        word.press("Enter")
        page.get_by_text("nearest to 'man'").first.wait_for(state="visible")
        page.screenshot(path=str(screenshots / f"embeddings_{name}.png"), full_page=True)
        page.get_by_role("tab", name="About").click()
        page.wait_for_selector("#results", state="visible")
        page.wait_for_selector("#loss-curves", state="visible")
        page.screenshot(path=str(screenshots / f"about_{name}.png"), full_page=True)
        page.close()


def test_no_traceback_from_our_code_in_server_log(server):
    assert tracebacks_through_our_code(server["log"].read_text(errors="replace")) == []
