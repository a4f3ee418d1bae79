"""`macfinetune export RUN --target gguf|ollama|lmstudio|hub|mlx`: a checkpoint where other tools load it."""

from __future__ import annotations

import sys

from macfinetune import jobs
from macfinetune.cli.common import EXIT_OK, EXIT_STOPPED, StopOnCtrlC, run_folder
from macfinetune.core.control import JobControl
from macfinetune.core.events import ExportFinished, Progress, Stage
from macfinetune.core.exports import GGUF_DTYPES, HUB_CONTENTS, TARGETS


def add_parsers(sub) -> None:
    p = sub.add_parser("export", help="export a checkpoint: GGUF (llama.cpp), Ollama, LM Studio, the Hugging Face "
                       "hub, or a fused MLX folder")
    p.add_argument("run_dir", type=run_folder, help="run folder or run name (or an mlx-lm adapter folder)")
    p.add_argument("--target", required=True, choices=TARGETS, help="where the model goes")
    p.add_argument("--checkpoint", default="best", help="best, last or an iteration number (default best)")
    p.add_argument("--out", help="output folder (gguf, ollama, mlx; default RUN_DIR/exports/...), LM Studio's models "
                   "folder (lmstudio; default the one LM Studio uses), or the repository id (hub: owner/name)")
    p.add_argument("--model", help="base model, when the adapter folder does not name it")
    p.add_argument("--dtype", choices=GGUF_DTYPES, help="GGUF weight type (default: bf16 for a bf16 model, else f16)")
    p.add_argument("--name", help="model name (Ollama's `ollama create NAME`; the LM Studio folder name)")
    p.add_argument("--system", help="system prompt for the Ollama Modelfile")
    p.add_argument("--dequantize", action="store_true", help="save full-precision weights (mlx, lmstudio, hub)")
    p.add_argument("--contents", choices=HUB_CONTENTS, default=None, help="hub: upload the fused model (default) "
                   "or only the adapters")
    p.add_argument("--public", action="store_true", help="hub: make a new repository public (default private)")


_FLAGS = ("dtype", "name", "system", "dequantize", "contents", "model")  # passed on only when given


def _options(args) -> dict:
    options = {}
    for key in _FLAGS:
        value = getattr(args, key)
        if value not in (None, False):
            options[key] = value  # a flag the target does not take is refused by name (exit 2)
    if args.target == "hub":
        options["private"] = not args.public
    return options


def cmd_export(args) -> int:
    control = JobControl()
    with StopOnCtrlC(control, "\nstopping the export (Ctrl-C again to abort)...") as stopper:
        try:
            result = jobs.export_model(_show, control, run_dir=args.run_dir, checkpoint=str(args.checkpoint),
                                       target=args.target, dest=args.out, **_options(args))
        except jobs.Cancelled:
            print("export stopped; nothing was left behind", file=sys.stderr)
            return stopper.exit_code if stopper.signum else EXIT_STOPPED
    _print_result(result)
    return EXIT_OK


def _show(event) -> None:
    if isinstance(event, Stage):
        print(event.message, file=sys.stderr)
    elif isinstance(event, Progress) and event.job == "export":
        print(f"{event.message} ({event.done / 1e6:.1f} of {event.total / 1e6:.1f} MB)", file=sys.stderr)


def _print_result(result: ExportFinished) -> None:
    print(f"{result.target} export: {result.location}")
    for name in result.files:
        print(f"  {name}")
    for note in result.notes:
        print(note)
    if result.command:
        print(f"then run: {result.command}")


COMMANDS = {"export": cmd_export}
