"""course_utils.viz: labelled attention figures and bertviz views that render offline.

The browser tests export a page and load it in headless Chromium with every network
request sent to a dead proxy, then check that d3 drew an SVG with the tokens in it.
"""

from __future__ import annotations

import itertools
import re
import shutil
import subprocess
import sys

import matplotlib
import numpy as np
import pytest
import torch

matplotlib.use("Agg")

from conftest import REPO  # noqa: E402
from course_utils import viz  # noqa: E402

sys.path.insert(0, str(REPO / "tools"))
import assets  # noqa: E402  (tools/assets.py: what set-up and the site build do)

TOKENS = ["[CLS]", "the", "cat", "sat", "[SEP]"]


def _attentions(layers=2, heads=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.softmax(torch.randn(1, heads, 5, 5, generator=g), -1) for _ in range(layers))


def _need_assets():
    if not all(viz.inline_js_path(spec).is_file() for spec in viz.BERTVIZ_LIBRARIES):
        pytest.skip("offline JS not fetched yet: run `task setup`")


def test_attention_stack_accepts_model_output_and_arrays():
    att = _attentions()
    stack = viz._attention_stack(att, TOKENS)
    assert stack.shape == (2, 3, 5, 5) and stack.dtype == np.float64
    assert np.array_equal(viz._attention_stack(stack), stack)
    assert np.array_equal(viz._attention_stack([a[0] for a in att]), stack)


@pytest.mark.parametrize(
    "attentions, tokens, needle",
    [
        (_attentions(), TOKENS[:4], "4 tokens for attention maps over 5 positions"),
        ([torch.zeros(1, 3, 5, 4)], None, r"\(1, H, T, T\)"),
        ([torch.zeros(3, 5, 5), torch.zeros(2, 5, 5)], None, "same"),
        ([], None, "got nothing"),
    ],
)
def test_attention_stack_errors(attentions, tokens, needle):
    with pytest.raises(ValueError, match=needle):
        viz._attention_stack(attentions, tokens)


def test_attention_grid_draws_one_panel_per_head():
    fig = viz.attention_grid(_attentions(heads=6), TOKENS, layer=1, ncols=4, highlight=(3, 2))
    drawn = [ax for ax in fig.axes if ax.images]
    assert len(drawn) == 6 and drawn[0].get_title() == "L1 H0"
    assert [t.get_text() for t in drawn[0].get_xticklabels()] == TOKENS
    assert len(drawn[0].patches) == 1  # the highlighted cell
    with pytest.raises(ValueError, match="layer must be in 0..1"):
        viz.attention_grid(_attentions(), TOKENS, layer=2)
    matplotlib.pyplot.close("all")


def test_attention_widget_has_layer_and_head_sliders():
    pytest.importorskip("ipywidgets")
    box = viz.attention_widget(_attentions(layers=4, heads=3), TOKENS, layer=2)
    layer_slider, head_slider = box.children[0].children
    assert (layer_slider.max, layer_slider.value, head_slider.max) == (3, 2, 2)
    matplotlib.pyplot.close("all")


@pytest.mark.parametrize("view", [viz.bertviz_head_view, viz.bertviz_model_view])
def test_bertviz_html_has_no_cdn_and_inlines_d3_v5(view, monkeypatch):
    _need_assets()
    html = view(_attentions(), TOKENS).data
    assert "cdnjs" not in html and "require.config" not in html
    assert not re.search(r"<script[^>]+src=", html)
    assert "d3js.org v5.7.0" in html and "jQuery v3.7.1" in html
    assert len(re.findall(r"</script>", html, re.I)) == 1  # inlined JS cannot end it early
    assert html.count('"attn"') == 1  # the weights are embedded once, not also in a comment
    # element ids: a function of the tokens and call order, not uuid4 or float weights
    monkeypatch.setattr(viz, "_bertviz_calls", itertools.count())
    first = view(_attentions(), TOKENS).data
    monkeypatch.setattr(viz, "_bertviz_calls", itertools.count())
    assert view(_attentions(), TOKENS).data == first
    assert view(_attentions(), TOKENS).data != first  # a second view on a page: new id
    assert not re.search(r"bertviz-[0-9a-f]{32}", first)


def test_bertviz_id_ignores_float_noise_in_weights(monkeypatch):
    _need_assets()
    monkeypatch.setattr(viz, "_bertviz_calls", itertools.count())
    first = viz.bertviz_head_view(_attentions(), TOKENS).data
    monkeypatch.setattr(viz, "_bertviz_calls", itertools.count())
    nudged = tuple(a + 1e-3 for a in _attentions())  # another CPU's last digits
    second = viz.bertviz_head_view(nudged, TOKENS).data
    ids = [re.search(r'id="(bertviz-head-[0-9a-f]+)"', h).group(1) for h in (first, second)]
    assert ids[0] == ids[1] and first != second


def test_saved_view_keeps_no_library_code_and_is_restored_exactly():
    _need_assets()
    html = viz.bertviz_head_view(_attentions(), TOKENS).data
    assert assets.has_inlined(html)
    saved = assets.strip_inlined(html)
    assert not assets.has_inlined(saved)
    assert "d3js.org" not in saved and "jQuery v3" not in saved
    assert len(saved) < len(html) - 300_000  # ~330 KB of third-party code gone
    assert "course-asset-not-saved d3@5.7.0" in saved and '"attn"' in saved
    assert assets.strip_inlined(saved) == saved  # idempotent
    assert assets.restore_inlined(saved) == html


def test_restore_rejects_an_unpinned_library():
    with pytest.raises(assets.AssetError, match="does not pin"):
        assets.restore_inlined("/* course-asset-not-saved leftpad@1.0.0 */")


def test_bertviz_weights_are_rounded():
    _need_assets()
    html = viz.bertviz_head_view(_attentions(), TOKENS, decimals=2).data
    params = re.search(r'"attention": \[\{"name": null, "attn": (\[.*?\]\]\]\])', html).group(1)
    values = [float(x) for x in re.findall(r"\d+\.\d+", params)]
    assert values and all(abs(round(v, 2) - v) < 1e-12 for v in values)


def test_bertviz_offline_rejects_unexpected_html():
    with pytest.raises(ValueError, match="bertviz upgraded"):
        viz.bertviz_offline("<div>no scripts</div>")


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("no headless Chromium (apt-get install chromium)")


def _render(page_path) -> str:
    result = subprocess.run(
        [
            _chromium(), "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-background-networking", "--disable-component-update",
            "--proxy-server=http://127.0.0.1:9",  # any network request fails: truly offline
            "--virtual-time-budget=5000", "--dump-dom", page_path.as_uri(),
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def _svg_texts(dom: str) -> list[str]:
    return re.findall(r"<text[^>]*>([^<]*)</text>", dom)


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.parametrize("amd_loader", [False, True], ids=["plain-page", "page-with-requirejs"])
def test_head_view_draws_svg_offline_in_chromium(tmp_path, amd_loader):
    _need_assets()
    body = viz.bertviz_head_view(_attentions(), TOKENS).data
    if amd_loader:  # e.g. the classic notebook or an nbconvert page with require.js
        body = f"<script>{assets.read_js(assets.REQUIREJS)}</script>\n{body}"
    page = tmp_path / "head.html"
    page.write_text(viz.standalone_page(body))
    dom = _render(page)
    assert "<svg" in dom, "d3 drew nothing"
    texts = _svg_texts(dom)
    assert all(token in texts for token in TOKENS), texts
    assert dom.count('<option value="') == 2  # the layer menu was filled by jQuery


@pytest.mark.slow
@pytest.mark.browser
def test_saved_view_without_libraries_says_to_rerun_in_chromium(tmp_path):
    _need_assets()
    body = assets.strip_inlined(viz.bertviz_head_view(_attentions(), TOKENS).data)
    page = tmp_path / "saved.html"
    page.write_text(viz.standalone_page(body))
    dom = _render(page)
    assert "<svg" not in dom and "Run this cell to see it" in dom


@pytest.mark.slow
@pytest.mark.browser
def test_model_view_draws_every_head_offline_in_chromium(tmp_path):
    _need_assets()
    page = tmp_path / "model.html"
    page.write_text(viz.standalone_page(viz.bertviz_model_view(_attentions(2, 3), TOKENS)))
    dom = _render(page)
    assert "<svg" in dom and dom.count("<line") >= 2 * 3 * 5 * 5  # one line per token pair
