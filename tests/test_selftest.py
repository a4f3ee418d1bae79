"""``macfinetune --self-test``: the checks the packaging script runs inside a built app."""

import importlib

from macfinetune.backend import architectures, selftest
from macfinetune.cli import main


def test_self_test_passes_on_this_install_and_prints_one_line_per_check(capsys, tmp_path, monkeypatch):
    from macfinetune.core import run_index

    monkeypatch.setenv("MACFINETUNE_HOME", str(tmp_path / "home"))
    assert main(["--self-test"]) == 0
    assert run_index._read(tmp_path / "home" / "runs-index.json") == []  # its temporary run is not the user's
    lines = capsys.readouterr().out.splitlines()
    names = [name for name, _ in selftest._checks(with_qt=True)]
    assert [line.split(":")[0].split()[-1] for line in lines[:-1]] == [n.split()[-1] for n in names]
    assert all(line.startswith("ok") for line in lines[:-1])
    assert lines[-1] == "self-test: all checks passed"
    train_line = next(line for line in lines if line.startswith("ok    train:"))
    assert "checkpoint at iteration 4" in train_line


def test_a_failed_check_is_a_line_and_exit_1_not_a_traceback(capsys, monkeypatch):
    def missing(state):
        importlib.import_module("macfinetune_no_such_module")

    monkeypatch.setattr(selftest, "_checks", lambda with_qt: [("imports", missing), ("python", selftest._python)])
    assert main(["--self-test"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("FAIL  imports: ModuleNotFoundError")
    assert out[1].startswith("ok    python: Python")
    assert out[-1] == "self-test: 1 failed"


def test_a_module_that_exits_without_its_extra_package_is_not_claimed_as_supported():
    """mlx-lm's olmo.py calls sys.exit(1) at import without ai2-olmo: loading it would end the app."""
    source = (architectures._package_folder() / "models" / "olmo.py").read_text(encoding="utf-8")
    assert "sys.exit(" in source
    assert "olmo" not in architectures.supported_model_types()
    assert {"olmo2", "llama", "qwen3"} <= architectures.supported_model_types()
    assert architectures.module_for("mistral") == "llama"


def test_a_frozen_app_whose_data_folder_is_inside_its_bundle_fails_the_environment_check(tmp_path, monkeypatch):
    """An app started from Finder must never write inside its own bundle (signing breaks, updates lose it)."""
    app = tmp_path / "macfinetune.app"
    exe = app / "Contents" / "MacOS" / "macfinetune"
    exe.parent.mkdir(parents=True)
    exe.write_text("")
    monkeypatch.setattr("sys.frozen", True, raising=False)
    monkeypatch.setattr("sys.executable", str(exe))
    monkeypatch.setenv("MACFINETUNE_HOME", str(app / "Contents" / "Resources" / "data"))
    check = selftest._run("environment", selftest._environment, {})
    assert not check.ok
    assert "inside the app bundle" in check.detail and str(app) in check.detail

    monkeypatch.setenv("MACFINETUNE_HOME", str(tmp_path / "home"))
    check = selftest._run("environment", selftest._environment, {})
    assert check.ok, check.detail
    assert "hub cache" in check.detail and "data folder outside the app" in check.detail


def test_the_qt_check_imports_every_page_module_the_window_registers():
    """A page added to the registry but not to the self-test would ship untested in the frozen app."""
    from macfinetune.ui import pages

    page_modules = {spec.factory.split(":")[0] for spec in pages.REGISTRY}
    assert page_modules - {"macfinetune.ui.placeholder"} <= set(selftest.QT_MODULES)
