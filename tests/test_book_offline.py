"""The built book, opened from disk in headless Chromium with networking off.

Every page must typeset its math (MathJax served from `_static`, no CDN), keep no raw TeX
delimiters in its text, load nothing from the network, and show every figure from a local
image file. Run after `make book` (`.ci/run` does); skipped when the book is not built or
Chromium is not installed.
"""

import re
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

import browser

pytestmark = [
    pytest.mark.skipif(not browser.HTML.is_dir(), reason="book not built: run `make book` first"),
    pytest.mark.skipif(browser.chromium() is None,
                       reason="chromium not installed (apt-get install chromium)"),
]

PAGES = browser.book_pages() if browser.HTML.is_dir() else []


def _name(page: Path) -> str:
    return str(page.relative_to(browser.HTML))


def test_book_has_its_pages():
    names = {_name(p) for p in PAGES}
    assert "intro.html" in names and "bibliography.html" in names
    assert sum(n.startswith("chapters/") for n in names) >= 10


def test_static_files_need_no_network():
    """No style sheet or script of the theme pulls fonts or code from the internet."""
    offenders = []
    for f in (browser.HTML / "_static").rglob("*.css"):
        for url in re.findall(r"url\(\s*['\"]?((?:https?:)?//[^'\")]+)", f.read_text(errors="ignore")):
            offenders.append(f"{f.name}: {url}")
        offenders += [f"{f.name}: @import {u}" for u in
                      re.findall(r"@import\s+(?:url\()?['\"]?(https?://[^'\")]+)", f.read_text(errors="ignore"))]
    assert not offenders
    assert (browser.HTML / "_static" / "mathjax" / "tex-chtml.js").is_file()


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_page_renders_offline(page):
    static = browser.parse(page.read_text(encoding="utf-8"))
    assert not static.external, f"loads from the network: {static.external}"
    dom = browser.parse(browser.dump_dom(page))

    # Math: every math element typeset by MathJax, no TeX delimiters left in the text.
    assert dom.typeset >= static.math, f"{static.math} math elements, {dom.typeset} typeset"
    text = "".join(dom.text)
    for delimiter in ("\\(", "\\)", "\\[", "\\]"):
        assert delimiter not in text, f"raw TeX {delimiter!r} left in the page"

    # Figures: every image is a local file that decodes to a picture.
    from PIL import Image

    for src in dom.images:
        url = urlparse(src)
        assert url.scheme in ("", "file"), f"image from the network: {src}"
        path = (page.parent / unquote(url.path)).resolve() if not url.scheme else Path(unquote(url.path))
        assert path.is_file(), f"missing image {src}"
        if path.suffix.lower() == ".svg":
            assert "<svg" in path.read_text(errors="ignore")[:2000], f"not an SVG image: {src}"
        else:
            with Image.open(path) as img:
                assert img.width > 0 and img.height > 0, src
                img.verify()
