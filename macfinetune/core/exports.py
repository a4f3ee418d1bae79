"""Exports of a run's checkpoint: the plan (pure, checked before anything runs) and the model card.

Targets: ``mlx`` (a fused MLX folder), ``gguf`` (a folder with ``model.gguf``), ``ollama`` (the GGUF
and a ``Modelfile``), ``lmstudio`` (the fused MLX model in LM Studio's models folder, as
``<publisher>/<name>``) and ``hub`` (the fused model or the adapters uploaded to a Hugging Face repo).
Every folder export is written to a temporary folder and renamed at the end; the hub upload is one
commit at the end.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from macfinetune.core import models_catalog, runs
from macfinetune.core.problems import Problem, ProblemError

TARGETS = ("gguf", "ollama", "lmstudio", "hub", "mlx")
GGUF_DTYPES = ("f16", "bf16", "f32")
HUB_CONTENTS = ("model", "adapters")
LMSTUDIO_PUBLISHER = "macfinetune"
_OPTIONS = {  # target -> the options it takes (anything else is refused by name)
    "mlx": {"dequantize", "model"},
    "gguf": {"dtype", "model"},
    "ollama": {"dtype", "model", "system", "name"},
    "lmstudio": {"dequantize", "model", "publisher", "name", "models_dir"},
    "hub": {"dequantize", "model", "contents", "private", "endpoint", "commit_message"},
}
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_OLLAMA_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*(:[a-z0-9._-]+)?$")  # Ollama's name:tag (only the command uses it)


@dataclass(frozen=True)
class ExportPlan:
    """What an export will do, decided before it runs (``plan_export``)."""

    target: str
    run_dir: Path
    checkpoint: str  # best, last or an iteration number, as asked
    iteration: int | None  # None: the final adapters
    location: str  # the folder it creates, or the hub repo id
    name: str  # run-checkpoint, used for folder, GGUF and Ollama names
    options: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return str(self.iteration) if self.iteration is not None else "final"


def plan_export(run_dir: Path, checkpoint: str | int, target: str, dest: str | Path | None = None,
                **options) -> ExportPlan:
    """The export of ``checkpoint`` of ``run_dir`` to ``target``; ProblemError names a bad value."""
    if target not in TARGETS:
        raise ProblemError(Problem(f"export target must be one of {', '.join(TARGETS)}, got {target!r}",
                                   field="target", value=target))
    unknown = sorted(set(options) - _OPTIONS[target])
    if unknown:
        raise ProblemError(Problem(f"the {target} export takes no option {', '.join(unknown)} (it takes "
                                   f"{', '.join(sorted(_OPTIONS[target]))})", field=unknown[0]))
    run_dir = Path(run_dir)
    _, iteration = runs.resolve_checkpoint(run_dir, str(checkpoint))
    root = _run_root(run_dir)
    name = _slug(f"{root.name}-{iteration if iteration is not None else 'final'}")
    _check_options(target, options)
    location = _location(target, root, name, dest, options)
    return ExportPlan(target, run_dir, str(checkpoint), iteration, location, name, dict(options))


def plan_export_name(run_dir: Path, checkpoint: str | int, target: str) -> str:
    """The folder name an export of ``checkpoint`` gets by default (``<run>-<iteration>-<target>``)."""
    _, iteration = runs.resolve_checkpoint(Path(run_dir), str(checkpoint))
    label = iteration if iteration is not None else "final"
    return f"{_slug(f'{_run_root(Path(run_dir)).name}-{label}')}-{target}"


def _run_root(run_dir: Path) -> Path:
    adapters = runs.adapters_dir(run_dir)
    return adapters.parent if adapters.name == runs.ADAPTERS else adapters


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-.") or "model"


def _check_options(target: str, options: dict) -> None:
    dtype = options.get("dtype")
    if dtype is not None and dtype not in GGUF_DTYPES:
        raise ProblemError(Problem(f"GGUF type must be one of {', '.join(GGUF_DTYPES)}, got {dtype!r}",
                                   field="dtype", value=dtype))
    contents = options.get("contents", "model")
    if target == "hub" and contents not in HUB_CONTENTS:
        raise ProblemError(Problem(f"hub upload contents must be model or adapters, got {contents!r}",
                                   field="contents", value=contents))
    if '"""' in (options.get("system") or ""):  # Ollama's Modelfile ends a SYSTEM """...""" block at the first one
        raise ProblemError(Problem('the system prompt holds three double quotes in a row ("""), which end Ollama\'s '
                                   "SYSTEM block in the Modelfile; write it without them", field="system",
                                   value=options["system"]))
    name = options.get("name")
    if name is not None and not (_OLLAMA_NAME if target == "ollama" else _NAME).match(name):
        tag = ", with an optional :tag" if target == "ollama" else ""
        raise ProblemError(Problem(f"name must be lower-case letters, digits, '.', '_' or '-'{tag}, got {name!r}",
                                   field="name", value=name))


def _location(target: str, root: Path, name: str, dest, options: dict) -> str:
    if target == "hub":
        if not dest or not _REPO_ID.match(str(dest)):
            got = f"got {dest!r}" if dest else "pass --out your-name/model-name"
            raise ProblemError(Problem(f"the hub export needs a repository id like 'your-name/model-name'; {got}",
                                       field="dest", value=str(dest)))
        return str(dest)
    if target == "lmstudio":
        folder = lmstudio_models_dir(options.get("models_dir") or dest)
        folder = folder / options.get("publisher", LMSTUDIO_PUBLISHER) / options.get("name", name)
    else:
        folder = Path(dest) if dest else root / "exports" / f"{name}-{target}"
    problems = runs.check_new_dir(folder, f"{target} export folder")
    if problems:
        raise ProblemError(problems)
    return str(folder)


def lmstudio_models_dir(override: str | Path | None = None, home: Path | None = None) -> Path:
    """LM Studio's models folder as model discovery finds it (its configured downloads folder first);
    ``~/.lmstudio/models`` when LM Studio has none yet."""
    if override:
        return Path(override).expanduser()
    found = models_catalog.lmstudio_dirs(home)
    return found[0] if found else (home or Path.home()) / ".lmstudio" / "models"


# --- the model card ---------------------------------------------------------------------------------


def model_card(run_dir: Path, plan: ExportPlan, base_model: str, home: Path | None = None) -> str:
    """README.md for the hub: base model, method, data, results, best checkpoint and the recipe."""
    root = _run_root(run_dir)
    status = runs.read_status(root)
    method = (status.method if status else "") or _adapter_method(root)
    best = runs.best_checkpoint(root)
    train_loss = _last(runs.read_metrics(root), "train", "train_loss")
    contents = plan.options.get("contents", "model")
    home = str(home or Path.home())
    recipe = _read(root / "recipe.yaml").replace(home, "~")
    lines = ["---"]
    if _REPO_ID.match(base_model):
        lines.append(f"base_model: {base_model}")
    lines += ["library_name: mlx", "tags:", "- mlx", "- macfinetune", f"- {method or 'fine-tuned'}", "---", "",
              f"# {plan.location.split('/')[-1]}", "",
              f"Fine-tuned from `{base_model.replace(home, '~')}` with **{method.upper() or 'unknown method'}** "
              f"using [macfinetune](https://github.com/) on MLX. This repository holds the "
              f"{'fused model' if contents == 'model' else 'adapters (load them on the base model)'} of "
              f"checkpoint **{plan.label}**.", "", "## Training data", ""]
    lines += _data_lines(root)
    lines += ["", "## Results", "", "| | |", "|---|---|", f"| exported checkpoint | {plan.label} |"]
    if best is not None:
        lines.append(f"| best checkpoint | iteration {best[0]} (validation loss {best[1]:.4f}) |")
    if train_loss is not None:
        lines.append(f"| last training loss | {train_loss:.4f} |")
    if status is not None:
        lines.append(f"| iterations | {status.iteration} of {status.total_iterations} ({status.state}) |")
    lines += ["", "## Use", "", "```sh", _use_line(plan, base_model), "```"]
    if recipe:
        lines += ["", "## Recipe", "", "```yaml", recipe.rstrip(), "```"]
    return "\n".join(lines) + "\n"


def _data_lines(root: Path) -> list[str]:
    out = []
    for split in ("train", "valid"):
        path = root / "data" / f"{split}.jsonl"
        if path.is_file():
            rows = sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
            out.append(f"- {split}: {rows} rows")
    return out or ["- (the run folder holds no copy of the data)"]


def _use_line(plan: ExportPlan, base: str) -> str:
    if plan.options.get("contents", "model") == "adapters":
        return f'mlx_lm.generate --model {base} --adapter-path {plan.location} --prompt "Hello"'
    return f'mlx_lm.generate --model {plan.location} --prompt "Hello"'


def _adapter_method(root: Path) -> str:
    try:
        return json.loads((runs.adapters_dir(root) / runs.ADAPTER_CONFIG).read_text())["fine_tune_type"]
    except (OSError, ValueError, KeyError, ProblemError):
        return ""


def _last(records: list[dict], event: str, key: str):
    values = [r[key] for r in records if r.get("event") == event and r.get(key) is not None]
    return values[-1] if values else None


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return ""
