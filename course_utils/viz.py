"""Used in notebooks 00–14: figures — one style for the course, labelled heatmaps, attention views, offline bertviz.

Used in notebooks 00–12 (``setup_plots``, ``heatmap``); the attention widget and the
bertviz views in 04.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Sequence
from html import escape as html_escape
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch

FIGURE_DPI = 90


def setup_plots(dpi: int = FIGURE_DPI) -> None:
    """Modest-size PNG figures (small notebooks) with a readable default style."""
    matplotlib.rcParams.update(
        {
            "figure.dpi": dpi,
            "savefig.dpi": dpi,
            "figure.figsize": (6.4, 4.0),
            "axes.grid": False,
            "axes.titlesize": 11,
            "axes.labelsize": 10,
            "font.size": 9,
        }
    )
    try:  # inside IPython: emit PNG only (SVG would embed random ids and bloat notebooks)
        from IPython import get_ipython

        shell = get_ipython()
        if shell is not None:
            from matplotlib_inline.backend_inline import set_matplotlib_formats

            set_matplotlib_formats("png")
    except ImportError:  # plain Python: nothing to configure
        pass


def _to_numpy(matrix: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(matrix, torch.Tensor):
        matrix = matrix.detach().float().cpu().numpy()
    array = np.asarray(matrix)
    if array.ndim != 2:
        raise ValueError(f"heatmap expects a 2-D matrix, got shape {array.shape}")
    return array


def heatmap(
    matrix: torch.Tensor | np.ndarray,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    title: str = "",
    ax: plt.Axes | None = None,
    xlabel: str = "key (attended to)",
    ylabel: str = "query (attending)",
    cmap: str = "viridis",
    annotate: bool = False,
    vmin: float | None = None,
    vmax: float | None = None,
    colorbar: bool = True,
) -> plt.Axes:
    """Draw a labelled heatmap of a ``(rows, cols)`` matrix; returns the axes.

    Defaults suit attention maps (rows = queries, columns = keys); pass other axis labels
    for other matrices. ``annotate`` writes each value in its cell (small matrices only).
    """
    array = _to_numpy(matrix)
    rows, cols = array.shape
    for labels, size, what in ((row_labels, rows, "row"), (col_labels, cols, "column")):
        if labels is not None and len(labels) != size:
            raise ValueError(f"{len(labels)} {what} labels for a matrix with {size} {what}s")
    if ax is None:
        width = min(10.0, 1.5 + 0.42 * cols)
        height = min(9.0, 1.2 + 0.38 * rows)
        _, ax = plt.subplots(figsize=(max(width, 3.5), max(height, 3.0)))
    image = ax.imshow(array, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    if col_labels is not None:
        ax.set_xticks(range(cols), labels=list(col_labels), rotation=60, ha="right")
    if row_labels is not None:
        ax.set_yticks(range(rows), labels=list(row_labels))
    if annotate:
        threshold = (np.nanmax(array) + np.nanmin(array)) / 2
        for i in range(rows):
            for j in range(cols):
                ax.text(
                    j, i, f"{array[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="black" if array[i, j] > threshold else "white",
                )
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if colorbar:
        ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    return ax


# ---------------------------------------------------------------------------------------
# Attention views: a static grid, a layer/head widget, and bertviz rendering offline.
# ---------------------------------------------------------------------------------------


def _attention_stack(attentions, tokens: Sequence[str] | None = None) -> np.ndarray:
    """Normalise per-layer attentions to a float64 array ``(L, H, T, T)``.

    Accepts what ``model(..., output_attentions=True).attentions`` returns (a sequence of
    ``(1, H, T, T)`` tensors), a sequence of ``(H, T, T)`` maps, or one ``(L, H, T, T)``
    array. ``tokens`` (optional) must have length T.
    """
    if isinstance(attentions, (torch.Tensor, np.ndarray)):
        layers = [attentions[i] for i in range(attentions.shape[0])] if attentions.ndim == 4 else None
    else:
        layers = list(attentions)
    if not layers:
        raise ValueError("expected per-layer attention maps (L, H, T, T); got nothing")
    arrays = []
    for index, layer in enumerate(layers):
        array = layer.detach().double().cpu().numpy() if isinstance(layer, torch.Tensor) else np.asarray(layer, dtype=np.float64)
        if array.ndim == 4 and array.shape[0] == 1:
            array = array[0]  # drop the batch axis of output_attentions
        if array.ndim != 3 or array.shape[1] != array.shape[2]:
            raise ValueError(
                f"layer {index}: expected attention of shape (1, H, T, T) or (H, T, T), got "
                f"{tuple(np.shape(layer))}"
            )
        arrays.append(array)
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise ValueError(f"all layers must have the same (H, T, T) shape, got {sorted(shapes)}")
    stack = np.stack(arrays)  # (L, H, T, T)
    if tokens is not None and len(tokens) != stack.shape[-1]:
        raise ValueError(
            f"{len(tokens)} tokens for attention maps over {stack.shape[-1]} positions"
        )
    return stack


def attention_grid(
    attentions,
    tokens: Sequence[str],
    layer: int,
    heads: Sequence[int] | None = None,
    ncols: int = 4,
    title: str = "",
    highlight: tuple[int, int] | None = None,
) -> plt.Figure:
    """Small multiples: one labelled heatmap per head of ``layer``.

    ``highlight=(query, key)`` outlines one cell in every panel (e.g. "it" -> "animal").
    """
    stack = _attention_stack(attentions, tokens)
    num_layers, num_heads = stack.shape[:2]
    if not 0 <= layer < num_layers:
        raise ValueError(f"layer must be in 0..{num_layers - 1}, got {layer}")
    heads = list(range(num_heads)) if heads is None else list(heads)
    nrows = -(-len(heads) // ncols)
    size = min(12.0 / ncols, 0.15 * len(tokens) + 1.0)  # at most 12 inches wide
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * size, nrows * size), squeeze=False)
    for ax in axes.flat[len(heads):]:
        ax.axis("off")
    for ax, head in zip(axes.flat, heads, strict=False):
        ax.imshow(stack[layer, head], cmap="viridis", vmin=0, vmax=1)
        ax.set_title(f"L{layer} H{head}", fontsize=8)
        ax.set_xticks(range(len(tokens)), labels=list(tokens), rotation=90, fontsize=6)
        ax.set_yticks(range(len(tokens)), labels=list(tokens), fontsize=6)
        if highlight is not None:
            query, key = highlight
            ax.add_patch(plt.Rectangle((key - 0.5, query - 0.5), 1, 1, fill=False, ec="red", lw=1.5))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def attention_widget(attentions, tokens: Sequence[str], layer: int = 0, head: int = 0):
    """An ipywidgets explorer: pick a layer and a head, see its labelled heatmap.

    Returns the widget (the last expression of a cell displays it). Needs a live kernel
    (exported pages cannot redraw it): show a static figure first.
    """
    import ipywidgets as widgets
    from IPython.display import display

    stack = _attention_stack(attentions, tokens)
    num_layers, num_heads = stack.shape[:2]
    layer_slider = widgets.IntSlider(value=layer, min=0, max=num_layers - 1, description="layer")
    head_slider = widgets.IntSlider(value=head, min=0, max=num_heads - 1, description="head")
    output = widgets.Output()

    def redraw(_change=None) -> None:
        with output:
            output.clear_output(wait=True)
            ax = heatmap(
                stack[layer_slider.value, head_slider.value], tokens, tokens, vmin=0, vmax=1,
                title=f"layer {layer_slider.value}, head {head_slider.value}",
            )
            display(ax.figure)
            plt.close(ax.figure)  # shown once, inside the Output widget

    layer_slider.observe(redraw, names="value")
    head_slider.observe(redraw, names="value")
    redraw()
    return widgets.VBox([widgets.HBox([layer_slider, head_slider]), output])


# d3 v5 and jQuery for the offline bertviz views: ``task setup`` (``tools/assets.py``)
# fetches the pinned npm packages, verifies them and writes each library's inline block
# (wrapped so it hides ``define``/``module``/``exports``, between markers that saving
# strips) to ``inline_js_path(spec)``. This module only reads those prepared files.
BERTVIZ_LIBRARIES = ("d3@5.7.0", "jquery@3.7.1")


class OfflineAssetError(RuntimeError):
    """A prepared offline JavaScript file is missing; the message says how to make it."""


def inline_js_path(spec: str) -> Path:
    """Where set-up writes the inline block of library ``spec`` (``NAME@VERSION``)."""
    from course_utils.models import cache_dir

    return cache_dir() / "js" / "inline" / f"{spec.replace('/', '__')}.js"


def script_safe(js: str) -> str:
    """Inline JS must not contain ``</script``, which would end the HTML script element."""
    return re.sub(r"</(script)", r"<\\/\1", js, flags=re.I)


def _inline_js(spec: str) -> str:
    target = inline_js_path(spec)
    try:
        return target.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise OfflineAssetError(
            f"The offline JavaScript {spec} for the bertviz views is not prepared "
            f"({target} is missing). Run `task setup` once in the course checkout (it "
            "fetches the pinned npm packages). With only the installed wheel (e.g. Colab): "
            "run the course repository's tools/assets.py with this Python (it needs the "
            "package and `npm`), or point COURSE_CACHE_DIR at a cache set-up filled."
        ) from None


_CDN_SCRIPT = re.compile(r'<script src="https?://[^"]+"></script>')
_BERTVIZ_SCRIPT = re.compile(r'<script type="text/javascript">\n(.*)\n</script>', re.S)
_BERTVIZ_REQUIRE = re.compile(
    r"require\.config\(\{.*?\}\);\s*requirejs\(\['jquery', 'd3'\], function\s*\(\$, d3\)\s*\{",
    re.S,
)
_BERTVIZ_PARAMS_COMMENT = re.compile(
    r"// HACK: [^\n]* is a template marker that is replaced by actual params\."
)
_BERTVIZ_ID = re.compile(r"bertviz-[0-9a-f]{32}")
_bertviz_calls = itertools.count()


def bertviz_offline(html: str, kind: str = "bertviz", key: str = "") -> str:
    """Make the HTML that bertviz returns (``html_action='return'``) render offline.

    bertviz 1.4.1 loads require.js, d3 5.7.0 and jQuery from a CDN. Here the CDN tag is
    dropped and its view script runs in a closure that receives d3 v5 and jQuery, inlined
    from the verified cache (``inline_js_path``; run ``task setup`` once). Each
    library runs with ``define``/``module``/``exports`` hidden, so it neither registers
    with a page's AMD loader nor clobbers a page's own ``d3``/``$``.

    The libraries sit between markers so that a saved notebook keeps none of their code
    (``strip_inlined`` in ``tools/assets.py``, applied by ``tools/run_notebooks.py``);
    without them the view says to re-run the cell instead of failing silently, and the
    website puts them back (``restore_inlined``). The random element id is replaced by one derived
    from ``kind``, ``key`` and the call order, so re-running a notebook gives the same id;
    the view functions pass the tokens as ``key`` (not the float weights, whose last rounded
    digit may differ between CPUs).
    """
    html, removed = _CDN_SCRIPT.subn("", html)
    match = _BERTVIZ_SCRIPT.search(html)
    element = _BERTVIZ_ID.search(html)
    if removed != 1 or match is None or element is None:
        raise ValueError(
            "unexpected bertviz HTML: expected one CDN <script src> tag, one inline view "
            f"script and a bertviz-<uuid> element, found {removed} CDN tag(s), "
            f"{'a' if match else 'no'} view script and {'an' if element else 'no'} element "
            "(was bertviz upgraded from 1.4.1?)"
        )
    view_js, replaced = _BERTVIZ_REQUIRE.subn("(function ($, d3) {", match.group(1))
    # bertviz's template marker also sits in a comment, which gets a second copy of all the
    # attention weights: drop that comment (half the data of every view).
    view_js = _BERTVIZ_PARAMS_COMMENT.sub("", view_js)
    end = view_js.rstrip().rfind("});")
    if replaced != 1 or end < 0:
        raise ValueError("unexpected bertviz view script: its requirejs(...) wrapper changed")
    view_js = view_js[:end] + "})(lib.$, lib.d3);"
    missing = _html_escape_js(
        "This interactive view needs d3 and jQuery, which are not saved in the notebook "
        "(third-party code). Run this cell to see it (after `task setup`)."
    )
    script = (
        "(function () {\n"
        "var lib = {};\n"
        + "".join(_inline_js(spec) + "\n" for spec in BERTVIZ_LIBRARIES)
        + "if (!lib.d3 || !window.jQuery) {\n"
        f"  document.getElementById('{element.group(0)}').innerHTML = '<p><em>{missing}</em></p>';\n"
        "  return;\n"
        "}\n"
        "lib.$ = window.jQuery.noConflict(true);\n"
        + script_safe(view_js) + "\n})();"
    )
    script = f'<script type="text/javascript">\n{script}\n</script>\n'
    html = html[: match.start()] + script + html[match.end():]
    digest = hashlib.sha256(f"{kind}#{key}#{next(_bertviz_calls)}".encode()).hexdigest()[:12]
    return _BERTVIZ_ID.sub(f"bertviz-{kind}-{digest}", html)


def _html_escape_js(text: str) -> str:
    """``text`` safe inside a single-quoted JS string that becomes HTML."""
    return html_escape(text).replace("\\", "\\\\").replace("'", "\\'")


def _bertviz_inputs(attentions, tokens: Sequence[str], decimals: int) -> list[torch.Tensor]:
    stack = np.round(_attention_stack(attentions, tokens), decimals)  # short, stable JSON
    return [torch.from_numpy(layer[None]) for layer in stack]  # L x (1, H, T, T)


def bertviz_head_view(
    attentions,
    tokens: Sequence[str],
    layer: int | None = None,
    heads: Sequence[int] | None = None,
    include_layers: Sequence[int] | None = None,
    decimals: int = 3,
):
    """bertviz's head view, rendering offline; returns an ``IPython.display.HTML``.

    ``attentions``: per-layer ``(1, H, T, T)`` maps (``outputs.attentions``) or one
    ``(L, H, T, T)`` array; weights are rounded to ``decimals`` (smaller, reproducible
    output). Costs ~330 KB of inlined JavaScript per view: show one or two per notebook.
    """
    from bertviz import head_view
    from IPython.display import HTML

    html = head_view(
        _bertviz_inputs(attentions, tokens, decimals), list(tokens), layer=layer,
        heads=None if heads is None else list(heads),
        include_layers=None if include_layers is None else list(include_layers),
        html_action="return",
    ).data
    key = repr((list(tokens), layer, heads, include_layers))
    return HTML(bertviz_offline(html, "head", key))


def bertviz_model_view(
    attentions,
    tokens: Sequence[str],
    include_layers: Sequence[int] | None = None,
    include_heads: Sequence[int] | None = None,
    display_mode: str = "light",
    decimals: int = 3,
):
    """bertviz's model view (every layer x head as thumbnails), rendering offline.

    Same inputs as ``bertviz_head_view``; ``include_layers``/``include_heads`` shrink it.
    """
    from bertviz import model_view
    from IPython.display import HTML

    html = model_view(
        _bertviz_inputs(attentions, tokens, decimals), list(tokens), display_mode=display_mode,
        include_layers=None if include_layers is None else list(include_layers),
        include_heads=None if include_heads is None else list(include_heads),
        html_action="return",
    ).data
    key = repr((list(tokens), include_layers, include_heads, display_mode))
    return HTML(bertviz_offline(html, "model", key))


def standalone_page(body, title: str = "attention view") -> str:
    """A complete HTML page around ``body`` (a string or an ``IPython`` HTML object)."""
    body = getattr(body, "data", body)
    return (
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
        f"<title>{html_escape(title)}</title></head>\n<body>\n{body}\n</body></html>\n"
    )
