"""The README's screenshots, taken by headless Chromium from a running app.

    python -m tools.screenshots --start              # start `python app.py`, shoot, stop
    python -m tools.screenshots --url http://127.0.0.1:7860 --out docs

Writes, for the cat example: ``screenshot.png`` (desktop, 1280 px) and ``screenshot_phone.png``
(390 x 844, the view right after the upload), and ``embeddings.png``. Needs Debian's chromium and
the playwright package (never ``playwright install``).
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

from demo.server import ROOT, running_app

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu"]
PHOTO = ROOT / "demo" / "examples" / "chelsea_cat.jpg"
TIMEOUT_MS = 60_000


def shoot(url: str, out: Path) -> list[Path]:
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    written = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for name, size, full in (("screenshot.png", (1280, 900), True), ("screenshot_phone.png", (390, 844), False)):
            page = browser.new_page(viewport={"width": size[0], "height": size[1]})
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(url.rstrip("/") + "/")
            page.set_input_files("#photo input[type=file]", str(PHOTO))
            page.wait_for_selector("#caption-grid .cell[data-method=guided]")
            page.wait_for_selector("#seen .bar")
            page.wait_for_timeout(1200)  # the phone's scroll to the captions
            page.screenshot(path=str(out / name), full_page=full)
            written.append(out / name)
            page.close()
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(url.rstrip("/") + "/")
        page.get_by_role("tab", name="Embeddings").click()
        word = page.locator("#word textarea, #word input").first
        word.fill("cat")
        word.press("Enter")
        page.get_by_text("nearest to cat").first.wait_for(state="visible")
        page.wait_for_timeout(1500)
        page.screenshot(path=str(out / "embeddings.png"), full_page=True)
        written.append(out / "embeddings.png")
        browser.close()
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:7860", help="a running app (default: %(default)s)")
    parser.add_argument("--start", action="store_true", help="start `python app.py` on a free loopback port")
    parser.add_argument("--out", default=str(ROOT / "docs"), help="folder for the PNGs (default: docs/)")
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(running_app()) if args.start else args.url
        for path in shoot(url, Path(args.out)):
            print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
