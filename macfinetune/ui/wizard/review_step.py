"""Step 5, Review: the memory estimate as a stacked bar against the budget, the verdict, Auto-fit and
what it costs, the plan (iterations, batch, tokens, duration), the resolved YAML, the equivalent
command, Save as recipe, and Train (with an explicit confirmation when it will not fit)."""

from __future__ import annotations

import html
import shlex
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QFontDatabase, QGuiApplication
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPlainTextEdit,
    QPushButton,
)

from macfinetune.core import catalog, paths, wizard
from macfinetune.core.recipe import save_recipe
from macfinetune.ui.wizard.fields import error_color
from macfinetune.ui.wizard.gauge import GaugeBar, legend_html
from macfinetune.ui.wizard.step import Step

OVER_BUDGET = ("This run will not fit in memory by the estimate.\n\n"
               "Start anyway: the memory guard will pause it before the Mac swaps.")


class ReviewStep(Step):
    def __init__(self, page):
        super().__init__(page, "Review", "What will run, what it needs, and how long it takes.")
        self.plan: wizard.Review | None = None
        self.confirm_over_budget = self._ask_over_budget  # tests replace it
        self._build_estimate()
        self._build_outputs()

    def _build_estimate(self) -> None:
        self.bar = GaugeBar(self, height=28)
        self.bar.setObjectName("reviewGauge")
        self.legend = QLabel(self)
        self.legend.setObjectName("gaugeLegend")
        self.verdict = QLabel(self)
        self.verdict.setObjectName("verdict")
        self.verdict.setWordWrap(True)
        row = QHBoxLayout()
        self.autofit = QPushButton("Auto-fit", self)
        self.autofit.setObjectName("autofit")
        self.autofit.clicked.connect(self.apply_autofit)
        self.fit_text = QLabel(self)
        self.fit_text.setObjectName("fitSummary")
        self.fit_text.setWordWrap(True)
        row.addWidget(self.autofit)
        row.addWidget(self.fit_text, 1)
        self.numbers = QLabel(self)
        self.numbers.setObjectName("plan")
        self.numbers.setWordWrap(True)
        for w in (self.bar, self.legend, self.verdict):
            self.layout_.addWidget(w)
        self.layout_.addLayout(row)
        self.layout_.addLayout(self._build_correction())
        self.layout_.addWidget(self.numbers)
        self.layout_.addLayout(self._build_hosts_check())

    def _build_correction(self) -> QHBoxLayout:
        """This Mac's correction of the estimate (from its finished runs) and Measure this Mac."""
        self._measure_job: int | None = None
        self.correction = QLabel(self)
        self.correction.setObjectName("correction")
        self.correction.setWordWrap(True)
        self.measure = QPushButton("Measure this Mac", self)
        self.measure.setObjectName("measureMac")
        self.measure.setToolTip("Train a few steps of this model and settings at two sequence lengths and keep the "
                                "measured peaks as this Mac's calibration (about a minute for small models)")
        self.measure.clicked.connect(self._on_measure_clicked)
        row = QHBoxLayout()
        row.addWidget(self.correction, 1)
        row.addWidget(self.measure)
        return row

    def _build_hosts_check(self) -> QHBoxLayout:
        """Check these Macs (for this recipe: versions, memory, disk, the model and data there) and Copy to
        the Macs, shown when Train on names several Macs. Both run the engine's check_hosts job."""
        self._check_job: int | None = None
        self._missing = False
        self.hosts_check = QLabel(self)
        self.hosts_check.setObjectName("hostsCheck")
        self.hosts_check.setWordWrap(True)
        self.hosts_check.setTextInteractionFlags(self.hosts_check.textInteractionFlags()
                                                 | Qt.TextInteractionFlag.TextSelectableByMouse)
        self.check_macs = QPushButton("Check these Macs", self)
        self.check_macs.setObjectName("checkMacs")
        self.check_macs.setToolTip("Ask every Mac over SSH whether it can run this recipe: same versions, memory for "
                                   "it, free disk, the model and data at the same path")
        self.check_macs.clicked.connect(lambda: self.check_hosts(copy=False))
        self.copy_macs = QPushButton("Copy to the Macs", self)
        self.copy_macs.setObjectName("copyMacs")
        self.copy_macs.setToolTip("Copy the model folder and data to the Macs that lack them (rsync over SSH, same "
                                  "path; a stopped copy goes on where it was)")
        self.copy_macs.clicked.connect(lambda: self.check_hosts(copy=True))
        self.stop_check = QPushButton("Stop", self)
        self.stop_check.setObjectName("stopCheckMacs")
        self.stop_check.setToolTip("Stop the check or the copy (a stopped copy goes on where it was next time)")
        self.stop_check.clicked.connect(self._on_stop_check_clicked)
        row = QHBoxLayout()
        row.addWidget(self.hosts_check, 1)
        row.addWidget(self.check_macs)
        row.addWidget(self.copy_macs)
        row.addWidget(self.stop_check)
        return row

    def _on_stop_check_clicked(self) -> None:
        if self._check_job is not None and self.page.services.cancel_job is not None:
            self.page.services.cancel_job(self._check_job)
            self.hosts_check.setText("Stopping…")

    def _show_hosts_check(self) -> None:
        several = self.hostfile() is not None and self.page.services.check_hosts is not None
        for w in (self.hosts_check, self.check_macs):
            w.setVisible(several)
        busy = self._check_job is not None
        self.copy_macs.setVisible(several and self._missing and not busy)
        self.stop_check.setVisible(several and busy and self.page.services.cancel_job is not None)
        self.check_macs.setEnabled(not busy and self.page.recipe is not None)
        self.copy_macs.setEnabled(not busy)

    def check_hosts(self, copy: bool = False) -> None:
        hostfile, recipe = self.hostfile(), self.page.recipe
        if hostfile is None or recipe is None or self.page.services.check_hosts is None or self._check_job is not None:
            return
        self._check_job = self.page.services.check_hosts(recipe, hostfile, copy)
        self.hosts_check.setText("Copying to the Macs…" if copy else f"Asking {hostfile.size} Macs…")
        self._show_hosts_check()

    def _on_check_event(self, event) -> None:
        from macfinetune.core.events import JobCancelled, JobFailed, JobFinished, Stage

        if isinstance(event, Stage):
            self.hosts_check.setText(html.escape(event.message))
        elif isinstance(event, (JobFinished, JobFailed, JobCancelled)):
            self._check_job = None
            if isinstance(event, JobFinished):
                found = event.result
                self._missing = found.missing
                lines = [f"Copied {c}" for c in found.copied]
                from macfinetune.core.hosts import gb_text

                if found.problems:
                    red = error_color(self.palette())
                    lines += [f"<span style='color:{red}'>✗ {html.escape(p)}</span>" for p in found.problems]
                else:
                    need = f", each with room for the {gb_text(found.need_gb)} this run needs" if found.need_gb else ""
                    lines.append(f"✓ Ready: {len(found.reports)} Macs answered with the same versions{need}, "
                                 "and have the model and data.")
                self.hosts_check.setText("<br>".join(lines))
            else:
                reason = event.message if isinstance(event, JobFailed) else "stopped"
                self.hosts_check.setText(f"The check did not finish: {html.escape(reason)}")
            self._show_hosts_check()

    def _build_outputs(self) -> None:
        mono = QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)
        self.yaml = QPlainTextEdit(self)
        self.yaml.setObjectName("yaml")
        self.yaml.setReadOnly(True)
        self.yaml.setFont(mono)
        self.yaml.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.command = QLineEdit(self)
        self.command.setObjectName("command")
        self.command.setReadOnly(True)
        self.command.setFont(mono)
        copy = QPushButton("Copy", self)
        copy.clicked.connect(self._on_copy_clicked)
        command_row = QHBoxLayout()
        command_row.addWidget(self.command, 1)
        command_row.addWidget(copy)
        buttons = QHBoxLayout()
        self.save = QPushButton("Save as recipe…", self)
        self.save.setObjectName("saveRecipe")
        self.save.clicked.connect(self._on_save_clicked)
        self.train = QPushButton("Train", self)
        self.train.setObjectName("train")
        self.train.setDefault(True)
        self.train.clicked.connect(self.start)
        self.train_on = QComboBox(self)
        self.train_on.setObjectName("trainOn")
        self.train_on.setToolTip("Preferences → Machines lists the Macs a run can train on")
        self.train_on.currentIndexChanged.connect(self._on_train_on_changed)
        self.train_on_label = QLabel("Train on:", self)
        buttons.addStretch(1)
        buttons.addWidget(self.save)
        buttons.addWidget(self.train_on_label)
        buttons.addWidget(self.train_on)
        buttons.addWidget(self.train)
        self.layout_.addWidget(self.yaml, 1)
        self.layout_.addWidget(QLabel("The same run from the command line:", self))
        self.layout_.addLayout(command_row)
        self.layout_.addLayout(buttons)

    # --- drawing ---------------------------------------------------------------------------

    def show_state(self) -> None:
        blocked = bool(self.page.errors) or self.page.training
        self.train.setEnabled(not blocked)
        self.save.setEnabled(self.page.recipe is not None)
        self.measure.setEnabled(self.page.services.measure is not None and self._measure_job is None
                                and not blocked and self.page.state.shape is not None)
        self.train.setToolTip(self.page.blockers.text() if blocked else "Start the run on the engine")

    def _fill_train_on(self) -> None:
        """This Mac, and the Machines of Preferences when they are two or more Macs."""
        machines = self.page.services.machines() if self.page.services.machines else None
        keep = self.train_on.currentIndex()
        self.train_on.blockSignals(True)
        self.train_on.clear()
        self.train_on.addItem("This Mac", None)
        if machines is not None and machines.size > 1 and self.page.services.start_on_hosts is not None:
            names = ", ".join(h.name for h in machines.hosts[:3]) + (", …" if machines.size > 3 else "")
            self.train_on.addItem(f"{machines.size} Macs ({names})", machines)
        self.train_on.setCurrentIndex(keep if 0 <= keep < self.train_on.count() else 0)
        self.train_on.blockSignals(False)
        shown = self.train_on.count() > 1
        self.train_on.setVisible(shown)
        self.train_on_label.setVisible(shown)

    def hostfile(self):
        """The Macs chosen in Train on (a core.hosts.Hostfile), or None for this Mac."""
        return self.train_on.currentData()

    def _on_train_on_changed(self, *args) -> None:
        self._missing = False
        self.hosts_check.setText("Check these Macs before training: they need the same versions, memory for this "
                                 "recipe, and the model and data at the same path.")
        self.refresh()

    def refresh(self) -> None:
        self._fill_train_on()
        self._show_hosts_check()
        hostfile = self.hostfile()
        self.plan = plan = self.page.review(hosts=hostfile.size if hostfile is not None else 1)
        self.bar.set_gauge(plan.gauge if plan else None)
        if plan is None:
            self._draw_empty()
            return
        self.legend.setText(legend_html(plan.gauge, self.palette()))
        self.verdict.setText(f"<b>{plan.verdict.status.capitalize()}</b>: {html.escape(plan.verdict.message)}")
        if self._measure_job is None:
            self.correction.setText(plan.correction_text)
        self._draw_fit(plan)
        self.numbers.setText(_numbers_html(plan, self.hostfile()))
        self.yaml.setPlainText(plan.yaml)
        hostfile = self.hostfile()
        self.command.setText(plan.command + (f" --hosts {shlex.quote(hostfile.path)}" if hostfile is not None else ""))
        self.command.setCursorPosition(0)

    def _draw_empty(self) -> None:
        for w in (self.legend, self.fit_text) + ((self.correction,) if self._measure_job is None else ()):
            w.setText("")
        self.verdict.setText("Choose a model and fix the fields marked in red to see the estimate.")
        self.numbers.setText("")
        self.yaml.setPlainText("")
        self.command.setText("")
        self.autofit.setEnabled(False)

    def _draw_fit(self, plan: wizard.Review) -> None:
        fit = plan.fit
        self.autofit.setEnabled(fit is not None and fit.found and bool(fit.changes))
        if fit is None:
            self.fit_text.setText("Fits as it is: nothing to change.")
        elif fit.found:
            self.fit_text.setText("Auto-fit would change: " + html.escape(fit.summary()))
        else:
            self.fit_text.setText("No setting found that fits this Mac: " + html.escape(fit.summary()))

    # --- intent ----------------------------------------------------------------------------

    def _on_measure_clicked(self) -> None:
        recipe = self.page.recipe
        if recipe is None or self.page.services.measure is None:
            return
        self._measure_job = self.page.services.measure(recipe)
        self.measure.setEnabled(False)
        self.correction.setText("Measuring this Mac: a few steps at two sequence lengths (waits for a run that "
                                "is training)…")

    def on_event(self, envelope) -> None:
        """The Measure this Mac job's events (JobEvent envelopes of job 'measure')."""
        from macfinetune.core.events import JobCancelled, JobFailed, JobFinished, Stage

        if getattr(envelope, "job", None) == "check_hosts" and self._check_job is not None \
                and envelope.job_id == self._check_job:
            self._on_check_event(envelope.event)
            return
        if getattr(envelope, "job", None) != "measure" or envelope.job_id != self._measure_job:
            return
        event = envelope.event
        if isinstance(event, Stage) and event.job == "measure":
            self.correction.setText(f"Measuring this Mac: {event.message}…")
        elif isinstance(event, (JobFinished, JobFailed, JobCancelled)):
            self._measure_job = None
            if isinstance(event, JobFinished):
                rows = event.result or []
                done = "; ".join(f"{r.sequence_length} tokens: measured {r.measured_gb:.2f} GB, estimated "
                                 f"{r.estimate_gb:.2f} GB ({r.error:+.0%})" for r in rows)
                self.correction.setText(f"Measured: {done}. Updating the correction…")
                self.page.reload_mac_rows()
            else:
                reason = event.message if isinstance(event, JobFailed) else "cancelled"
                self.correction.setText(f"Measuring this Mac did not finish: {reason}")
            self.show_state()

    def apply_autofit(self) -> None:
        if self.plan is None or self.plan.fit is None or not self.plan.fit.found:
            return
        self.page.set_recipe(wizard.apply_fit(self.page.recipe, self.plan.fit))

    def start(self) -> Path | None:
        """Train: start the run on the engine and show the Monitor; None when blocked or not confirmed."""
        if self.page.errors or self.page.recipe is None:
            return None
        over = self.plan is not None and self.plan.verdict.status == "will not fit"
        if over and not self.confirm_over_budget(OVER_BUDGET):
            return None
        return self.page.start_training(allow_over_budget=over, hostfile=self.hostfile())

    def _ask_over_budget(self, text: str) -> bool:
        box = QMessageBox(QMessageBox.Icon.Warning, "Start anyway?", text, parent=self)
        start = box.addButton("Start anyway", QMessageBox.ButtonRole.AcceptRole)
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.exec()
        return box.clickedButton() is start

    def _on_copy_clicked(self) -> None:
        QGuiApplication.clipboard().setText(self.command.text())

    def _on_save_clicked(self) -> None:
        folder = paths.user_recipes_home()
        path, _ = QFileDialog.getSaveFileName(self, "Save as recipe", str(folder / "my-recipe.yaml"), "Recipes (*.yaml)")
        problem = self.save_to(Path(path)) if path else ""
        if problem:
            QMessageBox.warning(self, "Recipe not saved", problem)

    def save_to(self, path: Path) -> str:
        """Write the recipe on screen to ``path``; '' when saved, else why not (nothing is written)."""
        if catalog.hides_shipped(path):
            return f"{path.name}: {catalog.HIDES_SHIPPED}."
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            save_recipe(path, self.page.recipe, header="Saved from the New-run wizard.")
        except OSError as e:
            return f"{path}: could not write the recipe ({e.strerror or e})."
        return ""


def _numbers_html(plan: wizard.Review, hostfile=None) -> str:
    its = f"{plan.iterations:,}" if plan.iterations else "from the data's size"
    per_epoch = f"{plan.iterations_per_epoch:,}" if plan.iterations_per_epoch else "—"
    text = (f"Iterations: <b>{its}</b> · per epoch: <b>{per_epoch}</b> · effective batch: "
            f"<b>{plan.effective_batch}</b> · tokens per iteration: <b>{plan.tokens_per_iteration:,}</b> · "
            f"duration: <b>{html.escape(plan.duration)}</b>")
    if hostfile is not None and hostfile.size > 1:
        from macfinetune.core import hosts

        layout = hosts.layout(plan.recipe.training.batch_size, hostfile.size)
        text += (f"<br><b>On {hostfile.size} Macs</b> ({hostfile.backend} backend): "
                 f"{html.escape(layout.explain(plan.recipe.training.learning_rate))}. The memory verdict above is "
                 "per Mac, against this Mac's budget; Check these Macs judges the others against their own. Iterations "
                 "count global steps; the duration is estimated for one Mac.")
    return text
