"""The packaging scripts' own logic, checked without building (packaging/smoke.sh builds; it takes minutes)."""

import importlib.util
import plistlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGING = ROOT / "packaging"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, PACKAGING / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_info_plist_declares_what_finder_needs():
    info = plistlib.loads((PACKAGING / "Info.plist.in").read_bytes())
    assert info["CFBundleIdentifier"] == "io.github.macfinetune"
    assert info["NSHighResolutionCapable"] is True
    assert info["NSRequiresAquaSystemAppearance"] is False  # dark mode allowed
    assert info["NSAppSleepDisabled"] is True  # no App Nap while a run trains in a background window
    extensions = {ext for doc in info["CFBundleDocumentTypes"] for ext in doc.get("CFBundleTypeExtensions", [])}
    assert {"yaml", "jsonl", "json", "csv"} <= extensions
    assert any("public.folder" in doc.get("LSItemContentTypes", []) for doc in info["CFBundleDocumentTypes"])


def test_the_minimum_macos_is_the_floor_of_the_mlx_wheel():
    floor = _load("mlx_floor")
    wheel = "Wheel-Version: 1.0\nTag: cp311-cp311-macosx_15_0_arm64\nTag: cp311-cp311-macosx_14_0_arm64\n"
    assert floor.wheel_floor(wheel) == "14.0"
    with pytest.raises(SystemExit, match="not a macOS wheel"):
        floor.wheel_floor("Tag: cp311-cp311-manylinux_2_35_x86_64\n")


def _fake_bundle(root: Path, libs: list[str], metallib: bool) -> Path:
    for lib in libs:
        path = root / lib
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\0")
        if metallib:
            (path.parent / "mlx.metallib").write_bytes(b"\0")
    return root


def test_the_bundle_check_refuses_two_mlx_builds_and_torch(tmp_path):
    check = _load("check_bundle")
    good = _fake_bundle(tmp_path / "good", ["_internal/mlx/lib/libmlx.dylib"], metallib=True)
    assert check.problems(good) == []
    two = _fake_bundle(tmp_path / "two", ["_internal/mlx/lib/libmlx.dylib", "_internal/libmlx.dylib"], True)
    assert any("expected one MLX library, found 2" in p for p in check.problems(two))
    (good / "_internal" / "torch").mkdir()
    (good / "_internal" / "torch" / "__init__.py").write_text("")
    assert "the bundle carries torch" in check.problems(good)


@pytest.mark.skipif(sys.platform != "darwin", reason="MLX needs its metallib only on macOS")
def test_the_bundle_check_wants_the_metallib_beside_the_loaded_library(tmp_path):
    check = _load("check_bundle")
    bundle = _fake_bundle(tmp_path / "b", ["Contents/Frameworks/mlx/lib/libmlx.dylib"], metallib=False)
    assert any("no mlx.metallib beside" in p for p in check.problems(bundle))


def test_the_icon_renders_every_size_macos_asks_for(tmp_path):
    out = tmp_path / "macfinetune.iconset"
    done = subprocess.run([sys.executable, str(PACKAGING / "make_icns.py"), str(out)], capture_output=True,
                          text=True, env={"QT_QPA_PLATFORM": "offscreen", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    names = {p.name for p in out.iterdir()}
    assert {"icon_16x16.png", "icon_512x512@2x.png", "icon_128x128.png"} <= names


def test_the_spec_collects_what_is_imported_by_name_and_keeps_qtopengl():
    spec = (PACKAGING / "macfinetune.spec").read_text(encoding="utf-8")
    for needed in ('collect_submodules("mlx_lm")', 'collect_submodules("macfinetune")', '"PySide6.QtOpenGL", "PySide6.QtOpenGLWidgets",',
                   'collect_data_files("mlx")', 'copy_metadata("transformers"'):
        assert needed in spec
    excludes = spec.split("excludes = [", 1)[1].split("]", 1)[0]
    assert '"PySide6.QtOpenGL"' not in excludes and '"PySide6.QtOpenGLWidgets"' not in excludes  # pyqtgraph
    assert '"torch"' in excludes
