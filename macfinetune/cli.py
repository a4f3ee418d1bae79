"""The command line: the same backend jobs as the app, run headless on the main thread.

Exit codes: 0 done, 1 the job failed while running, 2 bad input (nothing written), 130 stopped
(143 when the stop was a SIGTERM).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from macfinetune import __version__, commands_data, commands_estimate, jobs
from macfinetune.core import paths, runs
from macfinetune.core.control import JobControl
from macfinetune.core.events import (
    CheckpointSaved,
    Heartbeat,
    RunContinued,
    RunFailed,
    RunFinished,
    RunPaused,
    RunStarted,
    Stage,
    TokenChunk,
    TrainReport,
    ValReport,
)
from macfinetune.core.plan import eta_seconds
from macfinetune.core.problems import Problem, ProblemError
from macfinetune.core.recipe import Recipe, apply_overrides, load_recipe, with_paths
from macfinetune.core.sampling import Sampling, parse_adapter_spec

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_STOPPED = 0, 1, 2, 130


# --- parser -----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="macfinetune",
        description="Fine-tune LLMs on your Mac with MLX: train, fuse, compare. "
        "Run without arguments (or `macfinetune app`) to open the app.",
    )
    parser.add_argument("--version", action="version", version=f"macfinetune {__version__}")
    parser.add_argument("--screenshot", metavar="OUT.png", help="render a page of the app offscreen with a demo run "
                        "loaded (fixed size) into OUT.png, then exit")
    parser.add_argument("--page", default="monitor", help="page for --screenshot: runs, new, monitor, checkpoints, "
                        "playground (default monitor)")
    parser.add_argument("--theme", choices=("light", "dark"), default="light", help="palette for --screenshot")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_demo(sub)
    _add_train(sub)
    _add_fuse(sub)
    _add_generate(sub)
    sub.add_parser("app", help="open the app's main window (the same as no command)")
    sub.add_parser("runs", help="list runs with status, best validation loss and size")
    commands_estimate.add_parsers(sub)
    commands_data.add_parsers(sub)
    sub.add_parser("login", help="store a Hugging Face token in the system keychain (read from stdin)")
    sub.add_parser("logout", help="remove the Hugging Face token from the system keychain")
    return parser


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="offline demo: tiny model + sample data -> train -> fuse -> base vs tuned")
    p.add_argument("--out", type=Path, help="folder for the demo (default: a new folder under your runs)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe setting")


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train from a recipe YAML")
    p.add_argument("recipe", nargs="?", help="recipe YAML (a file, or the name of a shipped recipe)")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR",
                   help="continue an interrupted or stopped run from its newest complete checkpoint")
    p.add_argument("--model", help="model folder or Hugging Face repo id (overrides model.path)")
    p.add_argument("--data", help="data folder or .jsonl file (overrides data.path)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting, e.g. --set training.batch_size=2 --set rank=16")
    p.add_argument("--out", type=Path, help="run folder to create (default: a new folder under your runs)")
    p.add_argument("--force", action="store_true",
                   help="start even when the memory estimate says the run will not fit (the memory guard still "
                        "stops it before the Mac swaps)")


def _add_fuse(sub) -> None:
    p = sub.add_parser("fuse", help="fuse a checkpoint into a standalone model folder")
    p.add_argument("run_dir", type=Path, help="run folder (or an mlx-lm adapter folder)")
    p.add_argument("--checkpoint", default="best", help="best, last or an iteration number (default best)")
    p.add_argument("--out", type=Path, help="output folder (default RUN_DIR/fused-<checkpoint>)")
    p.add_argument("--model", help="base model, when the adapter folder does not name it")
    p.add_argument("--dequantize", action="store_true", help="save full-precision weights")
    p.add_argument("--gguf", action="store_true", help="also export model.gguf (llama, mistral, mixtral)")


def _add_generate(sub) -> None:
    p = sub.add_parser("generate", help="generate text from a model, base + checkpoint, or both side by side")
    p.add_argument("--model", help="base or fused model (default: the adapter's base model)")
    p.add_argument("--adapter", help="RUN_DIR[:best|last|N] (default checkpoint: best)")
    p.add_argument("--compare", action="store_true", help="answer with the base model, then the tuned one")
    p.add_argument("--prompt", required=True, help="the user message")
    p.add_argument("--system", help="an optional system message")
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--temp", type=float, default=0.7, help="sampling temperature (0 = greedy)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)


# --- entry point ------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.screenshot:
        return _screenshot(args)
    if args.command in (None, "app"):
        return _open_app(parser)
    # data inspect tokenizes in batches (parallel helps); nothing forks after it
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true" if args.command == "data" else "false")
    handler = _COMMANDS[args.command]
    try:
        return handler(args)
    except ProblemError as e:
        _print_problems(e)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("\nstopped", file=sys.stderr)
        return EXIT_STOPPED


def _has_display() -> bool:
    """Linux needs an X11 or Wayland display (or an explicit QT_QPA_PLATFORM); macOS and Windows always have one."""
    if not sys.platform.startswith("linux"):
        return True
    return any(os.environ.get(k) for k in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"))


def _open_app(parser: argparse.ArgumentParser) -> int:
    if not _has_display():
        print("No display found (DISPLAY, WAYLAND_DISPLAY and QT_QPA_PLATFORM are unset), so the app cannot open; "
              "the commands below work without one. Try: macfinetune demo")
        parser.print_help()
        return EXIT_OK
    from macfinetune import app  # Qt is imported only here

    return app.run()


def _screenshot(args) -> int:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from macfinetune import app

    return app.screenshot(args.screenshot, args.page, args.theme)


def _print_problems(error: ProblemError) -> None:
    for problem in error.problems:
        print(f"error: {problem}", file=sys.stderr)


# --- train ------------------------------------------------------------------------------


def cmd_train(args) -> int:
    control = JobControl(pause_on_trouble=False)  # nobody can press "resume" on a headless run
    if args.resume:
        if args.recipe or args.model or args.data or args.set or args.out:
            raise ProblemError(Problem("--resume takes only the run folder; its recipe.yaml has the settings",
                                       field="resume", value=str(args.resume)))
        with _stop_on_ctrl_c(control) as stopper:
            result = jobs.resume(Progress().show, control, run_dir=args.resume)
        return _stopped_by(stopper, _train_exit(result))
    if not args.recipe:
        raise ProblemError(Problem("give a recipe (a YAML file or a shipped recipe name) or --resume RUN_DIR",
                                   field="recipe"))
    recipe = _read_recipe(args.recipe)
    recipe = with_paths(recipe, args.model, args.data)
    if args.set:
        recipe = apply_overrides(recipe, args.set)
    run_dir = args.out or runs.default_run_dir(paths.runs_home(), recipe.model.path or "model", recipe.method.type)
    with _stop_on_ctrl_c(control) as stopper:
        result = jobs.train(Progress().show, control, recipe=recipe, run_dir=run_dir, allow_over_budget=args.force,
                            confirm=_confirm_over_budget)
    return _stopped_by(stopper, _train_exit(result))


def _stopped_by(stopper: commands_data.StopOnCtrlC, code: int) -> int:
    """A run stopped by SIGTERM exits 143, by Ctrl-C 130."""
    return stopper.exit_code if code == EXIT_STOPPED else code


def _confirm_over_budget(problem: Problem) -> bool:
    """On a terminal, show the refusal and ask; elsewhere (scripts, CI) the answer is no."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        return False
    print(f"warning: {problem.message}", file=sys.stderr)
    try:
        answer = input("Start anyway? [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


def _read_recipe(name: str) -> Recipe:
    from macfinetune.core.catalog import recipe_path

    return load_recipe(recipe_path(name))


def _train_exit(result) -> int:
    if result.state == "failed":
        print(f"error: training failed: {result.message}\nthe run folder keeps what was saved: {result.run_dir}",
              file=sys.stderr)
        return EXIT_FAILED
    best = f"best checkpoint {result.best_iteration} (val loss {result.best_val_loss:.3f})" if result.best_iteration else "no validated checkpoint"
    print(f"{result.state} at iteration {result.iteration}; {best}\nrun folder: {result.run_dir}")
    if result.message:
        print(result.message)
    if result.state == "stopped":
        print(f"continue with: macfinetune train --resume {result.run_dir}")
    print(f"next: macfinetune generate --adapter {result.run_dir} --compare --prompt '...'"
          f"  |  macfinetune fuse {result.run_dir}")
    return EXIT_STOPPED if result.state == "stopped" else EXIT_OK


def _stop_on_ctrl_c(control: JobControl) -> commands_data.StopOnCtrlC:
    """First Ctrl-C: stop after the current step and save; a second one aborts."""
    return commands_data.StopOnCtrlC(control, "\nstopping after this step (Ctrl-C again to abort)...")


class Progress:
    """Renders training events: a live bar on a terminal, one line per report otherwise."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.last_val: float | None = None
        self._bar_open = False
        self._bar_text = ""
        self._last_beat_line = float("-inf")

    def show(self, event) -> None:
        if isinstance(event, TrainReport):
            self._bar(event)
        elif isinstance(event, Heartbeat):
            self._heartbeat(event)
        elif isinstance(event, TokenChunk):
            return
        else:
            text = self._line(event)
            if text:
                self._print(text)

    def _line(self, event) -> str | None:
        if isinstance(event, Stage):
            return event.message
        if isinstance(event, RunStarted):
            return (f"training {event.method}: {event.iterations} iterations ({event.epochs:.2f} epochs of "
                    f"{event.train_rows} rows, batch {event.batch_size} x accumulation {event.grad_accumulation}); "
                    f"{event.trainable_parameters:,} of {event.total_parameters:,} parameters trainable\n"
                    f"run folder: {event.run_dir}")
        if isinstance(event, ValReport):
            self.last_val = event.val_loss
            return f"iter {event.iteration:>6}  val loss {event.val_loss:.3f}  ({event.val_time:.1f}s)"
        if isinstance(event, CheckpointSaved):
            mark = "  * best" if event.is_best else ""
            return f"iter {event.iteration:>6}  saved {Path(event.path).name}{mark}"
        if isinstance(event, RunPaused):
            return f"paused at iteration {event.iteration}" + (f": {event.reason}" if event.reason else "")
        if isinstance(event, RunContinued):
            return f"resuming {event.run_dir} from checkpoint {event.iteration}"
        if isinstance(event, (RunFinished, RunFailed)):
            return None
        return None

    def _bar(self, r: TrainReport) -> None:
        width = 24
        done = int(width * r.iteration / max(r.total_iterations, 1))
        eta = eta_seconds(r.iteration, r.total_iterations, r.iterations_per_second)
        val = f"  val {self.last_val:.3f}" if self.last_val is not None else ""
        text = (f"[{'#' * done}{'.' * (width - done)}] {r.iteration}/{r.total_iterations}  "
                f"loss {r.train_loss:.3f}{val}  {r.tokens_per_second:,.0f} tok/s  "
                f"mem {r.peak_memory_gb:.2f} GB  ETA {_duration(eta)}")
        self._bar_text = text
        if self.tty:
            self.stream.write("\r\033[K" + text)
            self.stream.flush()
            self._bar_open = True
        else:
            self._print(text)

    def _heartbeat(self, beat: Heartbeat) -> None:
        """Between reports: how long the current step has run and the tokens so far (a line every
        30 s when not on a terminal)."""
        text = f"iter {beat.iteration + 1} running {_duration(beat.step_elapsed_s)}  {beat.trained_tokens:,} tokens"
        if self.tty:
            self.stream.write("\r\033[K" + (f"{self._bar_text}  |  " if self._bar_text else "") + text)
            self.stream.flush()
            self._bar_open = True
        elif time.monotonic() - self._last_beat_line >= 30:
            self._last_beat_line = time.monotonic()
            self._print(text)

    def _print(self, text: str) -> None:
        if self._bar_open:
            self.stream.write("\n")
            self._bar_open = False
        self.stream.write(text + "\n")
        self.stream.flush()


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


# --- fuse, generate, runs ---------------------------------------------------------------


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
    sampling = Sampling(max_tokens=args.max_tokens, temperature=args.temp, top_p=args.top_p, seed=args.seed)
    printer = _StreamPrinter(compare=args.compare)
    control = JobControl()
    with _stop_on_ctrl_c(control):
        results = jobs.generate(printer.show, control, model=args.model, adapter=adapter, prompt=args.prompt,
                                sampling=sampling, compare=args.compare, system=args.system)
    printer.close()
    for r in results:
        print(f"[{r.source}] {r.generated_tokens} tokens, {r.tokens_per_second:.1f} tok/s", file=sys.stderr)
    return EXIT_OK


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


def cmd_runs(args) -> int:
    home = paths.runs_home()
    found = runs.list_runs(home)
    if not found:
        print(f"no runs yet in {home}")
        return EXIT_OK
    print(f"{'RUN':<48} {'STATUS':<12} {'ITER':>11} {'BEST VAL':>9} {'SIZE':>9}")
    for summary in found:
        s = summary.status
        state = s.state if s else "unknown"
        progress = f"{s.iteration}/{s.total_iterations}" if s else "-"
        best = f"{s.best_val_loss:.3f}" if s and s.best_val_loss is not None else "-"
        print(f"{summary.path.name:<48} {state:<12} {progress:>11} {best:>9} {_size(summary.size_bytes):>9}")
    print(f"\n{len(found)} runs in {home}")
    return EXIT_OK


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


# --- demo -------------------------------------------------------------------------------


def cmd_demo(args) -> int:
    import time

    from macfinetune.backend import demo

    out = args.out or runs.default_run_dir(paths.runs_home(), "demo", "tiny")
    control = JobControl()
    started = time.perf_counter()
    with _stop_on_ctrl_c(control):
        result = demo.run_demo(out, Progress().show, control, args.set)
    if result.state == "failed":
        print(f"error: the demo's training failed; see {result.run_dir}", file=sys.stderr)
        return EXIT_FAILED
    _print_demo(result, time.perf_counter() - started)
    return EXIT_OK if result.state == "finished" else EXIT_STOPPED


def _print_demo(result, seconds: float) -> None:
    print()
    if result.first_val_loss is not None and result.best_val_loss is not None:
        print(f"validation loss {result.first_val_loss:.3f} -> {result.best_val_loss:.3f} "
              f"(best checkpoint: iteration {result.best_iteration})")
    for answer in result.answers:
        print(f"\nprompt: {answer.prompt}\n  base : {answer.base.strip()!r}\n  tuned: {answer.tuned.strip()!r}")
    print(f"\nrun folder: {result.run_dir}\nfused model: {result.fused_dir}\ndone in {seconds:.0f} s")


def cmd_login(args) -> int:
    import getpass

    from macfinetune.core.secrets import save_hf_token

    token = getpass.getpass("Hugging Face token: ") if sys.stdin.isatty() else sys.stdin.readline()
    save_hf_token(token)
    print("token saved in the system keychain")
    return EXIT_OK


def cmd_logout(args) -> int:
    from macfinetune.core.secrets import clear_hf_token

    print("token removed" if clear_hf_token() else "no token was stored")
    return EXIT_OK


_COMMANDS = {"train": cmd_train, "fuse": cmd_fuse, "generate": cmd_generate, "runs": cmd_runs, "demo": cmd_demo,
             "login": cmd_login, "logout": cmd_logout,
             "data": commands_data.cmd_data, "models": commands_data.cmd_models,
             "estimate": commands_estimate.cmd_estimate, "recipes": commands_estimate.cmd_recipes,
             "recommend": commands_estimate.cmd_recommend}
