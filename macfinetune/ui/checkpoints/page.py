"""The Checkpoints page: a run's checkpoints as a table beside the loss curve, their samples side by
side, and what to do with one: Fuse, Export, Test prompt.

Run folders are read on a plain thread (``Background``); the page redraws when the read is done.
It follows the run the session opens or trains, and re-reads the shown run when a checkpoint or its
samples are saved.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QItemSelectionModel, Qt, Signal
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMenu,
    QPushButton,
    QSplitter,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from macfinetune.core import checkpoints, events, runs_table
from macfinetune.core.checkpoints import RunCheckpoints
from macfinetune.ui.checkpoints.background import Background
from macfinetune.ui.checkpoints.curve import CheckpointCurve, curve_arrays
from macfinetune.ui.checkpoints.model import ITERATION_ROLE, CheckpointTableModel
from macfinetune.ui.checkpoints.samples_view import SamplesView
from macfinetune.ui.checkpoints.tasks import JobPanel

EXPORT_TARGETS = (("gguf", "GGUF file (llama.cpp)…", True), ("ollama", "Ollama (GGUF + Modelfile)…", True),
                  ("lmstudio", "LM Studio…", False), ("hub", "Hugging Face hub…", False),
                  ("mlx", "MLX model folder…", True))
NO_EXPORT = "Export needs macfinetune.jobs.export_model, which this build does not have."


def _read(run_dir: Path) -> tuple[RunCheckpoints, dict]:
    """On the reading thread: the run folder, and its curves as arrays."""
    data = checkpoints.read_checkpoints(run_dir)
    return data, curve_arrays(data)


def _export_job():
    from macfinetune import jobs

    return getattr(jobs, "export_model", None)


class CheckpointsPage(QWidget):
    runsScanned = Signal(object)  # list[RunRow] or an exception, from the reading thread
    runLoaded = Signal(object)  # RunCheckpoints or an exception, from the reading thread
    exportRequested = Signal(str, int, str)  # run folder, iteration, target

    def __init__(self, session, settings, parent=None):
        super().__init__(parent)
        self.setObjectName("checkpointsPage")
        self.session, self.settings = session, settings
        self.data = RunCheckpoints(run_dir=None)
        self._selected: int | None = None
        self._reader = Background("macfinetune-checkpoints-read")
        self._build()
        self.runsScanned.connect(self._on_runs_scanned)
        self.runLoaded.connect(self._on_run_loaded)
        session.runsChanged.connect(self.refresh_runs)
        session.runOpened.connect(self.show_run)
        session.trainingEvent.connect(self._on_session_training_event)
        self.refresh_runs()

    # --- building ---------------------------------------------------------------------

    def _build(self) -> None:
        self.run_combo = QComboBox()
        self.run_combo.setObjectName("checkpointsRun")
        self.run_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.run_combo.setMinimumContentsLength(24)
        self.run_combo.activated.connect(self._on_run_combo_activated)
        self.summary = QLabel()
        self.summary.setObjectName("checkpointsSummary")
        self.summary.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        top = QHBoxLayout()
        top.addWidget(QLabel("Run:"))
        top.addWidget(self.run_combo, 1)
        top.addWidget(self.summary)
        self.model = CheckpointTableModel(self)
        self.table = self._make_table()
        self.curve = CheckpointCurve()
        self.curve.pointClicked.connect(self.select_iteration)
        self.samples = SamplesView()
        upper = QSplitter(Qt.Orientation.Horizontal)
        upper.setObjectName("checkpointsUpperSplitter")
        upper.addWidget(self.table)
        upper.addWidget(self.curve)
        upper.setStretchFactor(0, 2)
        upper.setStretchFactor(1, 3)
        upper.setSizes([440, 560])
        self.splitter = QSplitter(Qt.Orientation.Vertical)
        self.splitter.setObjectName("checkpointsSplitter")
        self.splitter.addWidget(upper)
        self.splitter.addWidget(self._titled("Samples at checkpoints", self.samples))
        self.splitter.setStretchFactor(0, 3)
        self.splitter.setStretchFactor(1, 2)
        self.empty = QLabel()
        self.empty.setObjectName("checkpointsEmpty")
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty.setWordWrap(True)
        self.jobs = JobPanel(self.session, self)
        self.jobs.busyChanged.connect(self._update_buttons)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.splitter, 1)
        layout.addWidget(self.empty, 1)
        layout.addLayout(self._make_buttons())
        layout.addWidget(self.jobs)
        self._show_empty(True, "Reading runs…")
        self._update_buttons()

    def _make_table(self) -> QTableView:
        table = QTableView()
        table.setObjectName("checkpointsTable")
        table.setModel(self.model)
        table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        table.setAlternatingRowColors(True)
        table.setTabKeyNavigation(False)  # Tab moves on to the next control, not to the next cell
        table.verticalHeader().hide()
        table.setWordWrap(False)
        header = table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)  # sized once per load: cheap for long runs
        header.setStretchLastSection(True)
        header.setResizeContentsPrecision(50)  # columns sized from 50 rows, not every row of a long run
        table.selectionModel().selectionChanged.connect(self._on_table_selection_changed)
        return table

    @staticmethod
    def _titled(title: str, widget: QWidget) -> QWidget:
        box = QWidget()
        heading = QLabel(title)
        font = heading.font()
        font.setBold(True)
        heading.setFont(font)
        layout = QVBoxLayout(box)
        layout.setContentsMargins(0, 6, 0, 0)
        layout.addWidget(heading)
        layout.addWidget(widget, 1)
        return box

    def _make_buttons(self) -> QHBoxLayout:
        self.fuse_button = QPushButton("Fuse…")
        self.fuse_button.setObjectName("checkpointsFuse")
        self.fuse_button.setToolTip("Fuse this checkpoint into its base model: a standalone model folder")
        self.fuse_button.clicked.connect(lambda: self.fuse_selected())
        self.dequantize = QCheckBox("De-quantize")
        self.dequantize.setObjectName("checkpointsDequantize")
        self.dequantize.setToolTip("Fuse into full-precision weights (a quantized base stays exact: re-quantizing "
                                   "changes the outputs)")
        self.export_button = QPushButton("Export…")
        self.export_button.setObjectName("checkpointsExport")
        self.export_menu = QMenu(self.export_button)
        for target, text, _ in EXPORT_TARGETS:
            self.export_menu.addAction(text, lambda t=target: self.export_selected(t))
        self.export_button.setMenu(self.export_menu)
        self.test_button = QPushButton("Test prompt")
        self.test_button.setObjectName("checkpointsTestPrompt")
        self.test_button.setToolTip("Open the Playground with the base model and this checkpoint")
        self.test_button.clicked.connect(self.test_selected)
        row = QHBoxLayout()
        for widget in (self.fuse_button, self.dequantize, self.export_button, self.test_button):
            row.addWidget(widget)
        row.addStretch(1)
        return row

    # --- runs -------------------------------------------------------------------------

    def refresh_runs(self) -> None:
        home, extra = self.session.data_folder(), self.session.opened_folders()
        self._reader.run("runs", lambda: runs_table.scan_rows(home, extra), self.runsScanned.emit)

    def _on_runs_scanned(self, rows) -> None:
        if isinstance(rows, Exception):
            rows = []
        current = self.run_dir()
        self.run_combo.clear()
        for row in sorted(rows, key=lambda r: r.started, reverse=True):
            self.run_combo.addItem(row.name, str(row.path))
            self.run_combo.setItemData(self.run_combo.count() - 1, str(row.path), Qt.ItemDataRole.ToolTipRole)
        if current is not None and current.is_dir() and self.run_combo.findData(str(current)) < 0:
            self.run_combo.insertItem(0, current.name, str(current))  # shown (a run that started) after the scan began
            rows = [*rows, current]
        wanted = current or self.settings.value("checkpoints/run", "") or ""
        index = self.run_combo.findData(str(wanted))
        self.run_combo.setCurrentIndex(index if index >= 0 else 0 if rows else -1)
        self.run_combo.setEnabled(bool(rows))
        if not rows:
            self._show_empty(True, f"No runs yet in {self.session.data_folder()}. When a run saves checkpoints, "
                                   "they appear here.")
        elif self.run_dir() != self.data.run_dir:
            self.load(self.run_dir())

    def run_dir(self) -> Path | None:
        value = self.run_combo.currentData()
        return Path(value) if value else None

    def show_run(self, run_dir) -> None:
        """Show ``run_dir`` (added to the selector when it is not there yet)."""
        run_dir = Path(run_dir)
        if self.run_combo.findData(str(run_dir)) < 0:
            self.run_combo.insertItem(0, run_dir.name, str(run_dir))
        self.run_combo.setCurrentIndex(self.run_combo.findData(str(run_dir)))
        self.load(run_dir)

    def _on_run_combo_activated(self, index: int) -> None:
        self._selected = None
        self.load(self.run_dir())

    def load(self, run_dir: Path | None) -> None:
        if run_dir is not None:
            self.settings.setValue("checkpoints/run", str(run_dir))
            self._reader.run("run", lambda: _read(run_dir), self.runLoaded.emit)

    def wait_for_reads(self, timeout: float = 10.0) -> None:
        self._reader.wait(timeout)

    def _on_run_loaded(self, loaded) -> None:
        if isinstance(loaded, Exception) or loaded[0].run_dir != self.run_dir():
            return  # a read of a run no longer shown, or of a folder that vanished
        data, arrays = loaded
        if data.run_dir != self.data.run_dir:
            self._selected = None
            self.jobs.clear()  # "Done: …" was about the previous run
        self.data = data
        self.model.set_rows(data.rows)
        self.curve.set_run(data, arrays)
        self.table.resizeColumnsToContents()
        self.samples.set_run(data)
        self.summary.setText(self._summary_text(data))
        self._show_empty(not data.rows, "No checkpoints in this run yet: a run saves one every eval.save_every "
                                        "iterations and at the end.")
        self.select_iteration(self._selected if data.row_of(self._selected or -1) is not None
                              else checkpoints.default_selection(data))
        self._update_buttons()  # the model's reset dropped the selection without a selectionChanged

    @staticmethod
    def _summary_text(data: RunCheckpoints) -> str:
        best = f"; best {data.best_iteration:,}" if data.best_iteration is not None else ""
        return f"{len(data.rows)} checkpoints{best}"

    def _show_empty(self, empty: bool, text: str = "") -> None:
        self.empty.setText(text if empty else "")
        self.empty.setVisible(empty)
        self.splitter.setVisible(not empty)

    # --- selection --------------------------------------------------------------------

    def select_iteration(self, iteration: int | None) -> None:
        """Select a checkpoint's table row (and so its point and samples column)."""
        row = self.data.row_of(iteration) if iteration is not None else None
        if row is None:
            self.table.clearSelection()
            return
        flags = QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows
        self.table.selectionModel().select(self.model.index(row, 0), flags)
        self.table.scrollTo(self.model.index(row, 0))

    def selected_row(self) -> checkpoints.CheckpointRow | None:
        rows = self.table.selectionModel().selectedRows()
        return self.model.row_at(rows[0].row()) if rows else None

    def _on_table_selection_changed(self, *args) -> None:
        rows = self.table.selectionModel().selectedRows()
        self._selected = rows[0].data(ITERATION_ROLE) if rows else None
        self.curve.set_selected(self._selected)
        self.samples.select_iteration(self._selected)
        self._update_buttons()

    def _update_buttons(self) -> None:
        row = self.selected_row()
        usable = row is not None and row.on_disk
        free = usable and not self.jobs.busy
        self.fuse_button.setEnabled(free)
        self.dequantize.setEnabled(free)
        self.test_button.setEnabled(usable)
        has_export = _export_job() is not None
        self.export_button.setEnabled(free and has_export)
        self.export_button.setToolTip("Export this checkpoint for llama.cpp, Ollama or LM Studio" if has_export
                                      else NO_EXPORT)
        if row is not None and not row.on_disk:
            self.fuse_button.setToolTip("This checkpoint was deleted (eval.keep_checkpoints)")

    # --- actions ----------------------------------------------------------------------

    def choose_folder(self, title: str) -> str:
        """A folder from the user ('' when cancelled); tests replace it."""
        start = str(self.settings.value("checkpoints/last_folder", "") or Path.home())
        folder = QFileDialog.getExistingDirectory(self, title, start)
        if folder:
            self.settings.setValue("checkpoints/last_folder", folder)
        return folder

    def fuse_selected(self, parent: str | None = None) -> None:
        row = self.selected_row()
        if row is None or not row.on_disk or self.jobs.busy:
            return
        parent = parent or self.choose_folder("Fuse into a new folder in…")
        if not parent:
            return
        from macfinetune import jobs

        out_dir = checkpoints.fuse_target(Path(parent), self.data.run_dir, row.iteration)
        self.jobs.start(f"Fusing checkpoint {row.iteration:,}", "fuse", jobs.fuse, path=self.data.run_dir,
                        which=str(row.iteration), out_dir=out_dir, dequantize=self.dequantize.isChecked())

    def export_selected(self, target: str, dest: str | None = None, **options) -> None:
        """Export the selected checkpoint: with ``dest`` given (tests, scripts) at once; otherwise the
        export dialog asks where and how (``ask_export``), checked by ``core.exports`` before it runs."""
        row, job = self.selected_row(), _export_job()
        if row is None or job is None or self.jobs.busy:
            return
        self.exportRequested.emit(str(self.data.run_dir), row.iteration, target)
        if dest is None and not options:
            asked = self.ask_export(target, str(row.iteration))
            if asked is None:
                return
            target, dest, options = asked
        self.jobs.start(f"Exporting checkpoint {row.iteration:,} ({target})", "export", job,
                        run_dir=self.data.run_dir, checkpoint=str(row.iteration), target=target, dest=dest,
                        **options)

    def ask_export(self, target: str, checkpoint: str):
        """The export dialog: (target, dest, options), or None when cancelled; tests replace it."""
        from macfinetune.ui.checkpoints.export_dialog import ExportDialog

        dialog = ExportDialog(self.data.run_dir, checkpoint, target,
                              str(self.settings.value("checkpoints/last_folder", "") or ""), self)
        try:
            if dialog.exec() != ExportDialog.DialogCode.Accepted:
                return None
            target, dest, options = dialog.request()
            if dest and target in ("gguf", "ollama", "mlx"):
                self.settings.setValue("checkpoints/last_folder", str(Path(dest).parent))
            return target, dest, options
        finally:
            dialog.deleteLater()

    def test_selected(self) -> None:
        row = self.selected_row()
        if row is not None and row.on_disk and hasattr(self.session, "testPrompt"):
            self.session.testPrompt.emit(str(self.data.run_dir), str(row.iteration))

    # --- live -------------------------------------------------------------------------

    def _on_session_training_event(self, event) -> None:
        if isinstance(event, (events.RunStarted, events.RunContinued)):
            self.show_run(event.run_dir)
        elif isinstance(event, (events.CheckpointSaved, events.SamplesSaved)) and self._is_shown(self.session.run_dir):
            self.load(self.run_dir())

    def _is_shown(self, run_dir: str) -> bool:
        shown = self.run_dir()
        return bool(run_dir) and shown is not None and Path(run_dir).resolve() == shown.resolve()

    def shutdown(self) -> None:
        self._reader.close()

