"""Export the executed notebooks to a static website that works offline.

    python tools/build_site.py [--out site]

Writes ``site/index.html`` (the course map, linking every notebook) and one page per
notebook (nbconvert's ``lab`` template). Every script a page needs — require.js, the
Jupyter widgets renderer, MathJax, Mermaid (the diagrams in markdown cells) and the
d3/jquery inlined in bertviz views (which saved notebooks leave out,
``assets.strip_inlined``) — comes from pinned npm packages fetched once into the ignored
cache (``tools/assets.py``) and copied into ``site/_static``: nothing is loaded from a
CDN when a page is viewed, and nothing third-party is committed.

Mermaid: nbconvert's lab template renders ``<pre class="mermaid">`` blocks by importing
Mermaid's ES module from a CDN. ES modules do not load from ``file://`` pages, so each
page instead loads the pinned ``mermaid.min.js`` as a classic script (before the page's
first script, so require.js has not defined ``define`` yet), and the template's import
gets a ``data:`` module that hands it that global (with the bundle's own ``startOnLoad`` off, so
the template alone draws each diagram once).
"""

from __future__ import annotations

import argparse
import html
import re
import shutil
import sys
import time
from pathlib import Path

import nbformat
from nbconvert import HTMLExporter

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))  # also when imported by path (tests)
import assets  # noqa: E402  (tools/assets.py)

NOTEBOOKS = REPO / "notebooks"

SITE_ASSETS = [assets.REQUIREJS, assets.HTML_MANAGER, assets.MATHJAX, assets.MERMAID]
# What the lab template imports as Mermaid: the global the classic script defined.
MERMAID_MODULE = "data:text/javascript,export default globalThis.mermaid;"
STATIC = "_static"


def notebook_title(nb: nbformat.NotebookNode, fallback: str) -> tuple[str, str]:
    """``(title, summary)`` from the first markdown cell: its heading and first paragraph."""
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        lines = cell.source.strip().splitlines()
        if lines and lines[0].startswith("# "):
            title = re.sub(r"[*_`]", "", lines[0][2:]).strip()  # plain text for nav/index
            paragraph = []
            for line in lines[1:]:
                if not line.strip():
                    if paragraph:
                        break
                    continue
                paragraph.append(line.strip())
            summary = " ".join(paragraph)
            # Intros often end by announcing a list ("In this notebook you will:"), which
            # reads as cut off on the index: drop that last sentence when others remain.
            trimmed = re.sub(r"\s*[^.!?]*:$", "", summary)
            return title, trimmed if trimmed else summary.rstrip(":")
    return fallback, ""


def _markdown_inline(text: str) -> str:
    """Enough inline markdown for a summary: escape, then `code`, **bold**, *italic*."""
    text = html.escape(text)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    text = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)
    text = re.sub(r"\*([^*]+)\*", r"<em>\1</em>", text)
    return re.sub(r"\[([^\]]+)\]\([^)]+\)", r"\1", text)


def install_static(out: Path) -> dict[str, str]:
    """Copy the pinned JS into ``out/_static``; return the relative URLs pages use."""
    static = out / STATIC
    urls = {}
    for asset in SITE_ASSETS:
        source = assets.ensure(asset)
        target = static / asset.spec.replace("/", "__")
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(source, target, ignore=shutil.ignore_patterns(assets.STAMP))
        urls[asset.name] = f"{STATIC}/{target.name}"
    return {
        "require_js_url": f"{urls['requirejs']}/require.js",
        "widget_renderer_url": f"{urls['@jupyter-widgets/html-manager']}/dist/embed-amd.js",
        "mathjax_url": f"{urls['mathjax']}/MathJax.js?config=TeX-AMS_CHTML-full,Safe",
        "mermaid_script_url": f"{urls['mermaid']}/dist/mermaid.min.js",
    }


def nav_bar(pages: list[tuple[str, str]], index: int) -> str:
    """Previous / course map / next links, inserted at the top of each page."""
    links = []
    if index > 0:
        links.append(f'<a href="{pages[index - 1][0]}">← {html.escape(pages[index - 1][1])}</a>')
    links.append('<a href="index.html">Course map</a>')
    if index + 1 < len(pages):
        links.append(f'<a href="{pages[index + 1][0]}">{html.escape(pages[index + 1][1])} →</a>')
    return (
        '<nav class="course-nav" style="display:flex;gap:2em;justify-content:center;'
        'padding:0.6em;font-family:sans-serif;border-bottom:1px solid #ddd">'
        + "".join(links) + "</nav>"
    )


def build(out: Path) -> list[Path]:
    """Export every notebook and the index into ``out``; return the pages written."""
    notebooks = sorted(NOTEBOOKS.glob("[0-9][0-9]*_*.ipynb"))
    notebooks = [p for p in notebooks if ".FAILED" not in p.name]
    if not notebooks:
        raise SystemExit(f"no notebooks in {NOTEBOOKS}")
    out.mkdir(parents=True, exist_ok=True)
    urls = install_static(out)
    # The bundle would draw every .mermaid element itself at window load (startOnLoad),
    # racing the template, which then reads an SVG as diagram source: switch that off.
    mermaid_script = (f'<script src="{urls.pop("mermaid_script_url")}"></script>\n'
                      "<script>mermaid.initialize({startOnLoad: false});</script>")
    exporter = HTMLExporter(template_name="lab", mermaid_js_url=MERMAID_MODULE,
                            mermaid_layout_elk_js_url="", **urls)

    entries = []
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        assets.map_html_outputs(nb, assets.restore_inlined)  # the d3/jQuery saving left out
        title, summary = notebook_title(nb, path.stem)
        entries.append((path, nb, path.stem + ".html", title, summary))
    pages = [(page, title) for _, _, page, title, _ in entries]

    written = []
    for index, (_, nb, page, title, _) in enumerate(entries):
        body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": title}})
        # Links between notebooks point at .ipynb files; on the site they are pages.
        body = re.sub(r'href="(\d\d[a-z]?_[\w-]+)\.ipynb', r'href="\1.html', body)
        nav = nav_bar(pages, index)
        body = re.sub(r"(<body[^>]*>)", lambda m, nav=nav: m.group(1) + nav, body, count=1)
        # Before the first script (require.js), so Mermaid's bundle sees no AMD `define`.
        body = body.replace("<script", mermaid_script + "\n<script", 1)
        target = out / page
        target.write_text(body, encoding="utf-8")
        written.append(target)

    rows = "\n".join(
        f'<li><a href="{page}">{html.escape(title)}</a><p>{_markdown_inline(summary)}</p></li>'
        for _, _, page, title, summary in entries
    )
    index_html = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Inside the Transformer: course map</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 52em; margin: 2em auto; padding: 0 1em;
       line-height: 1.45; color: #222; }}
li {{ margin-bottom: 0.9em; }} li p {{ margin: 0.2em 0 0 0; color: #444; }}
a {{ font-weight: 600; }}
</style></head>
<body>
<h1>Inside the Transformer</h1>
<p>A notebook course that rebuilds a transformer from scratch and proves each piece equal to
real pretrained models. These pages are the executed notebooks, exported for reading;
to run them, see the README (<code>task lab</code>).</p>
<h2>Course map</h2>
<ol start="0" style="list-style:none;padding-left:0">
{rows}
</ol>
</body></html>
"""
    (out / "index.html").write_text(index_html, encoding="utf-8")
    return [out / "index.html", *written]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Export the notebooks to an offline site.")
    parser.add_argument("--out", type=Path, default=REPO / "site")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    pages = build(args.out.resolve())
    print(f"site: {len(pages)} pages in {args.out} ({time.perf_counter() - start:.1f} s); "
          f"open {args.out / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
