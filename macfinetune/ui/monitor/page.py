"""The Monitor page: progress, the four panels, warnings, failure details and the event log.

Events go into a ``MetricsBuffer``; one named timer (~30 Hz) redraws only when the buffer changed.
"""

from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtCore import QEvent, Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from macfinetune.core import events, progress, runs, runs_table
from macfinetune.core.progress import epoch_of
from macfinetune.ui.monitor.buffer import MetricsBuffer
from macfinetune.ui.monitor.panels import LearningRatePanel, LossPanel, MemoryPanel, ThroughputPanel
from macfinetune.ui.monitor.preference_panels import PreferenceAccuracyPanel, RewardsPanel
from macfinetune.ui.widgets.theme import plot_colors

REDRAW_MS = 33


class MonitorPage(QWidget):
    progressChanged = Signal(str)  # the progress line once a training event is applied (the window's status bar)

    def __init__(self, session, settings, parent=None):
        super().__init__(parent)
        self.setObjectName("monitorPage")
        self.session, self.settings = session, settings
        self.buffer = MetricsBuffer()
        self._drawn = -1
        self.redraws = 0
        self._logged, self._log_source = 0, None  # lines of ``buffer.run.log`` already in the pane
        self._build()
        self._timer = QTimer(self)
        self._timer.setObjectName("monitorRedraw")
        self._timer.setSingleShot(True)
        self._timer.setInterval(REDRAW_MS)
        self._timer.timeout.connect(self._on_timer_timeout)
        self._stale: list = []  # panels still to draw for the data of version ``_drawn``
        self._behind: set = set()  # panels in a hidden row not drawn since their data changed
        session.trainingEvent.connect(self._on_session_training_event)
        session.runOpened.connect(self._on_session_run_opened)
        self._restore()
        self.apply_palette()
        self.redraw()

    # --- layout -----------------------------------------------------------------------

    def _build(self) -> None:
        self.progress = self._label("progressLine", bold=True)
        self.stats = self._label("statsLine")
        self.warnings = self._label("warnings")
        self.warnings.setWordWrap(True)
        self.warnings.setFrameShape(QFrame.Shape.StyledPanel)
        self.hosts = self._label("hostsLine")  # a run on several Macs: one line per Mac
        self.hosts.setVisible(False)
        self.failure = QListWidget()
        self.failure.setObjectName("failureProblems")
        self.failure.setMaximumHeight(90)
        self.loss, self.throughput = LossPanel(), ThroughputPanel()
        self.memory, self.lr = MemoryPanel(), LearningRatePanel()
        self.rewards, self.pref_accuracy = RewardsPanel(), PreferenceAccuracyPanel()  # preference runs only
        self.panels = (self.loss, self.throughput, self.memory, self.lr, self.rewards, self.pref_accuracy)
        self.log = QPlainTextEdit()
        self.log.setObjectName("eventLog")
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(5000)
        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.setObjectName("monitorSplitter")
        self.splitter.addWidget(self._plots())
        self.splitter.addWidget(self._log_pane())
        self.splitter.setStretchFactor(0, 4)
        self.splitter.setStretchFactor(1, 1)
        layout = QVBoxLayout(self)
        for w in (self.progress, self.stats, self.hosts, self.warnings, self.failure):
            layout.addWidget(w)
        layout.addWidget(self.splitter, 1)

    def _label(self, name: str, bold: bool = False) -> QLabel:
        label = QLabel()
        label.setObjectName(name)
        label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        if bold:
            font = label.font()
            font.setPointSizeF(font.pointSizeF() * 1.2)
            font.setBold(True)
            label.setFont(font)
        return label

    def _plots(self) -> QWidget:
        grid = QSplitter(Qt.Orientation.Vertical)
        grid.setObjectName("plotSplitter")
        top = QSplitter(Qt.Orientation.Horizontal)
        top.addWidget(self.loss)
        top.addWidget(self.throughput)
        top.setStretchFactor(0, 3)
        top.setStretchFactor(1, 2)
        bottom = QSplitter(Qt.Orientation.Horizontal)
        bottom.addWidget(self.memory)
        bottom.addWidget(self.lr)
        bottom.setStretchFactor(0, 3)
        bottom.setStretchFactor(1, 2)
        grid.addWidget(top)
        grid.addWidget(bottom)
        self.preference_row = QSplitter(Qt.Orientation.Horizontal)
        self.preference_row.setObjectName("preferenceRow")
        self.preference_row.addWidget(self.rewards)
        self.preference_row.addWidget(self.pref_accuracy)
        self.preference_row.setVisible(False)
        grid.addWidget(self.preference_row)
        grid.setStretchFactor(2, 2)
        grid.setStretchFactor(0, 3)
        grid.setStretchFactor(1, 2)
        self.plot_splitter = grid
        return grid

    def _log_pane(self) -> QWidget:
        pane = QWidget()
        layout = QVBoxLayout(pane)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(QLabel("Events"))
        layout.addWidget(self.log, 1)
        row = QHBoxLayout()
        self.export_png_button = QPushButton("Export Loss PNG…")
        self.export_png_button.setObjectName("exportPng")
        self.export_csv_button = QPushButton("Export CSV…")
        self.export_csv_button.setObjectName("exportCsv")
        self.export_png_button.clicked.connect(self._on_export_png_clicked)
        self.export_csv_button.clicked.connect(self._on_export_csv_clicked)
        self.duplicate_button = QPushButton("Duplicate…")
        self.duplicate_button.setObjectName("duplicateRun")
        self.duplicate_button.setToolTip("Duplicate as new run: the New-run wizard filled from this run's recipe")
        self.duplicate_button.clicked.connect(self._on_duplicate_clicked)
        row.addWidget(self.export_png_button)
        row.addWidget(self.export_csv_button)
        row.addWidget(self.duplicate_button)
        layout.addLayout(row)
        return pane

    # --- events -----------------------------------------------------------------------

    def show_events(self, events: list, received: float | None = None) -> None:
        """Replay a list of events (a reopened run, a recorded one) and draw once."""
        for event in events:
            self.buffer.apply(event, received)
        self.redraw()

    def _on_session_training_event(self, event) -> None:
        if isinstance(event, events.RunContinued):  # a resumed run: its history from the folder comes first
            self._show_history(runs_table.history_before_continue(Path(event.run_dir)))
        self.buffer.apply(event, time.time())
        self.progressChanged.emit(self.buffer.progress_line())
        if not self._timer.isActive():
            self._timer.start()

    def _show_history(self, history: list) -> None:
        self.buffer.reset()
        self.log.clear()
        self._drawn = -1
        self.show_events(history)

    def _on_session_run_opened(self, run_dir: str) -> None:
        self._show_history(runs_table.load_run_events(Path(run_dir)))
        if not self.buffer.run.run_dir:
            self.buffer.run.run_dir = run_dir
        # A run that stopped or died without a last event (a crash, a killed process) has no final record in
        # metrics.jsonl: its status file says what it is, so it never reads "Running" when nothing runs.
        status, r = runs.read_status(Path(run_dir)), self.buffer.run
        if status is None and _is_file(Path(run_dir) / runs.STATUS):
            self.buffer.warn(f"{runs.STATUS} cannot be read (damaged or edited by hand): the state of this run is "
                             "unknown; its metrics and checkpoints are intact")
        elif status is not None and r.state in ("idle", "running", "paused") and status.state not in (
                "running", "paused"):
            r.state, r.message = status.state, r.message or status.message  # a failure recorded only there
        self.buffer.version += 1
        self.redraw()

    def redraw(self) -> None:
        """Draw every panel now (a replay, a reopened run); live events go through the timer instead."""
        if self.buffer.version == self._drawn:  # nothing new; finish the timer's pass, if one is under way
            for panel in self._stale:
                self._draw(panel)
            self._stale = []
            return
        self._drawn, self._stale = self.buffer.version, []
        self.redraws += 1
        for panel in self.panels:
            self._draw(panel)
        self._set_labels()

    def _draw(self, panel) -> None:
        """Redraw ``panel``, or, when it is in a hidden row (the preference panels of a plain run), only note that
        it is behind: setData on 100k points costs milliseconds that nobody would see."""
        if panel.isVisibleTo(self):
            self._behind.discard(panel)
            panel.redraw(self.buffer)
        else:
            self._behind.add(panel)

    def _catch_up(self) -> None:
        """Panels that were behind while hidden and can now be seen are drawn now."""
        for panel in [p for p in self.panels if p in self._behind and p.isVisibleTo(self)]:
            self._draw(panel)

    def _on_timer_timeout(self) -> None:
        """The throttled live redraw: labels at once, then one plot per tick (~30 Hz), so each paint covers
        one plot; four plots painted in one go held the GUI thread four times as long."""
        if self.buffer.version != self._drawn:
            self._drawn, self._stale = self.buffer.version, list(self.panels)
            self.redraws += 1
            self._set_labels()
        while self._stale:  # the next panel that can be seen; hidden ones are only noted as behind
            panel = self._stale.pop(0)
            self._draw(panel)
            if panel not in self._behind:
                break
        if self._stale or self.buffer.version != self._drawn:
            self._timer.start()

    def _set_labels(self) -> None:
        r = self.buffer.run
        idle = f"{Path(r.run_dir).name}: nothing recorded" if r.run_dir else ("No run yet: start one, or open a "
                                                                           "run from Runs (or drop its folder here)")
        self.progress.setText(self.buffer.progress_line() if r.state != "idle" else idle)
        self.stats.setText(self._stats_text())
        self.warnings.setText("\n".join(f"⚠ {w}" for w in r.warnings[-3:]) if r.warnings else "")
        self.warnings.setVisible(bool(r.warnings))
        hosts = self.buffer.hosts
        self.hosts.setText("\n".join(progress.host_line(hosts[rank]) for rank in sorted(hosts)))
        self.hosts.setVisible(len(hosts) > 1)
        self._set_failure()
        self._append_log()
        self.preference_row.setVisible(bool(r.objective))
        self._catch_up()
        has_run = bool(r.run_dir)
        self.export_csv_button.setEnabled(has_run and _is_file(Path(r.run_dir) / "metrics.jsonl"))
        self.export_png_button.setEnabled(self.buffer.series["train_loss"].n > 0)
        self.duplicate_button.setEnabled(has_run and _is_file(Path(r.run_dir) / "recipe.yaml"))

    def _stats_text(self) -> str:
        r = self.buffer.run
        if r.state == "idle":
            return ""
        parts = [Path(r.run_dir).name or "run"]
        if r.epochs:
            parts.append(f"epoch {epoch_of(r.iteration, r.total, r.epochs):.2f} of {r.epochs:.2f}")
        if r.train_loss is not None:
            parts.append(f"train loss {r.train_loss:.3f}")
        parts.append(f"best val {r.best[1]:.3f} at {r.best[0]}" if r.best else "no validation yet")
        return " · ".join(parts)

    def _set_failure(self) -> None:
        r = self.buffer.run
        self.failure.clear()
        if r.state == "failed":
            self.failure.addItem(f"Failed: {r.message}")
            self.failure.addItems([f"  {p}" for p in r.problems])
        self.failure.setVisible(r.state == "failed")

    def _append_log(self) -> None:
        """Append the lines not shown yet: counted here, not read back from the pane (that copied the whole
        text every redraw, and the pane keeps only its last 5,000 lines)."""
        log = self.buffer.run.log
        if self._logged > len(log) or (log is not self._log_source):  # another run's log
            self._logged, self._log_source = 0, log
            self.log.clear()
        if len(log) > self._logged:
            self.log.appendPlainText("\n".join(log[self._logged:]))
            self._logged = len(log)

    # --- export -----------------------------------------------------------------------

    def export_csv(self, path: str) -> None:
        Path(path).write_text(runs_table.metrics_csv(Path(self.buffer.run.run_dir)), encoding="utf-8")

    def _on_export_csv_clicked(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export metrics as CSV", "metrics.csv", "CSV (*.csv)")
        if path:
            self.export_csv(path)

    def _on_duplicate_clicked(self) -> None:
        if self.buffer.run.run_dir and hasattr(self.session, "duplicateRun"):
            self.session.duplicateRun.emit(self.buffer.run.run_dir)

    def _on_export_png_clicked(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export the loss plot", "loss.png", "PNG (*.png)")
        if path:
            self.loss.export_png(path)

    # --- palette and persistence ----------------------------------------------------

    def apply_palette(self) -> None:
        colors = plot_colors(self.palette())
        for panel in self.panels:
            panel.apply_colors(colors)

    def changeEvent(self, event) -> None:
        if event.type() == QEvent.Type.PaletteChange:
            self.apply_palette()
        super().changeEvent(event)

    def _restore(self) -> None:
        s = self.settings
        self.loss.set_smoothing(float(s.value("monitor/smoothing", 0.6)))
        self.loss.log_box.setChecked(s.value("monitor/log_scale", False, type=bool))
        for key, splitter in (("monitor/splitter", self.splitter), ("monitor/plot_splitter", self.plot_splitter)):
            state = s.value(key)
            if state is not None:
                splitter.restoreState(state)

    def save_state(self) -> None:
        s = self.settings
        s.setValue("monitor/smoothing", self.loss.weight)
        s.setValue("monitor/log_scale", self.loss.log_box.isChecked())
        s.setValue("monitor/splitter", self.splitter.saveState())
        s.setValue("monitor/plot_splitter", self.plot_splitter.saveState())


def _is_file(path: Path) -> bool:
    """A file check that never raises (a name too long for the file system is simply not there)."""
    try:
        return path.is_file()
    except OSError:
        return False
