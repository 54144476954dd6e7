"""JupyterLab as a learner uses it: a real server, headless Chromium, cells run from the UI.

For notebooks 03, 04, 07 and 11 (copied into a temporary directory, so JupyterLab's
autosave never touches the committed files) the test starts ``jupyter lab`` with the
course's settings (``tools/jupyter/``) on a free loopback port, opens the notebook, runs
every cell through the *Run → Run All Cells* menu, and asserts from the live DOM:

- every code cell finished (an execution count, no ``[*]``) and none shows a traceback;
- in 04, the bertviz head and model views drew their SVG;
- moving the first slider of the notebook's interactive widget re-draws its figure;
- no console error, no request left the machine, no "get notified about Jupyter news?";
- the notebook with the most Mermaid diagrams shows them all drawn by JupyterLab's own
  (bundled, offline) Mermaid, none with an error;
- 04 again with the dark theme: the figures are opaque (a light figure background on a
  dark page, so they stay legible).

Screenshots go to ``site/screenshots/lab-*.png`` beside the website's.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from browser import console_errors, outside_requests, start_chromium
from conftest import NOTEBOOKS, REPO

pytestmark = [pytest.mark.slow, pytest.mark.browser]

LAB_CONFIG = REPO / "tools" / "jupyter" / "jupyter_lab_config.py"
SHOTS = REPO / "site" / "screenshots"
TOKEN = "course-lab-test"
RUN_TIMEOUT_S = 900
NEWS_PROMPT = "official Jupyter news"
WIDGET_NOTEBOOKS = [
    "03_positional_encoding", "04_attention_from_scratch", "07_forward_pass",
    "11_attention_analysis",
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Lab:
    """A JupyterLab server on a temporary copy of some notebooks."""

    def __init__(self, root: Path, theme: str | None = None) -> None:
        self.root, self.port = root, _free_port()
        settings = root / ".lab-user-settings"
        # Render every cell (JupyterLab 4 windowing would leave off-screen cells out of the
        # DOM), and pick the theme the way a learner's settings editor would.
        tracker = settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
        tracker.parent.mkdir(parents=True, exist_ok=True)
        tracker.write_text(json.dumps({"windowingMode": "none"}))
        if theme:
            themes = settings / "@jupyterlab" / "apputils-extension" / "themes.jupyterlab-settings"
            themes.parent.mkdir(parents=True, exist_ok=True)
            themes.write_text(json.dumps({"theme": theme}))
        env = dict(os.environ)
        env.update({
            "JUPYTERLAB_SETTINGS_DIR": str(settings),
            "JUPYTERLAB_WORKSPACES_DIR": str(root / ".lab-workspaces"),
            "JUPYTER_RUNTIME_DIR": str(root / ".jupyter-runtime"),
            "COURSE_FILL_SOLUTIONS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2", "COURSE_NUM_THREADS": "2",
            "PYTHONHASHSEED": "0", "TOKENIZERS_PARALLELISM": "false",
        })
        self.log = open(root / "lab.log", "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", f"--config={LAB_CONFIG}", "--no-browser",
             "--ServerApp.open_browser=False", f"--ServerApp.port={self.port}",
             "--ServerApp.port_retries=0", "--ServerApp.ip=127.0.0.1",
             f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={root}",
             *(["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else [])],
            cwd=root, env=env, stdout=self.log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if self.process.poll() is not None:
                    break
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"JupyterLab did not start: {(root / 'lab.log').read_text()[-2000:]}")

    def url(self, notebook: str) -> str:
        # A workspace of its own, reset: only this notebook open, nothing restored.
        return (f"http://127.0.0.1:{self.port}/lab/workspaces/{notebook[:2]}/tree/"
                f"{notebook}.ipynb?reset&token={TOKEN}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


@pytest.fixture(scope="module")
def browser():
    driver = start_chromium(60, window="1400,1000")
    yield driver
    driver.quit()


def _copy_notebooks(root: Path, names: list[str]) -> None:
    """Copies without outputs or execution counts: everything the test sees is live."""
    for name in names:
        nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = [], None
        nb.metadata.pop("widgets", None)
        nbformat.write(nb, root / f"{name}.ipynb")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    root = tmp_path_factory.mktemp("lab")
    _copy_notebooks(root, WIDGET_NOTEBOOKS)
    server = Lab(root)
    yield server
    server.stop()


CELL_STATE = """
const cells = [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell')];
const prompts = cells.map(c => (c.querySelector('.jp-InputPrompt') || {}).textContent || '');
const tracebacks = cells.map((c, i) => [i, [...c.querySelectorAll('.jp-OutputArea-output')]
    .map(o => o.textContent).filter(t => t.includes('Traceback')).length]).filter(x => x[1] > 0);
const kernel = document.querySelector('.jp-Notebook-ExecutionIndicator');
return {cells: cells.length, prompts: prompts,
        running: prompts.filter(p => p.includes('*')).length,
        done: prompts.filter(p => /\\[\\d+\\]/.test(p)).length,
        tracebacks: tracebacks,
        kernelIdle: kernel ? kernel.getAttribute('data-status') : null,
        body: document.body.innerText.includes(NEWS_PROMPT)};
""".replace("NEWS_PROMPT", json.dumps(NEWS_PROMPT))


def _wait(driver, condition, timeout_s: float, what: str, poll_s: float = 0.5):
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}; last: {last}")


def _click_menu(driver, menu: str, command: str) -> None:
    """Open a main-menu menu by its label and click the item bound to ``command``."""
    from selenium.webdriver.common.by import By

    items = driver.find_elements(By.CSS_SELECTOR, ".lm-MenuBar-item")
    label = next(i for i in items if i.text.strip() == menu)
    label.click()
    entry = _wait(driver, lambda: driver.find_elements(
        By.CSS_SELECTOR, f'.lm-Menu-item[data-command="{command}"]'), 10, f"menu item {command}")
    entry[0].click()


def open_and_run_all(driver, lab: Lab, notebook: str) -> dict:
    """Open ``notebook``, wait for its kernel, run every cell from the menu, wait for the end."""
    from selenium.webdriver.common.by import By

    driver.get_log("browser")
    driver.get_log("performance")
    driver.get(lab.url(notebook))
    _wait(driver, lambda: driver.find_elements(
        By.CSS_SELECTOR, ".jp-NotebookPanel .jp-CodeCell"), 90, "the notebook to open")
    _wait(driver, lambda: driver.execute_script(
        "const k = document.querySelector('.jp-Notebook-ExecutionIndicator');"
        "return k && k.getAttribute('data-status') === 'idle';"), 90, "an idle kernel")
    time.sleep(2)  # a "Select Kernel" dialog may follow the first idle status
    for button in driver.find_elements(By.CSS_SELECTOR, ".jp-Dialog .jp-Dialog-button.jp-mod-accept"):
        button.click()  # accept the notebook's own kernel (Python 3), as a learner would
    expected = sum(c.cell_type == "code" for c in nbformat.read(
        lab.root / f"{notebook}.ipynb", as_version=4).cells)
    _click_menu(driver, "Run", "runmenu:run-all")
    # Done when every cell has its count, or when nothing is queued any more (a cell that
    # raised stops "Run All": the state then says which one).
    deadline = time.monotonic() + RUN_TIMEOUT_S
    idle_since = None
    while True:
        state = driver.execute_script(CELL_STATE)
        if state["done"] == expected and state["running"] == 0:
            return state
        quiet = state["running"] == 0 and state["kernelIdle"] == "idle"
        idle_since = (idle_since or time.monotonic()) if quiet else None
        if idle_since and time.monotonic() - idle_since > 10:
            raise AssertionError(
                f"{notebook}: Run All stopped after {state['done']} of {expected} cells; "
                f"cells with a traceback: {state['tracebacks']}")
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{notebook}: not finished after {RUN_TIMEOUT_S} s: {state['done']} of "
                f"{expected} cells done, {state['running']} running")
        time.sleep(1.0)


def check_clean(driver, state: dict, notebook: str) -> None:
    assert not state["tracebacks"], f"{notebook}: cells with a traceback: {state['tracebacks']}"
    assert not state["body"], f"{notebook}: JupyterLab asked about fetching Jupyter news"
    errors = console_errors(driver)
    requests = outside_requests(driver.get_log("performance"))
    assert not requests, f"{notebook}: requests left the machine: {requests[:5]}"
    assert not errors, f"{notebook}: console errors: {errors[:5]}"


WIDGET_FIGURE = """
const widget = [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell')]
  .map(c => c.querySelector('.widget-interact, .jupyter-widgets.widget-container, .widget-vbox'))
  .filter(Boolean)[0];
if (!widget) return null;
const img = widget.closest('.jp-CodeCell').querySelector('.jp-OutputArea-output img');
return img ? img.getAttribute('src') : '';
"""


def move_first_slider(driver) -> tuple[str, str]:
    """Press → on the first slider of the notebook's widget; return its figure before/after."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    before = _wait(driver, lambda: driver.execute_script(WIDGET_FIGURE), 60, "the widget's figure")
    cell = driver.execute_script(
        "return [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell')]"
        ".find(c => c.querySelector('.widget-slider .noUi-handle'));")
    handle = cell.find_element(By.CSS_SELECTOR, ".widget-slider .noUi-handle")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", handle)
    handle.click()
    handle.send_keys(Keys.ARROW_RIGHT)
    after = _wait(driver, lambda: (lambda s: s if s and s != before else None)(
        driver.execute_script(WIDGET_FIGURE)), 60, "the widget to redraw its figure")
    return before, after


BERTVIZ_STATE = """
const views = [...document.querySelectorAll('div[id^="bertviz-"]')];
return views.map(v => v.querySelectorAll('svg *').length);
"""


@pytest.mark.parametrize("notebook", WIDGET_NOTEBOOKS)
def test_learner_runs_notebook_in_jupyterlab(lab, browser, notebook):
    started = time.monotonic()
    state = open_and_run_all(browser, lab, notebook)
    if notebook.startswith("04_"):
        drawn = _wait(browser, lambda: (lambda v: v if len(v) >= 2 and min(v) > 10 else None)(
            browser.execute_script(BERTVIZ_STATE)), 60, "bertviz head and model views")
        assert len(drawn) >= 2 and min(drawn) > 10, drawn
    before, after = move_first_slider(browser)
    assert before != after
    SHOTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SHOTS / f"lab-{notebook}.png"))
    check_clean(browser, state, notebook)
    print(f"{notebook}: {state['done']} cells run in JupyterLab in "
          f"{time.monotonic() - started:.0f} s")


OPAQUE_FIGURES = """
const imgs = [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output img')];
return imgs.map(img => {
  const c = document.createElement('canvas'); c.width = img.naturalWidth; c.height = img.naturalHeight;
  const ctx = c.getContext('2d'); ctx.drawImage(img, 0, 0);
  const px = ctx.getImageData(2, 2, 1, 1).data;
  return [px[3], (px[0] + px[1] + px[2]) / 3];
});
"""


def test_dark_theme_keeps_figures_legible(browser, tmp_path):
    notebook = "04_attention_from_scratch"
    _copy_notebooks(tmp_path, [notebook])
    server = Lab(tmp_path, theme="JupyterLab Dark")
    try:
        state = open_and_run_all(browser, server, notebook)
        dark = browser.execute_script(
            "return document.body.getAttribute('data-jp-theme-light');")
        assert dark == "false", f"the dark theme is not active ({dark!r})"
        corners = browser.execute_script(OPAQUE_FIGURES)
        assert corners, "no figures rendered"
        transparent = [i for i, (alpha, _) in enumerate(corners) if alpha < 255]
        assert not transparent, f"figures with a transparent background: {transparent}"
        dark_bg = [i for i, (_, level) in enumerate(corners) if level < 128]
        assert not dark_bg, f"figures whose background is dark on a dark page: {dark_bg}"
        SHOTS.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(SHOTS / f"lab-dark-{notebook}.png"))
        check_clean(browser, state, notebook)
    finally:
        server.stop()


MERMAID_STATE = """
const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
if (!panel) return null;
const rendered = [...panel.querySelectorAll('.jp-RenderedMermaid')];
return {
  rendered: rendered.filter(r => !r.classList.contains('jp-mod-warning')
    && r.querySelector('img[src^="data:image/svg+xml"], svg')).length,
  errors: [...panel.querySelectorAll('.jp-RenderedMermaid.jp-mod-warning')]
    .map(r => r.innerText.slice(0, 300)),
  pending: panel.querySelectorAll('.jp-MarkdownOutput pre > code.language-mermaid').length,
};
"""


def test_diagrams_render_in_jupyterlab(browser, tmp_path):
    """JupyterLab's own Mermaid (bundled, offline) draws a notebook's diagrams."""
    sys.path.insert(0, str(REPO / "tools"))
    from check_mermaid import diagrams_in

    counts = {p.stem: len(diagrams_in(p)) for p in sorted(NOTEBOOKS.glob("[0-9][0-9]*_*.ipynb"))
              if ".FAILED" not in p.name}
    with_diagrams = [name for name, count in counts.items() if count]
    assert with_diagrams, "no notebook has a Mermaid diagram yet"
    notebook = max(with_diagrams, key=counts.get)  # the one with the most diagrams
    _copy_notebooks(tmp_path, [notebook])
    server = Lab(tmp_path)
    try:
        browser.get_log("browser")
        browser.get_log("performance")
        browser.get(server.url(notebook))
        state = _wait(browser, lambda: (lambda s: s if s and (
            s["rendered"] + len(s["errors"]) >= counts[notebook]) else None)(
            browser.execute_script(MERMAID_STATE)), 90, f"{counts[notebook]} diagrams in {notebook}")
        assert not state["errors"], f"{notebook}: Mermaid errors in JupyterLab: {state['errors']}"
        assert state["rendered"] == counts[notebook], state
        browser.execute_script("document.querySelector('.jp-RenderedMermaid')"
                               ".scrollIntoView({block: 'center'});")
        SHOTS.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(SHOTS / f"lab-diagrams-{notebook}.png"))
        requests = outside_requests(browser.get_log("performance"))
        assert not requests, f"{notebook}: requests left the machine: {requests[:5]}"
        mermaid_errors = [e for e in console_errors(browser) if "mermaid" in e.lower()]
        assert not mermaid_errors, f"{notebook}: console errors drawing diagrams: {mermaid_errors[:3]}"
    finally:
        server.stop()
