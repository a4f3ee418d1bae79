"""The New-run page: the steps in a list, the memory gauge above them, Back/Next below.

One ``WizardState`` holds the values; every change goes through ``set_value`` and ends in
``refresh``, which asks core for the recipe or the errors and redraws the gauge and the steps.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QApplication,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QPushButton,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from macfinetune.core import opening, paths, timing, wizard
from macfinetune.core.problems import ProblemError
from macfinetune.core.recipe import Recipe
from macfinetune.ui.wizard.data_step import DataStep
from macfinetune.ui.wizard.gauge import MemoryGauge
from macfinetune.ui.wizard.method_step import MethodStep
from macfinetune.ui.wizard.model_step import ModelStep
from macfinetune.ui.wizard.review_step import ReviewStep
from macfinetune.ui.wizard.services import WizardServices
from macfinetune.ui.wizard.settings_step import SettingsStep
from macfinetune.ui.wizard.state import WizardState

STEPS = ("model", "data", "method", "settings", "review")
_TITLES = {"model": "1  Model", "data": "2  Data", "method": "3  Method", "settings": "4  Settings",
           "review": "5  Review"}


class WizardPage(QWidget):
    """Constructor shape of every page: ``WizardPage(services, parent=None)``."""

    page_id = "wizard"
    title = "New run"
    changed = Signal()  # the values or what the steps know changed (after refresh)

    def __init__(self, services: WizardServices, parent=None):
        super().__init__(parent)
        self.services = services
        self.state = WizardState()
        self.recipe: Recipe | None = None
        self.errors: dict[str, str] = {}
        self.advice: dict[str, str] = {}  # unusual but valid settings (core.recommend.advice)
        self.recommended = False  # the settings are the recommendation's, untouched since
        self.training = False  # a run is training (services.is_training, at the last refresh)
        self.rate = services.rate or timing.seed_rate(services.machine.chip)
        self.mac_rows: list = []  # this Mac's finished runs: the estimate's correction (read on a worker)
        self._workers: list = []
        self.gauge = MemoryGauge(self)
        self.gauge.setObjectName("gauge")
        self.step_list = QListWidget(self)  # before the steps: Tab goes from the list into the step
        self.steps = {"model": ModelStep(self), "data": DataStep(self), "method": MethodStep(self),
                      "settings": SettingsStep(self), "review": ReviewStep(self)}
        self._build()
        self.setAcceptDrops(True)
        app = QApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.shutdown)  # the window closes pages without asking them
        self.refresh()
        self.reload_mac_rows()

    def reload_mac_rows(self) -> None:
        """Read this Mac's finished runs on a worker (each is a metrics file), then redraw the estimate."""
        if self.services.mac_rows is None:
            return
        from macfinetune.ui.wizard.worker import Worker

        worker = Worker(lambda report, cancelled: self.services.mac_rows())
        self._workers.append(worker)
        worker.done.connect(self._on_mac_rows_done)
        worker.start()

    def _on_mac_rows_done(self, rows) -> None:
        self.mac_rows = list(rows or [])
        self.refresh()

    # --- layout ----------------------------------------------------------------------------

    def _build(self) -> None:
        self.step_list.setObjectName("stepList")
        self.step_list.addItems([_TITLES[s] for s in STEPS])
        self.step_list.setFixedWidth(self.step_list.fontMetrics().horizontalAdvance("5  Settings") + 48)
        self.stack = QStackedWidget(self)
        for name in STEPS:
            self.stack.addWidget(self.steps[name])
        self.step_list.currentRowChanged.connect(self._on_step_list_changed)
        self.back = QPushButton("Back", self)
        self.next = QPushButton("Next", self)
        self.back.clicked.connect(lambda: self.go(self.stack.currentIndex() - 1))
        self.next.clicked.connect(lambda: self.go(self.stack.currentIndex() + 1))
        self.blockers = QLabel(self)
        self.blockers.setObjectName("blockers")
        self.blockers.setWordWrap(True)
        self._lay_out()
        self.step_list.setCurrentRow(0)

    def _lay_out(self) -> None:
        body = QHBoxLayout()
        body.addWidget(self.step_list)
        body.addWidget(self.stack, 1)
        nav = QHBoxLayout()
        nav.addWidget(self.blockers, 1)
        nav.addWidget(self.back)
        nav.addWidget(self.next)
        top = QVBoxLayout(self)
        top.addWidget(self.gauge)
        top.addLayout(body, 1)
        top.addLayout(nav)

    def go(self, index: int | str) -> None:
        """Show a step by position or name."""
        if isinstance(index, str):
            index = STEPS.index(index)
        self.step_list.setCurrentRow(max(0, min(index, len(STEPS) - 1)))

    def current_step(self) -> str:
        return STEPS[self.stack.currentIndex()]

    def _on_step_list_changed(self, row: int) -> None:
        self.stack.setCurrentIndex(row)
        self.back.setEnabled(row > 0)
        self.next.setEnabled(row < len(STEPS) - 1)
        self.steps[STEPS[row]].refresh()

    # --- state -----------------------------------------------------------------------------

    def set_value(self, key: str, value) -> None:
        """A change the user made (it ends the recommendation's hold on the settings)."""
        self.recommended = False
        self.state.set(key, value)
        self.refresh()

    def set_recipe(self, recipe: Recipe) -> None:
        """Fill every field from ``recipe`` (Auto-fit, a preset, a recommendation, an opened file)."""
        self.state.set_recipe(recipe)
        self.refresh()

    def refresh(self) -> None:
        self.recipe, self.errors = self.state.check()
        self.advice = self.state.advice(self.recipe)
        self._draw_gauge()
        self.training = self.services.is_training()
        self.blockers.setText(_blockers_text(self.errors, self.gauge.status, self.training))
        for name in STEPS:
            self.steps[name].show_state()
        self.steps[self.current_step()].refresh()
        self.changed.emit()

    def _draw_gauge(self) -> None:
        shape, recipe = self.state.shape, self.recipe
        if shape is None:
            self.gauge.set_gauge(None)
            return
        if recipe is None:
            self.gauge.set_waiting("waiting for the marked fields")
            return
        longest = self.state.data.longest_tokens if self.state.data else None
        try:
            self.gauge.set_gauge(wizard.quick_gauge(recipe, shape, self.services.machine, longest,
                                                    mac_rows=self.mac_rows))
        except ProblemError:
            self.gauge.set_gauge(None)

    def review(self, hosts: int = 1) -> wizard.Review | None:
        """The review plan for the current values; None while a field is wrong or no model is chosen."""
        if self.recipe is None or self.state.shape is None or _field_errors(self.errors):
            return None
        data = self.state.data
        try:
            return wizard.review(self.recipe, self.state.shape, self.services.machine, self.rate,
                                 train_rows=data.train_rows if data else None,
                                 valid_rows=data.valid_rows if data else 0,
                                 tokens_per_row=data.mean_tokens if data else None,
                                 longest_row_tokens=data.longest_tokens if data else None,
                                 mac_rows=self.mac_rows, hosts=hosts)
        except ProblemError:
            return None

    # --- intent ----------------------------------------------------------------------------

    def load_recipe(self, path: str | Path) -> None:
        """Fill the wizard from a recipe file or a run folder (Duplicate as new run); raises ProblemError."""
        recipe = wizard.open_recipe(path)
        self.steps["model"].choose_path(recipe.model.path, keep_values=True)
        self.recommended = False
        self.set_recipe(recipe)
        self.steps["data"].choose_path(recipe.data.path)
        self.go("review")

    def open_path(self, path: str | Path) -> str:
        """What a drop (or File > Open) of ``path`` means here: a recipe fills the wizard, a model
        folder is chosen as the model, anything else is read as the data. Returns which it was."""
        path = Path(path)
        kind = dropped_kind(path)
        if kind == "recipe":
            self.load_recipe(path)
        elif kind == "model":
            self.steps["model"].choose_path(str(path))
            self.go("model")
        else:
            self.steps["data"].choose_path(str(path))
            self.go("data")
        return kind

    def dragEnterEvent(self, event) -> None:
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        urls = event.mimeData().urls()
        if urls:
            try:
                self.open_path(urls[0].toLocalFile())
            except ProblemError as e:
                self.blockers.setText(str(e))

    def new_run_dir(self) -> Path:
        from macfinetune.core.runs import default_run_dir

        home = self.services.runs_home() if self.services.runs_home else paths.runs_home()
        return default_run_dir(home, self.state.values["model"]["path"], self.state.values["method"]["type"])

    def start_training(self, allow_over_budget: bool, hostfile=None) -> Path | None:
        """Hand the run to the engine (on ``hostfile``'s Macs when given); None (and the reason below the
        steps) when it cannot start."""
        run_dir = self.new_run_dir()
        try:
            if hostfile is not None and self.services.start_on_hosts is not None:
                self.services.start_on_hosts(self.recipe, run_dir, allow_over_budget, hostfile)
            else:
                self.services.start_training(self.recipe, run_dir, allow_over_budget)
        except ProblemError as e:
            self.blockers.setText(str(e))
            return None
        self.services.show_monitor()
        return run_dir

    def on_session_state(self, state: str) -> None:
        """The engine started or ended a run: Train follows (one run at a time)."""
        self.refresh()

    def on_event(self, event) -> None:
        """Events the session routes here (download progress, Measure this Mac)."""
        self.steps["model"].on_event(event)
        self.steps["review"].on_event(event)

    def shutdown(self) -> None:
        """Stop this page's worker threads (the window calls it before closing)."""
        for step in self.steps.values():
            step.shutdown()
        from macfinetune.ui.wizard.worker import stop_all

        stop_all(self._workers)

    def closeEvent(self, event) -> None:
        self.shutdown()
        super().closeEvent(event)


def dropped_kind(path: Path) -> str:
    """``core.opening.open_kind``, where a run folder is a recipe (Duplicate as new run) and anything
    unknown is read as data (the Data step says what is wrong with it): 'recipe', 'model' or 'data'."""
    kind = opening.open_kind(path)
    return {"run": "recipe", "unknown": "data"}.get(kind, kind)


def _field_errors(errors: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in errors.items() if k not in ("model.path", "data.path")}


def _blockers_text(errors: dict[str, str], status: str | None, training: bool = False) -> str:
    if not errors and training:
        return "A run is training: Train waits until it ends (or stop it from the toolbar)."
    if not errors:
        return ("Ready to train; it will not fit by the estimate, so Train asks first (or use Auto-fit)."
                if status == "will not fit" else "Ready to train.")
    paths = [errors[k] for k in ("model.path", "data.path") if k in errors]
    fields = sorted(_field_errors(errors))
    parts = paths + ([f"fix {', '.join(fields)} (see the message beside each field)"] if fields else [])
    return "Before Train: " + "; ".join(parts) + "."
