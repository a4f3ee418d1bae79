"""Run an export planned by ``core.exports.plan_export``: fuse the checkpoint and write it where the
target wants it. Folders are written under a temporary name and renamed at the end (a stopped or
failed export leaves nothing); ``check()`` is called between steps and may raise to stop.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from macfinetune.backend import fusing
from macfinetune.core import exports, ollama
from macfinetune.core.events import ExportFinished, Stage
from macfinetune.core.exports import ExportPlan

Check = Callable[[], None]


def run_export(plan: ExportPlan, emit: Callable[[object], None], check: Check = lambda: None) -> ExportFinished:
    return _RUNNERS[plan.target](plan, emit, check)


def _load(plan: ExportPlan, emit, check: Check, *, gguf: bool = False) -> fusing.Loaded:
    options = plan.options
    loaded = fusing.load_fused(plan.run_dir, plan.checkpoint, model=options.get("model"),
                               dequantize=gguf or bool(options.get("dequantize")), emit=emit,
                               gguf_dtype=options.get("dtype"), plan_gguf=gguf)
    check()
    return loaded


def _files(folder: Path) -> tuple[str, ...]:
    return tuple(sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()))


def _mlx(plan: ExportPlan, emit, check: Check) -> ExportFinished:
    loaded = _load(plan, emit, check)
    out = Path(plan.location)
    with fusing.partial_dir(out) as tmp:
        emit(Stage("export", f"Saving the fused model to {out}"))
        fusing.save_fused(tmp, loaded)
        check()
    return ExportFinished("mlx", str(out), _files(out))


def _lmstudio(plan: ExportPlan, emit, check: Check) -> ExportFinished:
    done = _mlx(plan, emit, check)
    out = Path(done.location)
    note = f"LM Studio lists it under My Models as {out.parent.name}/{out.name}"
    return ExportFinished("lmstudio", done.location, done.files, notes=(note,))


def _gguf(plan: ExportPlan, emit, check: Check, with_modelfile: bool = False) -> ExportFinished:
    loaded = _load(plan, emit, check, gguf=True)
    out = Path(plan.location)
    translation = _translation(loaded.gguf_plan) if with_modelfile else None
    with fusing.partial_dir(out) as tmp:
        emit(Stage("export", f"Writing {out / 'model.gguf'}"))
        fusing.write_loaded_gguf(loaded, tmp / "model.gguf", check)
        if translation is not None:
            text = ollama.modelfile("model.gguf", translation, plan.options.get("system"))
            (tmp / "Modelfile").write_text(text, encoding="utf-8")
        check()
    if translation is None:
        return ExportFinished("gguf", str(out), _files(out), notes=(f"{loaded.gguf_plan.dtype} GGUF, "
                                                                    f"{loaded.gguf_plan.arch_name} architecture",))
    command = ollama.create_command(plan.options.get("name") or plan.name, str(out))
    return ExportFinished("ollama", str(out), _files(out), command=command, notes=(translation.reason,))


def _ollama(plan: ExportPlan, emit, check: Check) -> ExportFinished:
    return _gguf(plan, emit, check, with_modelfile=True)


def _translation(gguf_plan) -> ollama.Translation:
    vocab = gguf_plan.vocab
    template = vocab.special.chat_template
    if isinstance(template, list):  # named templates: the default one
        template = next((t["template"] for t in template if t.get("name") == "default"), None)

    def token(kind: str) -> str:
        i = vocab.special.special_token_ids.get(kind)
        text = vocab.tokens[i] if i is not None and i < len(vocab.tokens) else ""
        return text.decode("utf-8") if isinstance(text, bytes) else text

    return ollama.translate(template, token("bos"), token("eos"))


def _hub(plan: ExportPlan, emit, check: Check) -> ExportFinished:
    from macfinetune.backend import hub_upload
    from macfinetune.core.secrets import load_hf_token

    options = plan.options
    contents = options.get("contents", "model")
    hub_upload.check_reachable(plan.location, token=load_hf_token(), endpoint=options.get("endpoint"))  # before fusing
    base = fusing.base_model_of(_adapters(plan), options.get("model"))
    staging = Path(tempfile.mkdtemp(prefix="macfinetune-upload-"))
    try:
        if contents == "model":
            fusing.save_fused(staging, _load(plan, emit, check))
        else:
            _copy_adapters(plan, staging)
        (staging / "README.md").write_text(exports.model_card(plan.run_dir, plan, base), encoding="utf-8")
        check()
        url = hub_upload.upload_folder(staging, plan.location, token=load_hf_token(),
                                       private=options.get("private", True), endpoint=options.get("endpoint"),
                                       message=options.get("commit_message") or f"Upload {plan.name} from macfinetune",
                                       emit=emit, check=check)
        files = _files(staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    private = "private" if options.get("private", True) else "public"
    return ExportFinished("hub", url, files, notes=(f"{private} repository {plan.location}, {contents}",))


def _adapters(plan: ExportPlan) -> Path:
    from macfinetune.core import runs

    return runs.adapters_dir(plan.run_dir)


def _copy_adapters(plan: ExportPlan, staging: Path) -> None:
    """The checkpoint's weights as adapters.safetensors beside adapter_config.json (mlx-lm's layout)."""
    from macfinetune.core import runs

    adapters = _adapters(plan)
    weights, _ = runs.resolve_checkpoint(plan.run_dir, plan.checkpoint)
    shutil.copy2(adapters / runs.ADAPTER_CONFIG, staging / runs.ADAPTER_CONFIG)
    shutil.copy2(weights, staging / runs.FINAL_ADAPTERS)


_RUNNERS = {"mlx": _mlx, "lmstudio": _lmstudio, "gguf": _gguf, "ollama": _ollama, "hub": _hub}
