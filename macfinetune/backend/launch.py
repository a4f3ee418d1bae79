"""Start a run on several hosts through ``mlx.launch`` and turn its ranks' output back into events.

No protocol of our own: ``mlx.launch`` starts ``python -m macfinetune.backend.rank`` on every host
(over SSH; locally for 127.0.0.1) and gives every rank the same stdin; rank 0 prints its events as
``core.wire`` lines, which come back here on stdout and are emitted as if the run were in-process.
This module runs no MLX itself (the ranks do).
"""

from __future__ import annotations

import base64
import json
import os
import queue
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import replace
from pathlib import Path

from macfinetune.core import hosts as hosts_mod
from macfinetune.core import runs, wire
from macfinetune.core.control import JobControl
from macfinetune.core.events import Stage
from macfinetune.core.hosts import Hostfile
from macfinetune.core.problems import Problem, ProblemError
from macfinetune.core.recipe import Recipe, dump_recipe

_LAUNCH = "import sys; from mlx._distributed_utils.launch import main; sys.exit(main())"
_DIED = re.compile(r"Node with rank (\d+) (?:exited with code (-?\d+)|was killed)")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_STOP_GRACE_S = 90.0  # after "stop": the ranks agree, save and exit; then they are terminated


def train_on_hosts(recipe: Recipe, run_dir: Path, emit, control: JobControl, hostfile: Hostfile,
                   allow_over_budget: bool = False, confirm=None, python: str | None = None):
    """A new run on every host of ``hostfile`` (rank 0 = the first host owns ``run_dir``)."""
    from macfinetune.backend import models, training

    pre = training.preflight(recipe, run_dir, hostfile.size)
    folder = models.resolve_model_path(recipe.model.path)
    memory = training.memory_gate(pre, folder, allow_over_budget, confirm)  # this Mac's budget, per host
    if memory.warning:
        emit(Stage("train", memory.warning))
    layout = hosts_mod.layout(pre.plan.batch_size, hostfile.size)
    emit(Stage("train", layout.explain(recipe.training.learning_rate)))
    command = ["--run-dir", str(Path(run_dir).resolve()),
               "--recipe-b64", recipe_argument(training.resolved_recipe(recipe, folder))]
    return _launch(command + _trouble_flag(control), Path(run_dir), emit, control, hostfile, python)


def recipe_argument(recipe: Recipe) -> str:
    """The resolved recipe as one command-line word (base64 of its YAML): every rank gets it with the
    command, so no Mac needs a file that only this one has."""
    return base64.urlsafe_b64encode(dump_recipe(recipe).encode("utf-8")).decode("ascii")


def resume_on_hosts(run_dir: Path, emit, control: JobControl, hostfile: Hostfile, python: str | None = None):
    """Continue a run on these hosts (as many as started it, fewer, or one): the global batch stays."""
    run_dir = Path(run_dir).expanduser().resolve()
    global_batch = hosts_mod.read_global_batch(run_dir)
    if global_batch:
        hosts_mod.resumed_layout(global_batch, hostfile.size, str(run_dir))
    send_run_folder(run_dir, emit, control, hostfile)
    return _launch(["--run-dir", str(run_dir), *_trouble_flag(control)], run_dir, emit, control, hostfile, python)


def send_run_folder(run_dir: Path, emit, control: JobControl, hostfile: Hostfile) -> None:
    """Before a resume: every other Mac gets the run folder (its checkpoints and data) in its resume
    staging folder, since only rank 0's Mac has it; rsync sends only what changed since last time."""
    from macfinetune.backend import hostcheck

    def stopped() -> bool:
        return control.stop_requested

    for host in hostfile.hosts[1:]:
        if hosts_mod.is_local(host):
            continue
        try:
            sent = not stopped() and hostcheck.copy_run(host, run_dir, lambda m: emit(Stage("train", m)),
                                                        lambda m: emit(Stage("train", f"sending: {m}")),
                                                        stopped)
        except RuntimeError as e:  # rsync or ssh failed: their words, naming the host
            raise ProblemError(Problem(f"the run folder could not be sent to the other Macs: {e}; nothing was "
                                       "trained", file=str(run_dir))) from None
        if not sent:
            raise ProblemError(Problem("stopped while sending the run folder to the other Macs; nothing was "
                                       "trained", file=str(run_dir)))


def _trouble_flag(control: JobControl) -> list[str]:
    """In the app (someone can resume) memory pressure on any host pauses them all; headless it stops."""
    return ["--pause-on-trouble"] if control.pause_on_trouble else []


def launch_command(hostfile: Hostfile, hostfile_path: Path, python: str, rank_args: list[str]) -> list[str]:
    """The ``mlx.launch`` command line (its own hostfile format; rank 0 is the first host)."""
    return [python, "-c", _LAUNCH, "--backend", hostfile.backend, "--hostfile", str(hostfile_path),
            "--python", python, "--cwd", os.getcwd(), "--", "-m", "macfinetune.backend.rank", *rank_args]


def _launch(rank_args: list[str], run_dir: Path, emit, control: JobControl, hostfile: Hostfile, python: str | None):
    python = python or sys.executable
    with tempfile.TemporaryDirectory(prefix="macfinetune-hosts-") as tmp:
        path = Path(tmp) / "hostfile.json"
        path.write_text(json.dumps(hostfile.to_json()), encoding="utf-8")
        emit(Stage("train", f"Starting on {hostfile.size} hosts ({hostfile.backend}): "
                            + ", ".join(h.name for h in hostfile.hosts)))
        process = subprocess.Popen(launch_command(hostfile, path, python, rank_args), stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
        log = _follow(process, emit, control)
    return _result(run_dir, hostfile, log)


def _follow(process: subprocess.Popen, emit, control: JobControl) -> deque:
    """Emit rank 0's events until every rank has exited; forward a stop; keep the last log lines."""
    lines: queue.Queue = queue.Queue()
    readers = [threading.Thread(target=_read, args=(stream, lines), daemon=True)
               for stream in (process.stdout, process.stderr)]
    for reader in readers:
        reader.start()
    log: deque = deque(maxlen=200)
    stop_sent, paused_sent = None, False
    while process.poll() is None or any(r.is_alive() for r in readers) or not lines.empty():
        if control.stop_requested and stop_sent is None:
            stop_sent = time.monotonic()
            _send(process, "stop\n")
        if control.paused != paused_sent and stop_sent is None:  # the app's Pause and Resume, to every rank
            paused_sent = control.paused
            _send(process, "pause\n" if paused_sent else "resume\n")
        if stop_sent is not None and time.monotonic() - stop_sent > _STOP_GRACE_S and process.poll() is None:
            process.terminate()
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            continue
        event = wire.decode(line)
        if event is not None:
            emit(event)
        elif line.strip():
            log.append(_ANSI.sub("", line.rstrip()))
    process.wait()
    return log


def _read(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line)


def _send(process: subprocess.Popen, text: str) -> None:
    try:
        process.stdin.write(text)
        process.stdin.flush()
    except (BrokenPipeError, ValueError, OSError):
        pass


def _result(run_dir: Path, hostfile: Hostfile, log: deque):
    from macfinetune.backend.training import RunResult

    died = _deaths(log, hostfile)
    status = runs.read_status(run_dir)
    if status is None:  # rank 0 stopped before the run folder existed: a bad input or a host problem
        raise ProblemError(Problem("the run did not start: " + ("; ".join(died) or _last_words(log)),
                                   file=str(run_dir)))
    if died and status.state not in ("finished",):
        message = "; ".join(died) + ". The run keeps its last checkpoint; continue it with --resume"
        status = replace(status, state="failed" if status.state != "stopped" else "stopped", message=message,
                         updated=time.time())
        runs.write_status(run_dir, status)
    return RunResult(run_dir, status.state, status.iteration, status.best_iteration, status.best_val_loss,
                     status.message)


def _deaths(log: deque, hostfile: Hostfile) -> list[str]:
    """'rank 1 (studio.local) exited with code -9: <what it said last>' for every rank that failed."""
    found = []
    for line in log:
        match = _DIED.search(line)
        if match:
            rank = int(match.group(1))
            code = match.group(2)
            host = hostfile.hosts[rank].name if rank < hostfile.size else "?"
            how = f"exited with code {code}" if code is not None else "was killed"
            if code is not None and int(code) < 0:
                how = f"was killed by signal {-int(code)}"
            said = next((ln for ln in reversed(log) if ln.startswith(f"rank {rank} on ")), "")
            found.append(f"rank {rank} ({host}) {how}" + (f": {said.split(': ', 1)[-1]}" if said else ""))
    return found


def _last_words(log: deque) -> str:
    return next((line for line in reversed(log) if line and not line.startswith("Traceback")), "no output")
