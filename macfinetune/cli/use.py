"""`macfinetune fuse` (a checkpoint into a standalone model) and `generate` (base, tuned or both)."""

from __future__ import annotations

import sys
from pathlib import Path

from macfinetune import jobs
from macfinetune.cli.common import EXIT_OK, EXIT_STOPPED, run_folder, stop_on_ctrl_c, stopped_by
from macfinetune.cli.train import Progress
from macfinetune.core.control import JobControl
from macfinetune.core.events import Stage, TokenChunk
from macfinetune.core.sampling import Sampling, parse_adapter_spec


def add_parsers(sub) -> None:
    _add_fuse(sub)
    _add_generate(sub)


def _add_fuse(sub) -> None:
    p = sub.add_parser("fuse", help="fuse a checkpoint into a standalone model folder")
    p.add_argument("run_dir", type=run_folder, help="run folder or run name (or an mlx-lm adapter folder)")
    p.add_argument("--checkpoint", default="best", help="best, last or an iteration number (default best)")
    p.add_argument("--out", type=Path, help="output folder (default RUN_DIR/fused-<checkpoint>)")
    p.add_argument("--model", help="base model, when the adapter folder does not name it")
    p.add_argument("--dequantize", action="store_true", help="save full-precision weights")
    p.add_argument("--gguf", action="store_true", help="also export model.gguf (llama, mistral, qwen2, qwen3, "
                   "gemma3; a quantized base is de-quantized)")


def _add_generate(sub) -> None:
    p = sub.add_parser("generate", help="generate text from a model, base + checkpoint, or both side by side")
    p.add_argument("--model", help="base or fused model (default: the adapter's base model)")
    p.add_argument("--adapter", help="RUN_DIR or run name [:best|last|N] (default checkpoint: best)")
    p.add_argument("--compare", action="store_true", help="answer with the base model, then the tuned one")
    p.add_argument("--prompt", required=True, help="the user message")
    p.add_argument("--system", help="an optional system message")
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--temp", type=float, default=0.7, help="sampling temperature (0 = greedy)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)


def cmd_fuse(args) -> int:
    progress = Progress()
    result = jobs.fuse(progress.show, JobControl(), path=args.run_dir, which=str(args.checkpoint), out_dir=args.out,
                       dequantize=args.dequantize, gguf=args.gguf, model=args.model)
    print(f"fused model: {result.out_dir}")
    if result.gguf_path:
        print(f"gguf: {result.gguf_path}")
    return EXIT_OK


def cmd_generate(args) -> int:
    adapter = parse_adapter_spec(args.adapter) if args.adapter else None
    adapter = (run_folder(str(adapter[0])), adapter[1]) if adapter else None
    sampling = Sampling(max_tokens=args.max_tokens, temperature=args.temp, top_p=args.top_p, seed=args.seed)
    printer = _StreamPrinter(compare=args.compare)
    control = JobControl()
    with stop_on_ctrl_c(control) as stopper:
        results = jobs.generate(printer.show, control, model=args.model, adapter=adapter, prompt=args.prompt,
                                sampling=sampling, compare=args.compare, system=args.system)
    printer.close()
    for r in results:
        print(f"[{r.source}] {r.generated_tokens} tokens, {r.tokens_per_second:.1f} tok/s"
              f"{', stopped' if r.stopped else ''}", file=sys.stderr)
    return stopped_by(stopper, EXIT_STOPPED if control.stop_requested else EXIT_OK)


class _StreamPrinter:
    """Streams tokens as they arrive, under a header per model in compare mode."""

    def __init__(self, compare: bool):
        self.compare = compare
        self.source: str | None = None

    def show(self, event) -> None:
        if isinstance(event, Stage):
            print(event.message, file=sys.stderr)
        elif isinstance(event, TokenChunk):
            if event.source != self.source:
                if self.source is not None:
                    print()
                if self.compare:
                    print(f"--- {event.source} ---")
                self.source = event.source
            print(event.text, end="", flush=True)

    def close(self) -> None:
        if self.source is not None:
            print()


COMMANDS = {"fuse": cmd_fuse, "generate": cmd_generate}
