"""Open the built book in headless Chromium with networking off.

Used by `tests/test_book_offline.py` (does every page typeset its math and show its figures
with no network?) and by `make screenshots` (`python tests/browser.py`), which writes a PNG of
every page to `_build/screenshots/`.

Networking is off in the browser itself: every request that is not a local file goes to a
proxy that does not exist (`127.0.0.1:9`), so a page that needs the internet for a script, a
font or a style sheet fails to get it, as it would on a machine with no network.
"""

import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
NO_NETWORK = ["--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>"]
# Virtual time lets MathJax finish typesetting before the DOM is read or the page is drawn.
SETTLE = "--virtual-time-budget=15000"


def chromium() -> str | None:
    """The Chromium executable on PATH, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return None


def _run(args: list[str], timeout: int = 120) -> str:
    browser = chromium()
    if browser is None:
        raise RuntimeError("no chromium on PATH")
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           "--mute-audio", "--no-first-run", *NO_NETWORK, SETTLE, *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True)
    return done.stdout


def book_pages() -> list[Path]:
    """Every page of the table of contents, in the built HTML (index pages excluded)."""
    skip = {"genindex.html", "search.html"}
    return sorted(p for p in HTML.rglob("*.html")
                  if "_static" not in p.parts and "_sources" not in p.parts and p.name not in skip)


def dump_dom(page: Path) -> str:
    """The page's DOM after its scripts (MathJax) ran, loaded from disk with no network."""
    return _run(["--dump-dom", page.as_uri()])


def screenshot(page: Path, png: Path, width: int = 1280, height: int = 16000) -> None:
    """A PNG of the whole page: a window taller than the page, then the empty space trimmed.

    The window's bottom holds the theme's fixed footer; the page ends where a white band of
    at least 400 pixels begins.
    """
    png.parent.mkdir(parents=True, exist_ok=True)
    _run([f"--window-size={width},{height}", f"--screenshot={png}", page.as_uri()])
    import numpy as np
    from PIL import Image  # Pillow comes with matplotlib

    with Image.open(png) as img:
        img.load()
    gray = np.asarray(img.convert("L")) < 250
    gray = gray[:, ~(gray.mean(axis=0) > 0.9)]  # drop full-height lines (the sidebar's border)
    busy = gray.any(axis=1)  # rows holding anything but white
    rows = np.flatnonzero(busy)
    gaps = np.flatnonzero(np.diff(rows) > 400)
    if gaps.size:
        img.crop((0, 0, width, int(rows[gaps[0]]) + 40)).save(png)


class _Page(HTMLParser):
    """Collects a page's math elements, images, external resources and visible text."""

    def __init__(self):
        super().__init__()
        self.math = 0          # elements with class "math" (what MathJax must typeset)
        self.typeset = 0       # mjx-container elements (what MathJax produced)
        self.images = []       # src of every <img>
        self.external = []     # resources loaded from the network: script, style sheet, image, font
        self.text = []         # text outside code, scripts and styles
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "math" in (a.get("class") or "").split():
            self.math += 1
        if tag == "mjx-container":
            self.typeset += 1
        if tag == "img":
            self.images.append(a.get("src", ""))
        url = a.get("src") if tag in ("script", "img", "iframe") else None
        if tag == "link" and set((a.get("rel") or "").split()) & {"stylesheet", "preload", "icon"}:
            url = a.get("href")
        if url and re.match(r"(https?:)?//", url):
            self.external.append(f"<{tag}> {url}")
        if tag in ("pre", "code", "script", "style", "textarea"):
            self._skip += 1

    def handle_endtag(self, tag):
        if tag in ("pre", "code", "script", "style", "textarea") and self._skip:
            self._skip -= 1

    def handle_data(self, data):
        if not self._skip:
            self.text.append(data)


def parse(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    return page


def main() -> None:
    """`make screenshots`: one PNG per page of the built book, opened with no network."""
    if not HTML.is_dir():
        sys.exit(f"{HTML} does not exist: build the book first (make book)")
    out = ROOT / "_build" / "screenshots"
    for page in book_pages():
        png = out / page.relative_to(HTML).with_suffix(".png")
        screenshot(page, png)
        print(png.relative_to(ROOT))


if __name__ == "__main__":
    main()
