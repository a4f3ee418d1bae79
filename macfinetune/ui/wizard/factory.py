"""The registry's entry for the New-run page: ``wizard_page(session, settings)`` (ui/pages.py).

It builds the ``WizardServices`` the page needs from the app's ``Session``:

- the machine from this computer's memory (psutil; the table's working-set rule), never by
  importing MLX on the GUI thread;
- Train: ``session.prepare`` + ``session.start`` (the window then shows the Monitor); a run the
  estimator says will not fit, once confirmed, goes to ``engine.train(..., allow_over_budget=True)``
  through ``session.start(allow_over_budget=True)``;
- tokenizer and chat-template work from ``macfinetune.data_jobs``, called on the wizard's workers;
- new runs in the session's data folder.
- Download: ``session.submit("download", jobs.download, ...)``; the session's ``jobEvent`` reaches
  ``WizardPage.on_event`` (the Model step keeps only its own job's events); Cancel is ``session.cancel``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from macfinetune import data_jobs
from macfinetune.core import models_catalog
from macfinetune.core.hardware import GIB, Machine, machine_from_memory
from macfinetune.core.problems import Problem, ProblemError
from macfinetune.core.recipe import Recipe
from macfinetune.ui.wizard.page import WizardPage
from macfinetune.ui.wizard.services import WizardServices


def wizard_page(session, settings, parent=None) -> WizardPage:
    services = WizardServices(
        machine=this_machine(), start_training=lambda recipe, run_dir, allow: start(session, recipe, run_dir, allow),
        token_counter=data_jobs.token_counter, template_renderer=data_jobs.template_renderer,
        supported_types=data_jobs.supported_model_types, hub_cache_scanner=data_jobs.cached_models,
        runs_home=session.data_folder)
    services.download, services.cancel_download = _downloads(session)
    services.mac_rows = lambda: _mac_rows(session)
    services.measure = lambda recipe: _measure(session, recipe)
    services.machines = lambda: _machines(session)
    services.start_on_hosts = lambda recipe, run_dir, allow, hostfile: start(session, recipe, run_dir, allow, hostfile)
    services.check_hosts = lambda recipe, hostfile, copy: _check_hosts(session, recipe, hostfile, copy)
    services.cancel_job = session.cancel
    services.is_training = lambda: session.is_training
    page = WizardPage(services, parent)
    page.setObjectName("newRunPage")
    session.jobEvent.connect(page.on_event)
    session.stateChanged.connect(page.on_session_state)
    return page


def _downloads(session):
    """(download(repo_id) -> job id, cancel()) through the session; cancel stops the latest download."""
    latest: list[int] = []

    def download(repo_id: str) -> int:
        from macfinetune import jobs  # imports no MLX until the job runs on the engine

        handle = session.submit("download", jobs.download, repo_id=repo_id, **models_catalog.download_options())
        latest[:] = [handle.id]
        return handle.id

    def cancel() -> None:
        for job_id in latest:
            session.cancel(job_id)

    return download, cancel


def _mac_rows(session) -> list:
    """This Mac's correction rows: the session's runs folder and the 'Measure this Mac' probes beside it
    (the data folder's calibration/, paths.calibration_home() unless Preferences moved the data folder)."""
    from macfinetune.core import calibration

    return calibration.this_mac_rows(session.data_folder(), session.data_folder().parent / "calibration")


def _measure(session, recipe: Recipe) -> int:
    from macfinetune import jobs  # imports no MLX until the job runs on the engine

    return session.submit("measure", jobs.measure_mac, recipe=recipe).id


def _check_hosts(session, recipe: Recipe, hostfile, copy: bool) -> int:
    from macfinetune import jobs  # imports no MLX until the job runs on the engine

    return session.submit("check_hosts", jobs.check_hosts, hostfile=hostfile, recipe=recipe, copy=copy).id


def this_machine() -> Machine:
    import psutil

    device = "gpu" if sys.platform == "darwin" else "cpu"
    memory = psutil.virtual_memory().total / GIB
    return machine_from_memory(round(memory, 1), source=f"this computer: {memory:.0f} GB of memory", device=device)


def _machines(session):
    """Preferences -> Machines, or None (no file, or one that cannot be read: the wizard offers this Mac)."""
    from macfinetune.core import hosts
    from macfinetune.core.problems import ProblemError

    try:
        return hosts.read_machines(session.machines_file().parent)
    except ProblemError:
        return None


def start(session, recipe: Recipe, run_dir: Path, allow_over_budget: bool, hostfile=None) -> None:
    if session.is_training:
        raise ProblemError(Problem("a run is training: stop it or wait for it to end, then press Train",
                                   field="train"))
    session.prepare(recipe, run_dir)
    session.start(allow_over_budget=allow_over_budget, hostfile=hostfile)
