"""One process of a run on several hosts: ``python -m macfinetune.backend.rank`` under ``mlx.launch``.

mlx-lm's trainer does the distributed part itself once ``mx.distributed.init()`` finds a group:
each host takes its share of every batch and the gradients are averaged. Around it:
1. rank 0 trains into the run folder and prints every event as one line (``core.wire``) for the
   launcher; the other ranks train the same steps in a private scratch folder. Every rank prints a
   ``HostSample`` (its tokens/s and memory) at each train report, for the Monitor's row per Mac.
2. a stop (a "stop" line on stdin, which ``mlx.launch`` gives to every rank, SIGTERM or SIGINT)
   is agreed by all ranks at the next update boundary (``loop.agree_on_stop``): all stop together
   and rank 0 saves a checkpoint. A pause ("pause" on stdin, or memory pressure on any host with
   ``--pause-on-trouble``) is agreed the same way: every host pauses until none wants the pause
   ("resume" on stdin).
3. if a peer is gone, a collective raises ("connection to a peer was lost") and the run is
   recorded as failed with its last checkpoint; a rank that cannot finish within ``_GRACE_S``
   after a stop leaves (the watchdog), so no rank is left hanging.
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
from pathlib import Path

from macfinetune.core import wire
from macfinetune.core.control import JobControl
from macfinetune.core.problems import Problem, ProblemError

_GRACE_S = 60.0  # after a stop, how long a rank may take to reach the boundary and save
EXIT_PROBLEM = 2


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    import mlx.core as mx

    group = mx.distributed.init()
    rank, size = group.rank(), group.size()
    _arm_faults_for(rank)
    control = JobControl(pause_on_trouble=args.pause_on_trouble)
    _listen_for_stop(control, rank)
    scratch = None if rank == 0 else Path(tempfile.mkdtemp(prefix=f"macfinetune-rank{rank}-"))
    try:
        result = _run(args, rank, size, control, scratch)
    except ProblemError as e:
        print(f"rank {rank} on {socket.gethostname()}: {e}", file=sys.stderr, flush=True)
        return EXIT_PROBLEM
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    if result.state == "failed":
        print(f"rank {rank} on {socket.gethostname()}: {result.message}", file=sys.stderr, flush=True)
        return 1
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="macfinetune-rank")
    p.add_argument("--run-dir", type=Path, required=True)
    p.add_argument("--recipe", type=Path, help="a new run's resolved recipe file on every host")
    p.add_argument("--recipe-b64", help="a new run's resolved recipe as base64 of its YAML (what the launcher "
                   "passes: no host needs a file of rank 0's Mac); without either, resume --run-dir")
    p.add_argument("--pause-on-trouble", action="store_true", help="memory pressure pauses every host (the app "
                   "can resume them); without it, it stops the run (the command line)")
    return p


def _run(args, rank: int, size: int, control: JobControl, scratch: Path | None):
    from macfinetune.backend import training

    emit = _HostReporter(rank, socket.gethostname(), _print_event if rank == 0 else _drop)
    if args.recipe is None and args.recipe_b64 is None:
        run_dir = args.run_dir if rank == 0 else _copy_for_resume(resume_source(args.run_dir, Path.home()), scratch)
        _barrier()  # the copies are taken before rank 0 marks the run as running again
        return training.resume_run(run_dir, emit, control, hosts=size)
    run_dir = args.run_dir if rank == 0 else scratch / "run"
    return training.train_run(_recipe(args), run_dir, emit, control,
                              allow_over_budget=True, hosts=size, shadow=rank != 0)


def _recipe(args):
    from macfinetune.core.recipe import load_recipe, parse_recipe

    if args.recipe is not None:
        return load_recipe(args.recipe)
    return parse_recipe(base64.urlsafe_b64decode(args.recipe_b64.encode("ascii")).decode("utf-8"), "--recipe-b64")


def resume_source(run_dir: Path, home: Path) -> Path:
    """The run folder a rank resumes from: the same path when this Mac has it (rank 0's Mac, or a shared
    disk), else the copy the launcher sent to this Mac's resume staging folder."""
    if Path(run_dir).is_dir():
        return Path(run_dir)
    from macfinetune.core.hosts import resume_staging

    staged = resume_staging(home, run_dir)
    if staged.is_dir():
        return staged
    raise ProblemError(Problem(f"the run folder is not on {socket.gethostname()}, neither at {run_dir} nor at "
                               f"{staged}: resume from the app or `macfinetune train --resume` on the first Mac, "
                               "which sends it", file=str(run_dir)))


def _arm_faults_for(rank: int) -> None:
    """Test-only: ``MACFINETUNE_FAULT_RANK=N`` keeps the fault injection (``core.atomic``) for rank N only."""
    from macfinetune.core import atomic

    chosen = os.environ.get("MACFINETUNE_FAULT_RANK")
    if chosen is not None and chosen != str(rank):
        os.environ.pop(atomic.FAULT_ENV, None)


def _barrier() -> None:
    import mlx.core as mx

    mx.eval(mx.distributed.all_sum(mx.array(1), stream=mx.cpu))


_PRINT_LOCK = threading.Lock()  # events come from the training thread and the memory watch thread


def _print_event(event) -> None:
    with _PRINT_LOCK:
        sys.stdout.write(wire.encode(event) + "\n")
        sys.stdout.flush()


def _drop(event) -> None:
    pass


class _HostReporter:
    """Every rank's emit: passes events on (rank 0 prints them all) and prints a ``HostSample`` of its own
    at each train report, with the memory of its latest sample, so the Monitor has a row per Mac."""

    def __init__(self, rank: int, host: str, emit):
        self.rank, self.host, self.emit, self.memory = rank, host, emit, None

    def __call__(self, event) -> None:
        from macfinetune.core import events

        self.emit(event)
        if isinstance(event, events.MemorySample):
            self.memory = event
        elif isinstance(event, events.TrainReport):
            m = self.memory
            _print_event(events.HostSample(
                self.rank, self.host, event.iteration, event.tokens_per_second, event.peak_memory_gb,
                m.process_gb if m else None, m.system_used_gb if m else None, m.system_total_gb if m else None,
                m.swap_used_gb if m else None))


def _copy_for_resume(run_dir: Path, scratch: Path) -> Path:
    """What a rank other than 0 needs to resume: the run folder's settings, data and checkpoints."""
    copy = scratch / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("metrics.jsonl", "base_model"))
    if (run_dir / "base_model").exists():
        (copy / "base_model").symlink_to(run_dir / "base_model")
    return copy


def _listen_for_stop(control: JobControl, rank: int) -> None:
    def stop(*_):
        if not control.stop_requested:
            control.request_stop()
            threading.Thread(target=_watchdog, name="rank-watchdog", daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    def read_stdin():
        for line in sys.stdin:
            word = line.strip()
            if word == "stop":
                stop()
            elif word == "pause":
                control.pause()
            elif word == "resume":
                control.resume()

    threading.Thread(target=read_stdin, name="rank-stdin", daemon=True).start()


def _watchdog() -> None:
    """A rank waiting forever on a peer that will never answer leaves instead."""
    threading.Event().wait(_GRACE_S)
    print(f"{socket.gethostname()}: no peer answered within {_GRACE_S:.0f} s of the stop; leaving",
          file=sys.stderr, flush=True)
    os._exit(3)


if __name__ == "__main__":
    sys.exit(main())
