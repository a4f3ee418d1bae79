"""Layer rules (import-linter contracts in pyproject.toml) and a light, side-effect-free core."""

import ast
import importlib.metadata
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest depends on tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
LINT = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True, no_logo=True))"
# Contracts that must exist as soon as their source module does (import-linter refuses a
# contract whose source module does not exist yet, so these cannot be written in advance).
FORBIDDEN_WHEN_PRESENT = {
    "macfinetune.ui": {"macfinetune.backend", "mlx", "mlx_lm"},
}


def _contracts() -> dict[str, dict]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return {c["name"]: c for c in config["tool"]["importlinter"]["contracts"]}


def _top_level_modules() -> set[str]:
    """Every module and subpackage directly under macfinetune/, from the source tree."""
    return {f"macfinetune.{m.name}" for m in pkgutil.iter_modules([str(ROOT / "macfinetune")])}


def test_import_linter_contracts_hold():
    proc = subprocess.run([sys.executable, "-c", LINT], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


def test_only_backend_imports_mlx_covers_every_other_module():
    listed = set(_contracts()["only backend imports mlx"]["source_modules"])
    assert listed == _top_level_modules() - {"macfinetune.backend"}


def test_the_headless_cli_contract_covers_every_command_module():
    contract = _contracts()["the headless CLI has no Qt"]
    commands = {m for m in _top_level_modules() if m.rpartition(".")[2] in ("cli", "__main__")}
    assert commands <= set(contract["source_modules"])
    assert {"PySide6", "pyqtgraph", "macfinetune.engine"} <= set(contract["forbidden_modules"])


@pytest.mark.parametrize("module", sorted(FORBIDDEN_WHEN_PRESENT))
def test_contracts_for_modules_that_exist(module):
    if module not in _top_level_modules():
        pytest.skip(f"{module} does not exist yet")
    forbidden = set()
    for contract in _contracts().values():
        if contract["type"] == "forbidden" and module in contract["source_modules"]:
            forbidden |= set(contract["forbidden_modules"])
    assert FORBIDDEN_WHEN_PRESENT[module] <= forbidden


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


def _third_party_imports(folder: Path) -> set[str]:
    """Top-level names of every non-stdlib import under ``folder``, lazy ones included."""
    found = set()
    for file in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                found.add(node.module.split(".")[0])
    local = {"macfinetune", "conftest", "test_hub", "bench", "tomli"}  # tomli: pytest's own dependency on 3.10
    return {name for name in found if name not in sys.stdlib_module_names and name not in local}


def _declared(*extras: str) -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    requirements = project["dependencies"] + [r for e in extras for r in project["optional-dependencies"][e]]
    return {_normalized(re.match(r"[A-Za-z0-9._-]+", r).group()) for r in requirements}


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _distributions(module: str) -> set[str]:
    return {_normalized(d) for d in importlib.metadata.packages_distributions().get(module, [module])}


@pytest.mark.parametrize("folder, extras", [("macfinetune", ("datasets",)), ("tests", ("datasets", "test"))])
def test_every_third_party_import_is_declared(folder, extras):
    declared = _declared(*extras)
    missing = {m for m in _third_party_imports(ROOT / folder) if not _distributions(m) & declared}
    assert missing == set()


def _apt_packages(text: str) -> set[str]:
    command = re.search(r"apt-get install ([^`]*?)(?:`|>)", text, re.S).group(1)
    return {w for w in command.replace("\\", " ").split() if not w.startswith("-")}


def _pip_install(text: str) -> str:
    return re.search(r"pip install (?:-q )?(-e \S+)", text).group(1)


def test_readme_and_ci_install_the_same_things():
    readme, ci = (ROOT / "README.md").read_text(encoding="utf-8"), (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert _apt_packages(readme) == _apt_packages(ci)
    assert _pip_install(readme) == _pip_install(ci) == '-e ".[test,datasets]"'


def test_shipped_files_are_found_through_one_function():
    from macfinetune.core.paths import shipped

    assert (shipped("recipes", "demo-tiny-lora.yaml")).is_file()
    assert (shipped("resources", "sample_data", "train.jsonl")).is_file()


def test_ruff_is_clean():
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "macfinetune", "tests", "bench"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout


def test_every_package_ships_in_the_wheel():
    """pyproject lists packages by hand: a new subpackage left out installs from a checkout but is
    missing from the wheel and the app bundle."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["packages"])
    found = {".".join(init.parent.relative_to(ROOT).parts) for init in (ROOT / "macfinetune").rglob("__init__.py")}
    assert found <= listed, sorted(found - listed)
