"""Layer rules (import-linter contracts in pyproject.toml) and a light, side-effect-free core."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_linter_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


def test_core_imports_no_heavy_modules_and_touches_nothing(tmp_path):
    code = (
        "import sys, macfinetune.core.recipe, macfinetune.core.runs, macfinetune.core.plan, "
        "macfinetune.core.dataset, macfinetune.core.modelinfo, macfinetune.cli\n"
        "heavy = [m for m in ('mlx', 'mlx_lm', 'PySide6', 'transformers', 'torch') if m in sys.modules]\n"
        "print(heavy)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=60,
                          env={"MACFINETUNE_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
    assert not (tmp_path / "home").exists(), "importing must not create folders"


def test_shipped_files_are_found_through_one_function():
    from macfinetune.core.paths import shipped

    assert (shipped("recipes", "demo-tiny-lora.yaml")).is_file()
    assert (shipped("resources", "sample_data", "train.jsonl")).is_file()


def test_ruff_is_clean():
    ruff = Path(sys.executable).with_name("ruff")
    proc = subprocess.run([str(ruff), "check", "macfinetune", "tests", "bench"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout
