"""tools/assets.py: pinned npm tarballs, integrity-checked, cached, never re-fetched.

A fake ``npm`` (a shell script that "packs" a local tarball) makes every test offline; one
test checks the real cache that ``task setup`` filled, when it exists.
"""

from __future__ import annotations

import io
import json
import re
import stat
import sys
import tarfile
from pathlib import Path

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "tools"))
import assets  # noqa: E402  (tools/assets.py)
from assets import Asset, AssetError  # noqa: E402

from course_utils import viz  # noqa: E402


def _tarball(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture
def fake_registry(tmp_path, monkeypatch):
    """A cache in tmp_path and a fake npm whose `pack` copies demo-1.0.0.tgz into cwd."""
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path / "cache"))
    data = _tarball({"dist/demo.min.js": b"window.demo = 42;", "LICENSE": b"MIT", "extra.js": b"x"})
    (tmp_path / "demo-1.0.0.tgz").write_bytes(data)
    log = tmp_path / "npm.log"
    npm = tmp_path / "npm"
    npm.write_text(f'#!/bin/sh\necho "$@" >> {log}\ncp {tmp_path}/demo-1.0.0.tgz .\n')
    npm.chmod(npm.stat().st_mode | stat.S_IEXEC)
    asset = Asset("demo", "1.0.0", assets.integrity_of(data), ("dist/demo.min.js", "LICENSE"))
    return asset, str(npm), log


def test_fetch_verify_extract_only_listed_files(fake_registry):
    asset, npm, log = fake_registry
    folder = assets.ensure(asset, npm=npm)
    assert sorted(p.name for p in folder.rglob("*") if p.is_file()) == [
        ".course-asset.json", "LICENSE", "demo.min.js"
    ]
    assert assets.read_js(asset) == "window.demo = 42;"
    assert assets.path(asset, "LICENSE").read_text() == "MIT"
    assert log.read_text().split()[:2] == ["pack", "demo@1.0.0"]
    assert json.loads((folder / assets.STAMP).read_text())["integrity"] == asset.integrity


def test_cached_asset_is_not_fetched_again(fake_registry, tmp_path):
    asset, npm, log = fake_registry
    assets.ensure(asset, npm=npm)
    assets.ensure(asset, npm=str(tmp_path / "no-such-npm"))  # would raise if it ran npm
    assert len(log.read_text().splitlines()) == 1


def test_integrity_mismatch_installs_nothing(fake_registry):
    asset, npm, _ = fake_registry
    tampered = Asset(asset.name, asset.version, assets.integrity_of(b"something else"), asset.files)
    with pytest.raises(AssetError, match="Integrity mismatch for demo@1.0.0"):
        assets.ensure(tampered, npm=npm)
    assert not tampered.directory.exists()


def test_missing_npm_says_how_to_install_it(fake_registry, tmp_path):
    asset, _, _ = fake_registry
    with pytest.raises(AssetError, match="npm is needed once.*Install Node.js"):
        assets.ensure(asset, npm=str(tmp_path / "no-such-npm"))


def test_missing_cache_without_fetch_says_run_setup(fake_registry):
    asset, _, _ = fake_registry
    with pytest.raises(AssetError, match="task setup"):
        assets.read_js(asset)


def test_modified_cached_file_is_refused(fake_registry):
    asset, npm, _ = fake_registry
    folder = assets.ensure(asset, npm=npm)
    (folder / "dist/demo.min.js").write_text("alert('changed')")
    with pytest.raises(AssetError, match="changed since it was verified"):
        assets.read_js(asset)


def test_missing_file_in_tarball_is_named(fake_registry):
    asset, npm, _ = fake_registry
    wrong = Asset(asset.name, asset.version, asset.integrity, ("dist/nope.js",))
    with pytest.raises(AssetError, match=r"no file\(s\) \['dist/nope.js'\]"):
        assets.ensure(wrong, npm=npm)


def test_failed_npm_pack_reports_its_error(fake_registry, tmp_path):
    asset, _, _ = fake_registry
    failing = tmp_path / "npm-failing"
    failing.write_text("#!/bin/sh\necho 'npm error 404 Not Found' >&2\nexit 1\n")
    failing.chmod(0o755)
    with pytest.raises(AssetError, match="404 Not Found"):
        assets.ensure(asset, npm=str(failing))


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"integrity": "md5-abc"}, "sha512-"),
        ({"files": ()}, "no files"),
        ({"files": ("../evil.js",)}, "relative path"),
    ],
)
def test_bad_asset_declarations(kwargs, needle):
    fields = {"name": "x", "version": "1", "integrity": "sha512-AAAA", "files": ("a.js",)} | kwargs
    with pytest.raises(ValueError, match=needle):
        Asset(**fields)


def test_integrity_of_matches_npm_format():
    # echo -n "" | openssl dgst -sha512 -binary | base64
    assert assets.integrity_of(b"") == (
        "sha512-z4PhNX7vuL3xVChQ1m2AB9Yg5AULVxXcg/SpIdNs6c5H0NE8XYXysP+DGNKHfuwvY7kxvUdBeoGlODJ6+SfaPg=="
    )


def test_pinned_assets_are_cached_and_verified_when_set_up():
    """After `task setup`: every pinned asset is in the real cache and passes verification."""
    missing = [a.spec for a in assets.ASSETS if not assets.is_cached(a)]
    if missing:
        pytest.skip(f"not set up yet (run `task setup`): {missing}")
    for asset in assets.ASSETS:
        assert assets.path(asset).stat().st_size > 1000
    assert "d3js.org v5" in assets.read_js(assets.D3_V5)[:200]
    assert "jQuery v3" in assets.read_js(assets.JQUERY)[:200]


def test_prepared_inline_blocks_are_what_viz_reads(tmp_path, monkeypatch):
    """Set-up writes each bertviz library's block where ``viz`` reads it, idempotently;
    without it ``viz`` says to run set-up (the wheel has no fetching code)."""
    if not all(assets.is_cached(a) for a in (assets.D3_V5, assets.JQUERY)):
        pytest.skip("not set up yet (run `task setup`)")
    cached = {a.spec: a.directory for a in (assets.D3_V5, assets.JQUERY)}
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path))
    with pytest.raises(viz.OfflineAssetError, match="task setup"):
        viz._inline_js("d3@5.7.0")
    for folder in cached.values():  # the verified packages, without fetching again
        (tmp_path / "js").mkdir(exist_ok=True)
        (tmp_path / "js" / folder.name).symlink_to(folder)
    first = assets.prepare_inline()
    stamps = [path.stat().st_mtime_ns for path in first]
    assert assets.prepare_inline() == first
    assert [path.stat().st_mtime_ns for path in first] == stamps  # nothing rewritten
    assert set(viz.BERTVIZ_LIBRARIES) == set(assets.INLINE_ASSETS)
    for spec in viz.BERTVIZ_LIBRARIES:
        assert viz._inline_js(spec) == assets.inline_block(assets.INLINE_ASSETS[spec])


def test_mermaid_pin_is_the_version_jupyterlab_bundles():
    """Diagrams checked by tools/check_mermaid.py and drawn on the site use the Mermaid
    that JupyterLab renders them with."""
    static = Path(sys.prefix) / "share" / "jupyter" / "lab" / "static"
    if not static.is_dir():
        pytest.skip(f"no JupyterLab static files in {static}")
    versions = set()
    for bundle in static.glob("*.js"):
        text = bundle.read_text(encoding="utf-8", errors="replace")
        versions.update(re.findall(r'renderer\.draw\([^)]*?"(\d+\.\d+\.\d+)"', text))
    assert versions == {assets.MERMAID.version}, versions
