"""The exported website, checked in a real browser (headless Chromium via chromedriver).

For every page: each figure of the notebook is present and decoded, each bertviz view drew
its SVG, each Mermaid diagram of its markdown rendered (an SVG image, no Mermaid error
box), saved widgets rendered, MathJax typeset, no console errors, and no request left
the machine. A screenshot of each page is saved under ``site/screenshots/``.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them). Without
them the tests skip locally, but fail when ``COURSE_REQUIRE_BROWSER=1`` (CI sets it).
"""

from __future__ import annotations

import importlib.util
import re
import sys
import time
from pathlib import Path

import nbformat
import pytest

from browser import console_errors, outside_requests, start_chromium
from conftest import NOTEBOOKS, REPO

sys.path.insert(0, str(REPO / "tools"))
from check_mermaid import diagrams_in  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.browser]

SITE = REPO / "site"
NOTEBOOK_PATHS = sorted(p for p in NOTEBOOKS.glob("[0-9][0-9]*_*.ipynb") if ".FAILED" not in p.name)
RENDER_TIMEOUT_S = 60


def _load_builder():
    spec = importlib.util.spec_from_file_location("build_site", REPO / "tools/build_site.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def site() -> Path:
    """Build the site once per session (what `task html` does)."""
    _load_builder().build(SITE)
    return SITE


@pytest.fixture(scope="session")
def browser():
    driver = start_chromium(RENDER_TIMEOUT_S)
    yield driver
    driver.quit()


def expected_content(path: Path) -> dict[str, int]:
    """What a page must show, counted from its notebook's outputs."""
    nb = nbformat.read(path, as_version=4)
    images = bertviz = widget_views = 0
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            images += "image/png" in data
            html = data.get("text/html", "")
            html = "".join(html) if isinstance(html, list) else html
            bertviz += len(re.findall(r'<div id="bertviz-', html))
            widget_views += "application/vnd.jupyter.widget-view+json" in data
    has_state = bool(nb.metadata.get("widgets"))
    math = any(c.cell_type == "markdown" and "$" in c.source for c in nb.cells)
    return {"images": images, "bertviz": bertviz, "widgets": widget_views if has_state else 0,
            "math": int(math), "diagrams": len(diagrams_in(path))}


RENDER_PROBE = """
const imgs = [...document.querySelectorAll('.jp-OutputArea-output img')];
const views = [...document.querySelectorAll('div[id^="bertviz-"]')];
return {
  images: imgs.length,
  decoded: imgs.filter(i => i.complete && i.naturalWidth > 0).length,
  bertviz: views.length,
  bertvizDrawn: views.filter(v => v.querySelectorAll('svg *').length > 10).length,
  widgets: document.querySelectorAll('.jupyter-widgets, .widget-container, .widget-box').length,
  math: document.querySelectorAll('.MathJax, .MathJax_CHTML, mjx-container').length,
  diagrams: document.querySelectorAll('.jp-Mermaid').length,
  diagramsDrawn: document.querySelectorAll(
    '.jp-RenderedMermaid:not(.jp-mod-warning) figure img[src^="data:image/svg+xml"]').length,
  diagramErrors: [...document.querySelectorAll('.jp-Mermaid.jp-mod-warning')]
    .map(e => e.innerText.slice(0, 300)),
  ready: document.readyState,
};
"""


def render(driver, page: Path, expected: dict[str, int]) -> dict:
    """Open ``page`` and poll until everything expected has rendered (or time runs out)."""
    driver.get_log("performance")  # drop entries from earlier pages
    driver.get_log("browser")
    driver.get(page.as_uri())
    deadline = time.monotonic() + RENDER_TIMEOUT_S
    while True:
        state = driver.execute_script(RENDER_PROBE)
        done = (
            state["ready"] == "complete"
            and state["decoded"] >= expected["images"]
            and state["bertvizDrawn"] >= expected["bertviz"]
            and state["diagramsDrawn"] + len(state["diagramErrors"]) >= expected["diagrams"]
            and (state["widgets"] > 0 or not expected["widgets"])
            and (state["math"] > 0 or not expected["math"])
        )
        if done or time.monotonic() > deadline:
            return state
        time.sleep(0.25)


def test_index_links_every_notebook(site, browser):
    browser.get((site / "index.html").as_uri())
    links = browser.execute_script("return [...document.querySelectorAll('ol a')].map(a => a.getAttribute('href'))")
    assert links == [p.stem + ".html" for p in NOTEBOOK_PATHS]
    for link in links:
        assert (site / link).is_file(), link
    shots = site / "screenshots"
    shots.mkdir(exist_ok=True)
    browser.save_screenshot(str(shots / "index.png"))


@pytest.mark.parametrize("notebook", NOTEBOOK_PATHS, ids=lambda p: p.stem)
def test_page_renders_offline(site, browser, notebook):
    page = site / f"{notebook.stem}.html"
    assert page.is_file(), f"{page} was not exported"
    expected = expected_content(notebook)
    state = render(browser, page, expected)

    shots = site / "screenshots"
    shots.mkdir(exist_ok=True)
    browser.save_screenshot(str(shots / f"{notebook.stem}.png"))

    errors = console_errors(browser)
    requests = outside_requests(browser.get_log("performance"))
    assert not requests, f"requests left the machine: {requests[:5]}"
    assert not errors, f"console errors: {errors[:5]}"
    assert state["images"] >= expected["images"], state
    assert state["decoded"] >= expected["images"], f"undecoded figures: {state}"
    assert state["bertvizDrawn"] >= expected["bertviz"], f"bertviz views without SVG: {state}"
    assert not state["diagramErrors"], f"Mermaid could not render: {state['diagramErrors']}"
    assert state["diagrams"] == state["diagramsDrawn"] == expected["diagrams"], (
        f"{expected['diagrams']} mermaid block(s) in the notebook, {state['diagrams']} on the "
        f"page, {state['diagramsDrawn']} drawn")
    if expected["widgets"]:
        assert state["widgets"] > 0, f"saved widget state did not render: {state}"
    if expected["math"]:
        assert state["math"] > 0, f"MathJax did not typeset: {state}"
