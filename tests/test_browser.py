"""The built HTML in a headless browser: figures, widgets, no errors.

Every page of the smoke build (the session's one build, see conftest.py) is
opened through file:// in headless Chromium with networking features off.
The DOM after the page's scripts ran is checked, and a screenshot of each
page is saved into _build/screenshots/ for a person to look at.
"""

from __future__ import annotations

import html
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCREENSHOTS = REPO / "_build" / "screenshots"
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
BUDGET_MS = 8000  # virtual time for the widget manager to render
WINDOW = "1200,6000"  # tall enough for a page's figures and widgets
ERRORS = ("Traceback (most recent call last)", "PapermillExecutionError",
          'class="output traceback"', "Error displaying widget",
          "Loading widget")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def browser():
    found = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    if found is None:
        pytest.skip("no headless Chromium found (apt-get install chromium); "
                    "the browser test of the built HTML is skipped")
    return found


def _chromium(browser, url, profile_dir, *extra):
    command = ["timeout", "90", browser, "--headless", "--no-sandbox",
               "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run",
               "--hide-scrollbars", f"--user-data-dir={profile_dir}",
               f"--virtual-time-budget={BUDGET_MS}", f"--window-size={WINDOW}",
               *extra, url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"chromium failed on {url}:\n{done.stderr[-2000:]}"
    return done.stdout


@pytest.fixture(scope="session")
def rendered(smoke_book, browser, tmp_path_factory):
    """Per built page: its file, its DOM after scripts ran, its screenshot."""
    pages = sorted((smoke_book / "_build" / "html" / "pages").glob("*.html"))
    assert pages, "the smoke build made no HTML pages"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    result = {}
    for page in pages:
        profile_dir = tmp_path_factory.mktemp("chromium")
        url = page.as_uri()
        dom = _chromium(browser, url, profile_dir, "--dump-dom")
        shot = SCREENSHOTS / f"{page.stem}.png"
        _chromium(browser, url, profile_dir, f"--screenshot={shot}")
        result[page.stem] = (page, dom, shot)
    return result


def test_every_source_page_was_built(rendered):
    sources = {p.stem for p in (REPO / "notebooks").glob("[0-9][0-9]_*.py")}
    assert sources <= set(rendered)


def test_no_page_shows_an_error(rendered):
    for name, (_, dom, _) in rendered.items():
        shown = [e for e in ERRORS if e in dom]
        assert not shown, f"page {name} shows {shown}"


def test_figures_are_there_with_their_images(rendered):
    for name, (page, dom, _) in rendered.items():
        source = REPO / "notebooks" / f"{name}.py"
        expected = source.read_text().count("{glue:figure}")
        figures = re.findall(r"<figure\b.*?</figure>", dom, flags=re.S)
        assert len(figures) >= expected, f"page {name}: {len(figures)} figures"
        for figure in figures:
            src = re.search(r'<img[^>]*src="([^"]+)"', figure)
            assert src, f"page {name}: a figure without an image"
            target = (page.parent / html.unescape(src.group(1))).resolve()
            assert target.is_file() and target.stat().st_size > 1000, target
            assert re.search(r"<figcaption", figure), f"page {name}: no caption"


def test_widgets_rendered_offline(rendered):
    pages_with_widgets = 0
    for name, (page, dom, _) in rendered.items():
        built = page.read_text()
        views = built.count("application/vnd.jupyter.widget-view+json")
        if not views:
            continue
        pages_with_widgets += 1
        # Widgets need no network: no remote script but MathJax, which
        # renders the pages' formulas and is not part of the widgets.
        remote = re.findall(r'<script[^>]*src="(https?://[^"]+)"', built)
        assert not [s for s in remote if "/mathjax" not in s], (name, remote)
        # the manager loaded once: twice, it renders every widget twice
        scripts = re.findall(r'<script src="[^"]*/(\w[\w.-]*\.js)\?', built)
        assert scripts.count("embed-amd.js") == 1, f"page {name}: {scripts}"
        assert "libembed-amd.js" not in scripts and "embed.js" not in scripts
        plays = re.findall(r'class="[^"]*\bwidget-play\b', dom)
        assert len(plays) == views, f"page {name}: {len(plays)} of {views} views"
        assert "widget-slider" in dom, f"page {name}: no slider rendered"
        images = re.findall(r'<img[^>]*class="[^"]*widget-image[^"]*"[^>]*>', dom)
        assert images, f"page {name}: no image widget rendered"
        assert all('src="blob:' in i or 'src="data:' in i for i in images), name
    assert pages_with_widgets, "no page of the book has a widget"


def test_scoreboard_lists_every_claim(rendered):
    intro = next(dom for name, (_, dom, _) in rendered.items()
                 if name.startswith("00_"))
    table = re.search(r'<table class="table">.*?</table>', intro, flags=re.S)
    assert table, "the introduction shows no scoreboard"
    for claim in ("C1", "C2", "C3", "C4", "C5", "C6"):
        assert f"<td>{claim}</td>" in table.group(0)
    assert 'href="01_large_batch_setup.html"' in table.group(0)
    assert re.search(r"<td>(held|not held) \((smoke|cpu|paper)\)</td>", table.group(0))


def test_screenshots_were_saved(rendered):
    for name, (_, _, shot) in rendered.items():
        assert shot.is_file() and shot.stat().st_size > 10_000, name
