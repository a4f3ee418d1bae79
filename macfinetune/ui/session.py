"""The one subscriber to ``Engine.event``: routes job events to the pages and forwards their intent.

Pages never touch the engine. They listen to the session's signals and call its methods.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, Signal

from macfinetune.core import events, paths, runs
from macfinetune.core.events import JobCancelled, JobEvent, JobFailed, JobFinished, JobStarted

if TYPE_CHECKING:
    from macfinetune.core.recipe import Recipe

TRAINING_JOBS = ("train", "resume", "demo", "train_hosts", "resume_hosts")  # jobs whose events drive the Monitor and the toolbar


class Session(QObject):
    trainingEvent = Signal(object)  # what a train/resume job said (the inner event)
    runOpened = Signal(str)  # a run folder to show in the Monitor
    stateChanged = Signal(str)  # idle, starting, running, paused
    runsChanged = Signal()  # a run started, changed status or ended
    preparedChanged = Signal()
    jobEvent = Signal(object)  # every JobEvent of a non-training job (pages filter by ``job_id``)
    testPrompt = Signal(str, str)
    duplicateRun = Signal(str)  # a run folder: open the New-run wizard filled from its recipe.yaml

    def __init__(self, engine, settings, parent=None):
        super().__init__(parent)
        self.engine, self.settings = engine, settings
        self.state = "idle"
        self.job_id: int | None = None
        self.run_dir: str = ""
        self.prepared: tuple[Recipe, Path] | None = None
        self._after_job: list[Callable[[], None]] = []
        self._caffeinate: subprocess.Popen | None = None
        engine.event.connect(self._on_engine_event)

    # --- preferences the session applies ---------------------------------------------

    def data_folder(self) -> Path:
        value = self.settings.value("prefs/data_folder", "")
        return Path(value) / "runs" if value else paths.runs_home()

    def opened_folders(self) -> list[Path]:
        return [Path(p) for p in (self.settings.value("runs/opened", []) or []) if p]

    @property
    def is_training(self) -> bool:
        return self.state in ("starting", "running", "paused")

    # --- intent -----------------------------------------------------------------------

    def prepare(self, recipe: Recipe, run_dir: Path) -> None:
        """The run Start will start (the New run wizard sets it; tests set it directly)."""
        self.prepared = (recipe, Path(run_dir))
        self.preparedChanged.emit()

    def machines_file(self) -> Path:
        """Preferences -> Machines: the app's hostfile (MLX's format) in the data folder."""
        return self.data_folder().parent / "machines.json"

    def start(self, allow_over_budget: bool = False, hostfile=None) -> None:
        """Start the prepared run; ``allow_over_budget`` is the user's explicit "start anyway"; with a
        ``hostfile`` (``core.hosts.Hostfile`` of two or more Macs) the run trains on all of them."""
        if self.prepared is None or self.is_training:
            return
        recipe, run_dir = self.prepared
        interval = int(self.settings.value("prefs/report_every", 0) or 0)
        if interval > 0:
            from macfinetune.core.recipe import (
                apply_overrides,  # imported on first use: start-up paints sooner
            )

            recipe = apply_overrides(recipe, [f"report_every={interval}"])
        self.prepared = None
        self.preparedChanged.emit()
        if hostfile is not None and hostfile.size > 1:
            from macfinetune import jobs  # the job module imports no MLX at import time

            handle = self.engine.submit("train_hosts", jobs.train_hosts, recipe=recipe, run_dir=run_dir,
                                        hostfile=hostfile, allow_over_budget=allow_over_budget)
            self._begin(handle, str(run_dir))
            return
        self._begin(self.engine.train(recipe, run_dir, allow_over_budget=allow_over_budget), str(run_dir))

    def start_demo(self) -> None:
        """The offline demo (tiny model, sample data) as a run: it shows live in the Monitor like any other."""
        if self.is_training:
            return
        from macfinetune import jobs  # the job module imports no MLX at import time

        out_dir = runs.default_run_dir(paths.demo_home(), "demo", "tiny")
        self._begin(self.engine.submit("demo", jobs.demo, out_dir=out_dir), str(out_dir / "demo-tiny-lora"))

    def submit(self, name: str, fn: Callable, /, **args):
        """Queue any other job (download, fuse, export, generate...) on the engine; its JobEvents come back on
        ``jobEvent`` with the returned handle's ``id``."""
        return self.engine.submit(name, fn, **args)

    def cancel(self, job_id: int) -> bool:
        """Cancel a job this session submitted: a queued one never runs, a running one stops at its next check."""
        return self.engine.cancel(job_id)

    def resume_run(self, run_dir: Path) -> None:
        """Continue a stopped or interrupted run from its newest checkpoint (the engine's resume job); a run
        started on several Macs continues on the Machines of Preferences when its global batch divides over
        them (``core.hosts.resume_hosts_for``), else on this Mac."""
        if self.is_training:
            return
        from macfinetune.core import hosts
        from macfinetune.core.problems import ProblemError

        try:
            machines = hosts.read_machines(self.machines_file().parent)
        except ProblemError:
            machines = None
        on = hosts.resume_hosts_for(Path(run_dir), machines)
        if on is not None:
            from macfinetune import jobs  # the job module imports no MLX at import time

            self._begin(self.engine.submit("resume_hosts", jobs.resume_hosts, run_dir=Path(run_dir), hostfile=on),
                        str(run_dir))
            return
        self._begin(self.engine.resume(Path(run_dir)), str(run_dir))

    def _begin(self, handle, run_dir: str) -> None:
        self.job_id, self.run_dir = getattr(handle, "id", None), run_dir
        self._remember(run_dir)
        self._set_state("starting")

    def pause(self) -> None:
        if self.state == "running":
            self.engine.pause_current()

    def resume(self) -> None:
        if self.state == "paused":
            self.engine.resume_current()

    def stop(self, then: Callable[[], None] | None = None) -> None:
        """Stop after the current step (training saves a checkpoint); ``then`` runs when the job has ended."""
        if then is not None:
            if not self.is_training:
                then()
                return
            self._after_job.append(then)
        self.engine.stop_current()

    def open_run(self, run_dir: Path) -> None:
        self._remember(str(run_dir))
        self.runOpened.emit(str(run_dir))

    def _remember(self, run_dir: str) -> None:
        opened = [str(p) for p in self.opened_folders() if str(p) != run_dir]
        self.settings.setValue("runs/opened", [run_dir, *opened][:50])

    # --- events -----------------------------------------------------------------------

    def _on_engine_event(self, job_event) -> None:
        if not isinstance(job_event, JobEvent):
            return
        if job_event.job not in TRAINING_JOBS:
            self.jobEvent.emit(job_event)
            return
        if self.job_id is not None and job_event.job_id != self.job_id:
            return
        event = job_event.event
        if isinstance(event, JobStarted):
            self._set_state("running")
        elif isinstance(event, (JobFinished, JobCancelled)):
            self._on_job_finished()
            return
        if isinstance(event, JobFailed):  # the engine's last word for a failed job
            self.trainingEvent.emit(event)
            self._on_job_finished()
            return
        if isinstance(event, events.RunPaused):
            self._set_state("paused")
        elif isinstance(event, events.RunResumed):
            self._set_state("running")
        if isinstance(event, (events.RunStarted, events.RunContinued, events.RunFinished, events.RunFailed,
                              JobFailed)):
            self.runsChanged.emit()
        self.trainingEvent.emit(event)

    def _on_job_finished(self) -> None:
        self.job_id = None
        self._set_state("idle")
        self.runsChanged.emit()
        callbacks, self._after_job = self._after_job, []
        for callback in callbacks:
            callback()

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self._keep_awake(state in ("starting", "running"))
            self.stateChanged.emit(state)

    def _keep_awake(self, on: bool) -> None:
        """While training on a Mac with the preference on, ``caffeinate`` keeps it from idle-sleeping."""
        if on and self._caffeinate is None and sys.platform == "darwin" and self.settings.value(
                "prefs/keep_awake", True, type=bool):
            self._caffeinate = subprocess.Popen(["caffeinate", "-i", "-w", str(os.getpid())])
        elif not on and self._caffeinate is not None:
            self._caffeinate.terminate()
            self._caffeinate.wait(5)
            self._caffeinate = None
