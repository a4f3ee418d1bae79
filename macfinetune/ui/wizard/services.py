"""What the wizard needs from the application, injected by the composition root (app.py).

The wizard never talks to the engine or the backend itself; it gets these callables. app.py
builds them from the session and the engine; tests pass fakes or the real backend functions.

ADAPTER (tokenizing): the histogram needs the model's tokenizer, which lives in ``backend``
(``backend.tokens.token_counter``), which ``ui`` must not import. Until the engine has an
``inspect_dataset`` job that streams token counts, app.py injects ``token_counter`` and the wizard
calls it on a worker thread (tokenizers are not MLX: no MLX stream is touched). Replace it with
the engine job when that lands; only ``data_step.DataJob`` calls it. The data preview's chat
template (``template_renderer``) is injected the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from macfinetune.core import timing
from macfinetune.core.hardware import Machine
from macfinetune.core.recipe import Recipe

CountTokens = Callable[[Sequence[dict]], Sequence[tuple]]


@dataclass
class WizardServices:
    machine: Machine  # this Mac: the memory budget every verdict is judged against
    start_training: Callable[[Recipe, Path, bool], object]  # engine.train(recipe, run_dir, allow_over_budget)
    show_monitor: Callable[[], None] = lambda: None  # switch the window to the Monitor page
    token_counter: Callable[[str], CountTokens] | None = None  # ADAPTER: backend.tokens.token_counter
    template_renderer: Callable[[str], Callable[[dict], object]] | None = None  # ADAPTER:
    #                                               backend.chat_preview.template_renderer (the preview)
    supported_types: Collection[str] | Callable[[], Collection[str]] | None = None  # the model types mlx-lm
    #      implements, or a function returning them (called on the scan's worker thread: it imports mlx-lm)
    model_folders: list[Path] = field(default_factory=list)  # folders the user added (Preferences)
    hub_cache_scanner: Callable | None = None  # ADAPTER: backend.hub.cached_models (huggingface_hub's scan)
    download: Callable[[str], object] | None = None  # starts a download job, returns its id; events via on_event
    cancel_download: Callable[[], None] | None = None
    runs_home: Callable[[], Path] | None = None  # where new runs go (default: core.paths.runs_home)
    rate: timing.Rate | None = None  # training throughput for the duration (default: the seeds', this chip)
    mac_rows: Callable[[], list] | None = None  # this Mac's finished runs as correction rows
    #        (core.calibration.this_mac_rows; called on a worker thread: it reads run folders)
    measure: Callable[[Recipe], int] | None = None  # starts 'Measure this Mac' (jobs.measure_mac), returns its id
    machines: Callable[[], object] | None = None  # the Machines of Preferences (core.hosts.Hostfile or None)
    start_on_hosts: Callable[[Recipe, Path, bool, object], object] | None = None  # a run on those Macs
    check_hosts: Callable[[Recipe, object, bool], int] | None = None  # jobs.check_hosts(recipe, hostfile, copy):
    #                                       its id; the events (job 'check_hosts') reach on_event
    is_training: Callable[[], bool] = lambda: False  # a run is training now (Train waits for it to end)
    cancel_job: Callable[[int], object] | None = None  # stop a job the wizard started (Check these Macs, a copy)
