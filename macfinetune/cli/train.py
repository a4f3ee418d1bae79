"""`macfinetune train` (a new run, or --resume), `runs` (the run history) and `demo`."""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

from macfinetune import jobs
from macfinetune.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_STOPPED,
    run_folder,
    shell_command,
    stop_on_ctrl_c,
    stopped_by,
)
from macfinetune.core import paths, runs
from macfinetune.core.control import JobControl
from macfinetune.core.events import (
    CheckpointSaved,
    Heartbeat,
    PreferenceReport,
    RunContinued,
    RunFailed,
    RunFinished,
    RunPaused,
    RunStarted,
    SamplesSaved,
    Stage,
    TokenChunk,
    TrainReport,
    ValReport,
)
from macfinetune.core.plan import eta_seconds
from macfinetune.core.problems import Problem, ProblemError
from macfinetune.core.recipe import Recipe, apply_overrides, load_recipe, with_paths


def add_parsers(sub) -> None:
    _add_demo(sub)
    _add_train(sub)
    runs_parser = sub.add_parser("runs", help="list runs with status, best validation loss and size")
    runs_parser.add_argument("--in", dest="folder", type=Path, metavar="DIR",
                             help="list the runs in this folder (default: your runs and every run made with --out)")
    runs_parser.add_argument("--json", action="store_true",
                             help="print a JSON list: each run's full path, its status.json fields and its size")


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="offline demo: tiny model + sample data -> train -> fuse -> base vs tuned")
    p.add_argument("--out", type=Path, help="folder for the demo (default: a new folder in the demo area of your data folder)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe setting")


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train from a recipe YAML")
    p.add_argument("recipe", nargs="?", help="recipe YAML (a file, or the name of a shipped recipe)")
    p.add_argument("--resume", type=run_folder, metavar="RUN_DIR",
                   help="continue an interrupted or stopped run from its newest complete checkpoint")
    p.add_argument("--model", help="model folder or Hugging Face repo id (overrides model.path)")
    p.add_argument("--data", help="dataset file or folder in any supported format (overrides data.path): "
                   ".jsonl/.json (chat, tools, completions, text, Alpaca, ShareGPT), .csv/.tsv tables, "
                   ".txt/.md documents, a folder of train/valid/test files or documents, a saved Hugging Face "
                   "dataset, or a Hugging Face dataset name; `macfinetune data inspect PATH` checks it")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting, e.g. --set training.batch_size=2 --set rank=16")
    p.add_argument("--out", type=Path, help="run folder to create (default: a new folder under your runs)")
    p.add_argument("--hosts", type=Path, metavar="HOSTFILE",
                   help="train on several Macs: MLX's hostfile (JSON; the first host keeps the run folder), "
                        "see docs/multi-mac.md; `macfinetune hosts check HOSTFILE` checks them first")
    p.add_argument("--ranks", type=int, metavar="N",
                   help="train with N processes on this machine over loopback (what --hosts does across Macs)")
    p.add_argument("--force", action="store_true",
                   help="start even when the memory estimate says the run will not fit (the memory guard still "
                        "stops it before the Mac swaps)")


def cmd_train(args) -> int:
    control = JobControl(pause_on_trouble=False)  # nobody can press "resume" on a headless run
    if args.resume:
        if args.recipe or args.model or args.data or args.set or args.out:
            raise ProblemError(Problem("--resume takes only the run folder (and --hosts or --ranks); its recipe.yaml "
                                       "has the settings",
                                       field="resume", value=str(args.resume)))
        hostfile = _hostfile(args)
        with stop_on_ctrl_c(control) as stopper:
            if hostfile is None:
                result = jobs.resume(Progress().show, control, run_dir=args.resume)
            else:
                result = jobs.resume_hosts(Progress().show, control, run_dir=args.resume, hostfile=hostfile)
        return stopped_by(stopper, _train_exit(result))
    if not args.recipe:
        raise ProblemError(Problem("give a recipe (a YAML file or a shipped recipe name) or --resume RUN_DIR",
                                   field="recipe"))
    recipe = _read_recipe(args.recipe)
    recipe = with_paths(recipe, args.model, args.data)
    if args.set:
        recipe = apply_overrides(recipe, args.set)
    run_dir = args.out or runs.default_run_dir(paths.runs_home(), recipe.model.path or "model", recipe.method.type)
    hostfile = _hostfile(args)
    with stop_on_ctrl_c(control) as stopper:
        if hostfile is None:
            result = jobs.train(Progress().show, control, recipe=recipe, run_dir=run_dir,
                                allow_over_budget=args.force, confirm=_confirm_over_budget)
        else:
            result = jobs.train_hosts(Progress().show, control, recipe=recipe, run_dir=run_dir, hostfile=hostfile,
                                      allow_over_budget=args.force, confirm=_confirm_over_budget)
    return stopped_by(stopper, _train_exit(result))


def _hostfile(args):
    """--hosts FILE or --ranks N (not both); None for a run in this process."""
    from macfinetune.core import hosts

    if args.hosts and args.ranks:
        raise ProblemError(Problem("give --hosts or --ranks, not both", field="hosts", value=str(args.hosts)))
    if args.ranks is not None:
        if args.ranks < 1:
            raise ProblemError(Problem("--ranks must be 1 or more", field="ranks", value=args.ranks))
        return hosts.local_hostfile(args.ranks)
    return hosts.load_hostfile(args.hosts) if args.hosts else None


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
    if result.state == "stopped" and not runs.complete_checkpoints(result.run_dir):
        print("nothing was saved: the run stopped before its first checkpoint\n"
              f"start again with: {shell_command('macfinetune', 'train', result.run_dir / runs.RECIPE)}")
        return EXIT_STOPPED
    if result.state == "stopped":
        print(f"continue with: {shell_command('macfinetune', 'train', '--resume', result.run_dir)}")
    print(f"next: {shell_command('macfinetune', 'generate', '--adapter', result.run_dir, '--compare', '--prompt', 'your question')}"
          f"  |  {shell_command('macfinetune', 'fuse', result.run_dir)}")
    return EXIT_STOPPED if result.state == "stopped" else EXIT_OK


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
        if isinstance(event, PreferenceReport) and event.split != "train":  # training batches: the bar's job
            return (f"iter {event.iteration:>6}  {event.split} {event.objective}: accuracy {event.accuracy:.0%}  "
                    f"reward margin {event.reward_margin:+.3f}  (chosen {event.rewards_chosen:+.3f}, rejected "
                    f"{event.rewards_rejected:+.3f})  prefers chosen {event.likelihood_accuracy:.0%}")
        if isinstance(event, SamplesSaved):
            return "\n".join(f"iter {event.iteration:>6}  sample {p[:40]!r} -> {t[:80]!r}"
                             for p, t in zip(event.prompts, event.texts, strict=True))
        return None

    def _bar(self, r: TrainReport) -> None:
        width = 24
        done = int(width * r.iteration / max(r.total_iterations, 1))
        eta = eta_seconds(r.iteration, r.total_iterations, r.iterations_per_second)
        val = f"  val {self.last_val:.3f}" if self.last_val is not None else ""
        text = (f"[{'#' * done}{'.' * (width - done)}] {r.iteration}/{r.total_iterations}  "
                f"loss {r.train_loss:.3f}{val}  {r.tokens_per_second:,.0f} tok/s{_real(r)}  "
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


def cmd_runs(args) -> int:
    from macfinetune.core import run_index

    home = args.folder or paths.runs_home()
    if args.folder and not args.folder.is_dir():
        what = "is a file, not a folder" if args.folder.exists() else "folder not found"
        print(f"error: {args.folder} (--in): {what}", file=sys.stderr)
        return EXIT_BAD_INPUT
    found = runs.list_runs(home) if args.folder else run_index.all_runs(home)
    if args.json:
        print(json.dumps([{"path": str(f.path), "name": _run_name(f.path, home), "size_bytes": f.size_bytes,
                           **(dataclasses.asdict(f.status) if f.status else {"state": "unknown"})} for f in found],
                         indent=2))
        return EXIT_OK
    if not found:
        print(f"no runs yet in {home}")
        return EXIT_OK
    print(f"{'RUN':<48} {'STATUS':<12} {'ITER':>11} {'BEST VAL':>9} {'SIZE':>9}")
    for summary in found:
        s = summary.status
        state = s.state if s else "unknown"
        progress = f"{s.iteration}/{s.total_iterations}" if s else "-"
        best = f"{s.best_val_loss:.3f}" if s and s.best_val_loss is not None else "-"
        print(f"{_run_name(summary.path, home):<48} {state:<12} {progress:>11} {best:>9} {_size(summary.size_bytes):>9}")
    outside = 0 if args.folder else _outside(found, home)
    where = f"({len(found) - outside} in {home}, {outside} elsewhere: --out or demo)" if outside else f"in {home}"
    print(f"\n{_plural(len(found), 'run')} {where}")
    return EXIT_OK


def _run_name(folder: Path, home: Path) -> str:
    """Runs under ``home`` by their relative name (a demo's run shows its demo folder); others by full path."""
    try:
        return folder.resolve().relative_to(Path(home).resolve()).as_posix()
    except ValueError:
        return str(folder)


def _outside(found, home: Path) -> int:
    return sum(not s.path.resolve().is_relative_to(Path(home).resolve()) for s in found)


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def cmd_demo(args) -> int:
    out = args.out or runs.default_run_dir(paths.demo_home(), "demo", "tiny")
    control = JobControl()
    started = time.perf_counter()
    with stop_on_ctrl_c(control) as stopper:
        result = jobs.demo(Progress().show, control, out_dir=out, overrides=args.set)
    if result.state == "failed":
        print(f"error: the demo's training failed; see {result.run_dir}", file=sys.stderr)
        return EXIT_FAILED
    _print_demo(result, time.perf_counter() - started)
    return stopped_by(stopper, EXIT_OK if result.state == "finished" else EXIT_STOPPED)


def _print_demo(result, seconds: float) -> None:
    print()
    if result.first_val_loss is not None and result.best_val_loss is not None:
        print(f"validation loss {result.first_val_loss:.3f} -> {result.best_val_loss:.3f} "
              f"(best checkpoint: iteration {result.best_iteration})")
    for answer in result.answers:
        print(f"\nprompt: {answer.prompt}\n  base : {answer.base.strip()!r}\n  tuned: {answer.tuned.strip()!r}")
    print(f"\nbase model: {result.model_dir} (reuse it: {shell_command('--model', result.model_dir)})"
          f"\nrun folder: {result.run_dir}\n{_demo_outcome(result)}\ndone in {seconds:.0f} s")


def _demo_outcome(result) -> str:
    if result.fused_dir is None:
        before = "stopped before the first checkpoint" if result.state == "stopped" else "no validated checkpoint"
        return f"{before}; nothing to fuse"
    stopped = f"stopped early: fused the best checkpoint so far (iteration {result.best_iteration})\n"
    return f"{stopped if result.state == 'stopped' else ''}fused model: {result.fused_dir}"


COMMANDS = {"train": cmd_train, "runs": cmd_runs, "demo": cmd_demo}


def _real(r: TrainReport) -> str:
    """The real tokens/s (non-padding tokens the loss trains on) beside mlx-lm's figure."""
    return "" if r.real_tokens_per_second is None else f" ({r.real_tokens_per_second:,.0f} real)"
