"""``macfinetune --self-test``: what a frozen app (or a fresh install) needs, checked end to end.

Each check returns one line of detail or raises; the caller prints one line per check. The checks
import by name what a bundler can miss (mlx-lm's model modules are imported by ``model_type`` at run
time; Qt's plugins load with the first widget), then train a few steps of the tiny model, generate a
few tokens and write and remove a run folder, all inside a temporary folder.
"""

from __future__ import annotations

import importlib
import os
import platform
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from macfinetune.core import paths, run_index

# Modules the app imports by name or lazily; a bundle that lacks one fails here, not in front of a user.
RUNTIME_MODULES = ("mlx.core", "mlx.nn", "mlx.optimizers", "mlx_lm", "mlx_lm.tuner.trainer", "mlx_lm.tuner.lora",
                   "mlx_lm.tuner.dora", "mlx_lm.fuse", "mlx_lm.generate", "transformers", "tokenizers",
                   "huggingface_hub", "safetensors", "numpy", "yaml", "jinja2", "psutil", "platformdirs")
# The window's own modules too: pyqtgraph's plot items import Qt modules a bundler may have trimmed.
QT_MODULES = ("PySide6.QtCore", "PySide6.QtGui", "PySide6.QtWidgets", "pyqtgraph", "macfinetune.ui.main_window",
              "macfinetune.ui.monitor.panels", "macfinetune.ui.monitor.page", "macfinetune.ui.wizard.page",
              "macfinetune.ui.wizard.factory", "macfinetune.ui.runs.page",
              "macfinetune.ui.checkpoints.page", "macfinetune.ui.playground.page",
              # dialogs and panels the pages import on first use
              "macfinetune.ui.checkpoints.export_dialog", "macfinetune.ui.machines", "macfinetune.ui.preferences",
              "macfinetune.ui.monitor.preference_panels")


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def run_checks(with_qt: bool = True) -> Iterator[Check]:
    """Run every check in order (a failed one does not stop the rest, except those that need its result)."""
    with tempfile.TemporaryDirectory(prefix="macfinetune-selftest-") as tmp:
        state: dict = {"tmp": Path(tmp)}
        for name, fn in _checks(with_qt):
            yield _run(name, fn, state)


def _checks(with_qt: bool) -> list[tuple[str, Callable[[dict], str]]]:
    checks = [("python", _python), ("imports", _imports), ("architectures", _architectures),
              ("resources", _resources), ("device", _device)]
    if with_qt:
        checks.append(("qt", _qt))
    return [*checks, ("environment", _environment), ("data folder", _data_folder), ("tiny model", _tiny_model), ("train", _train),
            ("fuse", _fuse), ("generate", _generate), ("run folder", _run_folder_removed)]


def _run(name: str, fn: Callable[[dict], str], state: dict) -> Check:
    try:
        return Check(name, True, fn(state))
    except (Exception, SystemExit) as e:  # a self-test reports every failure as a line, never a traceback
        return Check(name, False, f"{type(e).__name__}: {e}")


def _python(state: dict) -> str:
    frozen = " (frozen app)" if getattr(sys, "frozen", False) else ""
    return f"Python {platform.python_version()} on {platform.system()} {platform.machine()}{frozen}"


def _imports(state: dict) -> str:
    for name in RUNTIME_MODULES:
        importlib.import_module(name)
    import mlx.core as mx
    import mlx_lm

    return f"{len(RUNTIME_MODULES)} modules; mlx {mx.__version__}, mlx-lm {mlx_lm.__version__}"


def _architectures(state: dict) -> str:
    """Every model type the app claims to support imports (a bundler must collect mlx_lm.models.*)."""
    from macfinetune.backend.architectures import supported_model_types

    types = sorted(supported_model_types())
    modules = sorted({_module_for(t) for t in types})
    for module in modules:
        importlib.import_module(f"mlx_lm.models.{module}")
    return f"{len(types)} model types, {len(modules)} modules of mlx_lm.models import"


def _module_for(model_type: str) -> str:
    from macfinetune.backend.architectures import module_for

    return module_for(model_type)


def _resources(state: dict) -> str:
    from macfinetune.core.recipe import load_recipe

    recipes = sorted(paths.shipped("recipes").glob("*.yaml"))
    for recipe in recipes:
        load_recipe(recipe)
    sample = paths.shipped("resources", "sample_data")
    if not (sample / "train.jsonl").is_file():
        raise FileNotFoundError(f"sample data missing: {sample / 'train.jsonl'}")
    return f"{len(recipes)} recipes load; sample data present"


def _device(state: dict) -> str:
    import mlx.core as mx

    x = (mx.arange(16, dtype=mx.float32) * 2).sum()
    mx.eval(x)
    if x.item() != 240:
        raise ValueError(f"MLX computed {x.item()} for 2*sum(0..15), expected 240")
    library = _loaded_mlx_library()
    where = f"libmlx loaded from {library}" if library else "libmlx is linked statically"
    if sys.platform == "darwin":
        if not mx.metal.is_available():
            raise RuntimeError("Metal is not available to MLX on this Mac")
        if library and not (Path(library).parent / "mlx.metallib").is_file():
            raise FileNotFoundError(f"no mlx.metallib beside the loaded {library}")
        info = mx.metal.device_info()
        budget = info.get("max_recommended_working_set_size", 0) / 1e9
        return f"Metal: {info.get('device_name', 'GPU')}, working set {budget:.1f} GB; {where}"
    return f"MLX default device {mx.default_device()} (Metal is macOS only); {where}"


def loaded_libraries() -> list[str]:
    """Paths of the shared libraries this process has loaded (dyld on macOS, /proc/self/maps on Linux)."""
    if sys.platform == "darwin":
        import ctypes

        libc = ctypes.CDLL(None)
        libc._dyld_get_image_name.restype = ctypes.c_char_p
        return [libc._dyld_get_image_name(i).decode() for i in range(libc._dyld_image_count())]
    maps = Path("/proc/self/maps")
    if not maps.is_file():
        return []
    return sorted({line.split()[-1] for line in maps.read_text().splitlines() if line.count("/") and ".so" in line})


def _loaded_mlx_library() -> str:
    """The one libmlx this process loaded (two would mean two MLX builds in one bundle)."""
    found = sorted({p for p in loaded_libraries() if Path(p).name.startswith("libmlx.")})
    if len(found) > 1:
        raise RuntimeError(f"two MLX libraries are loaded: {', '.join(found)}")
    return found[0] if found else ""


def _qt(state: dict) -> str:
    for name in QT_MODULES:  # imported by name: the headless CLI never imports Qt otherwise
        importlib.import_module(name)
    qt_core = importlib.import_module("PySide6.QtCore")
    return f"PySide6 {qt_core.qVersion()}, pyqtgraph and the window's pages import"


def _bundle_root() -> Path | None:
    """The folder a frozen app runs from (the .app on a Mac), None when not frozen."""
    if not getattr(sys, "frozen", False):
        return None
    exe = Path(sys.executable).resolve()
    for parent in exe.parents:
        if parent.suffix == ".app":
            return parent
    return exe.parent


def _environment(state: dict) -> str:
    """What an app started from Finder finds without a shell: no HF_HOME, no proxy variables, no token in env."""
    import urllib.request

    from huggingface_hub import constants

    from macfinetune.core import secrets

    home = paths.data_home().resolve()
    bundle = _bundle_root()
    if bundle is not None and (home == bundle or bundle in home.parents):
        raise RuntimeError(f"the data folder {home} is inside the app bundle {bundle}")
    # On macOS urllib reads the system proxy settings (System Settings > Network) through _scproxy,
    # which httpx and huggingface_hub use: a bundle that lacks _scproxy silently ignores them.
    proxies = sorted(urllib.request.getproxies())
    if sys.platform == "darwin":
        importlib.import_module("_scproxy")
    token = "keychain" if secrets.token_store_available() else "no keychain (token from HF_TOKEN only)"
    return (f"hub cache {constants.HF_HUB_CACHE}; proxies: {', '.join(proxies) or 'none'}; "
            f"token: {token}; data folder outside the app")


def _data_folder(state: dict) -> str:
    home = paths.data_home()
    home.mkdir(parents=True, exist_ok=True)
    probe = home / f".selftest-{os.getpid()}"
    probe.write_text("ok", encoding="utf-8")
    probe.unlink()
    return f"writable: {home}"


def _tiny_model(state: dict) -> str:
    from macfinetune.backend import models, tinymodel

    folder = tinymodel.build_demo_model(state["tmp"] / "model")
    net, tokenizer, config = models.load_model(folder)
    state["model_dir"], state["model"], state["tokenizer"] = folder, net, tokenizer
    return f"built and loaded a {config.get('model_type')} model with a {len(tokenizer.vocab)}-token tokenizer"


def _train(state: dict) -> str:
    from macfinetune.backend import training
    from macfinetune.core.recipe import apply_overrides, load_recipe, with_paths

    recipe = with_paths(load_recipe(paths.shipped("recipes", "demo-tiny-lora.yaml")), str(state["model_dir"]),
                        str(paths.shipped("resources", "sample_data")))
    recipe = apply_overrides(recipe, ["iterations=4", "batch_size=2", "report_every=2", "eval_every=4",
                                      "save_every=4", "val_batches=1"])
    run_dir = state["tmp"] / "run"
    result = training.train_run(recipe, run_dir, lambda event: None)
    run_index.forget(run_dir)  # a temporary folder, not one of the user's runs
    if result.state != "finished":
        raise RuntimeError(f"the run ended {result.state}")
    state["run_dir"] = run_dir
    return f"4 steps of LoRA; checkpoint at iteration {result.best_iteration}"


def _fuse(state: dict) -> str:
    """Fuse writes a model card from huggingface_hub's template files: a bundler must ship them."""
    from macfinetune.backend import fusing, models

    done = fusing.fuse(state["run_dir"], "best", state["tmp"] / "fused")
    models.load_model(Path(done.out_dir))
    return f"fused the best checkpoint and loaded it back ({len(list(Path(done.out_dir).iterdir()))} files)"


def _generate(state: dict) -> str:
    from macfinetune.backend import generation
    from macfinetune.core.sampling import Sampling

    done = generation.generate(state["model"], state["tokenizer"], "Hello", Sampling(max_tokens=8, temperature=0.0))
    if done.generated_tokens < 1:
        raise RuntimeError("no tokens were generated")
    return f"{done.generated_tokens} tokens"


def _run_folder_removed(state: dict) -> str:
    import shutil

    run_dir = state["run_dir"]
    if not (run_dir / "metrics.jsonl").is_file():
        raise FileNotFoundError(f"the run folder has no metrics.jsonl: {run_dir}")
    shutil.rmtree(run_dir)
    if run_dir.exists():
        raise OSError(f"could not remove {run_dir}")
    return "written (metrics, checkpoint) and removed"
