"""Render every Mermaid diagram of some notebooks in headless Chromium; report errors.

    python tools/check_mermaid.py notebooks/04_attention_from_scratch.ipynb [...]

Each fenced ```` ```mermaid ```` block of a markdown cell is rendered with the pinned
Mermaid (``tools/assets.py``'s ``MERMAID``, the version JupyterLab 4.6 bundles and the
exported site loads), offline, from a ``file://`` page. One line per diagram:
``OK`` (with its SVG size) or the parse/render error Mermaid reports, then a summary.
Exit code 1 when any diagram fails (or a notebook has none and ``--min`` asks for some),
2 when the tools are missing (Chromium, the cached Mermaid: run ``task setup``).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import nbformat

TOOLS = Path(__file__).resolve().parent
sys.path.insert(0, str(TOOLS))
sys.path.insert(0, str(TOOLS.parent / "tests"))  # browser.py: the tests' headless Chromium

import assets  # noqa: E402

# A fenced block opened by ```mermaid (or ~~~mermaid), closed by the same fence.
MERMAID_BLOCK = re.compile(
    r"^(?P<indent>[ ]{0,3})(?P<fence>`{3,}|~{3,})[ \t]*mermaid[ \t]*\n(?P<code>.*?)^(?P=indent)?(?P=fence)[ \t]*$",
    re.S | re.M,
)


@dataclass
class Diagram:
    """One Mermaid block: where it is and its source."""

    notebook: str
    cell: int
    index: int  # the diagram's number in its notebook, from 1
    code: str

    @property
    def where(self) -> str:
        first = self.code.strip().splitlines()[0] if self.code.strip() else "(empty)"
        return f"{self.notebook} cell {self.cell} diagram {self.index} ({first[:40]})"


def diagrams_in(path: Path) -> list[Diagram]:
    """Every ```mermaid block of the notebook's markdown cells, in order."""
    nb = nbformat.read(path, as_version=4)
    found = []
    for number, cell in enumerate(nb.cells):
        if cell.cell_type != "markdown":
            continue
        for match in MERMAID_BLOCK.finditer(cell.source):
            found.append(Diagram(path.name, number, len(found) + 1, match["code"]))
    return found


# Runs in the page: parse, then render one diagram (into a hidden element, as JupyterLab
# and nbconvert's lab template do), and return the outcome. Mermaid's render() throws on
# a parse error with the message it would show.
RENDER_ONE = r"""
const done = arguments[arguments.length - 1];
const source = arguments[0];
const VOID = /<\s*(area|base|br|col|embed|hr|img|input|link|meta|param|source|track|wbr)\s*([^>]*?)\s*>/gi;
(async () => {
  if (!window.mermaid) { done({fatal: 'mermaid did not load'}); return; }
  if (!window.__checkMermaidReady) {
    mermaid.initialize({startOnLoad: false, maxTextSize: 100000, maxEdges: 100000,
                        theme: 'default', fontFamily: 'sans-serif'});
    window.__checkMermaidReady = true;
  }
  const el = document.createElement('div');
  el.style.visibility = 'hidden';
  document.body.appendChild(el);
  try {
    await mermaid.parse(source);
    let {svg} = await mermaid.render('check-mermaid-' + (window.__n = (window.__n || 0) + 1), source, el);
    // What JupyterLab and nbconvert do before showing the SVG as an image: close
    // void elements (Mermaid writes <br> for line breaks), then it must parse as XML.
    svg = svg.replace(VOID, (m, tag, rest) => `<${tag} ${rest.trim().replace(/\/$/, '')} />`);
    const doc = new DOMParser().parseFromString(svg, 'image/svg+xml');
    const bad = doc.querySelector('parsererror');
    if (bad) { done({ok: false, error: 'invalid SVG: ' + bad.textContent.slice(0, 200)}); return; }
    const nodes = doc.querySelectorAll('g.node').length;
    const broken = svg.match(/(translate|matrix)\([^)]*(NaN|undefined)[^)]*\)/);
    if (broken) { done({ok: false, error: 'bad layout in the SVG: ' + broken[0]}); return; }
    done({ok: true, bytes: svg.length, nodes: nodes});
  } catch (err) {
    done({ok: false, error: String((err && err.message) || err)});
  } finally {
    el.remove();
  }
})();
"""


def render(diagrams: list[Diagram], timeout_s: float = 120) -> list[dict]:
    """Render ``diagrams`` in one headless Chromium page; one result dict per diagram."""
    if not diagrams:
        return []
    from browser import CHROMEDRIVER, CHROMIUM, start_chromium

    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        raise SystemExit(2) from RuntimeError(
            "headless Chromium not installed (apt-get install chromium chromium-driver)")
    mermaid_js = assets.path(assets.MERMAID)  # AssetError says to run `task setup`
    with tempfile.TemporaryDirectory(prefix="check-mermaid-") as tmp:
        page = Path(tmp) / "check.html"
        page.write_text(
            '<!DOCTYPE html><html><head><meta charset="utf-8">'
            f'<script src="{mermaid_js.as_uri()}"></script></head><body></body></html>',
            encoding="utf-8",
        )
        driver = start_chromium(timeout_s)
        results = []
        try:
            driver.set_script_timeout(timeout_s)
            driver.get(page.as_uri())
            for diagram in diagrams:
                driver.get_log("browser")  # attribute console errors to this diagram
                outcome = driver.execute_async_script(RENDER_ONE, diagram.code)
                if "fatal" in outcome:
                    raise RuntimeError(f"check_mermaid: {outcome['fatal']} ({mermaid_js})")
                errors = [e["message"] for e in driver.get_log("browser")
                          if e["level"] == "SEVERE"]
                if outcome["ok"] and errors:  # e.g. an SVG attribute Mermaid computed as NaN
                    outcome = {"ok": False, "error": "console error while drawing: " + errors[0]}
                results.append(outcome)
        finally:
            driver.quit()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--min", type=int, default=0,
                        help="fail a notebook with fewer diagrams than this (the course asks 2)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)

    diagrams: list[Diagram] = []
    too_few = []
    for path in args.notebooks:
        if not path.is_file():
            parser.error(f"no such notebook: {path}")
        found = diagrams_in(path)
        if len(found) < args.min:
            too_few.append(f"{path.name}: {len(found)} diagram(s), at least {args.min} expected")
        diagrams += found
    try:
        results = render(diagrams)
    except assets.AssetError as error:
        print(f"check_mermaid: {error}", file=sys.stderr)
        return 2
    except SystemExit as stop:
        print(f"check_mermaid: {stop.__cause__}", file=sys.stderr)
        return 2

    if args.json:
        print(json.dumps([{"where": d.where, **r} for d, r in zip(diagrams, results, strict=True)], indent=1))
    else:
        for diagram, result in zip(diagrams, results, strict=True):
            if result["ok"]:
                print(f"OK    {diagram.where}: {result['nodes']} nodes")
            else:
                error = " ".join(result["error"].split())
                print(f"ERROR {diagram.where}: {error}")
    failed = sum(not r["ok"] for r in results)
    for line in too_few:
        print(f"FEW   {line}")
    print(f"check_mermaid: {len(diagrams)} diagram(s) in {len(args.notebooks)} notebook(s), "
          f"{failed} failed" + (f", {len(too_few)} notebook(s) with too few" if too_few else ""))
    return 1 if failed or too_few else 0


if __name__ == "__main__":
    sys.exit(main())
