"""Preferences -> Machines: the Macs a run may train on, and Check (is every one ready?).

The list is saved as the app's hostfile (``machines.json`` in the data folder, MLX's own format, so
``macfinetune train --hosts`` and ``mlx.launch --hostfile`` read the same file). The first Mac is
rank 0: it owns the run folder, so it should be this one. **Check** runs the engine's
``check_hosts`` job (each host asked over SSH, judged in ``core.hosts``) and lists what is wrong on
which Mac, in words. The dialog decides nothing itself.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)

from macfinetune.core import hosts as hosts_mod
from macfinetune.core.events import JobCancelled, JobFailed, JobFinished, Stage
from macfinetune.core.problems import ProblemError
from macfinetune.ui.wizard.fields import error_color

INTRO = ("The Macs a run can train on, over MLX's distributed backend. Each one needs SSH without a password "
         "from this Mac (ssh-copy-id), the same macfinetune, MLX and mlx-lm at the same path, and the model "
         "and data at the same path. The first row is rank 0 and owns the run folder: keep this Mac first.")
BACKEND_HELP = {"ring": "ring: TCP over Ethernet or a Thunderbolt bridge",
                "jaccl": "jaccl: RDMA over Thunderbolt 5 (recent macOS)", "mpi": "mpi: an MPI installation"}


class MachinesDialog(QDialog):
    """``MachinesDialog(session)``: edits ``session.machines_file()``; Check runs on the engine."""

    def __init__(self, session, parent=None):
        super().__init__(parent)
        self.setObjectName("machinesDialog")
        self.setWindowTitle("Machines")
        self.session = session
        self.path = Path(session.machines_file())
        self._job: int | None = None
        self._build()
        self._load()
        session.jobEvent.connect(self._on_session_job_event)

    def _build(self) -> None:
        intro = QLabel(INTRO, self)
        intro.setWordWrap(True)
        self.table = QTableWidget(0, 2, self)
        self.table.setObjectName("machinesTable")
        self.table.setHorizontalHeaderLabels(["SSH (user@host)", "Addresses for the backend (comma-separated)"])
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.itemChanged.connect(self._on_table_item_changed)
        self.backend = QComboBox(self)
        self.backend.setObjectName("machinesBackend")
        for key in hosts_mod.BACKENDS:
            self.backend.addItem(BACKEND_HELP[key], key)
        add, remove = QPushButton("Add Mac", self), QPushButton("Remove", self)
        add.setObjectName("machinesAdd")
        remove.setObjectName("machinesRemove")
        add.clicked.connect(lambda: self.add_host("", ""))
        remove.clicked.connect(self._on_remove_clicked)
        self.check = QPushButton("Check", self)
        self.check.setObjectName("machinesCheck")
        self.check.setToolTip("Ask every Mac over SSH: reachable, same versions, free disk. New run → Review → "
                              "Check these Macs also checks memory for the recipe and the model and data there")
        self.check.clicked.connect(self.run_check)
        row = QHBoxLayout()
        for w in (add, remove):
            row.addWidget(w)
        row.addStretch(1)
        row.addWidget(QLabel("Backend:", self))
        row.addWidget(self.backend)
        row.addWidget(self.check)
        self.report = QPlainTextEdit(self)
        self.report.setObjectName("machinesReport")
        self.report.setReadOnly(True)
        self.report.setPlaceholderText("Check says here what is wrong on which Mac.")
        self.report.setMaximumHeight(self.fontMetrics().lineSpacing() * 7)
        self.error = QLabel(self)
        self.error.setObjectName("machinesError")
        self.error.setWordWrap(True)
        self.error.setStyleSheet("color: #d70015;")
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel,
                                   parent=self)
        buttons.accepted.connect(self.accept)
        self.save = buttons.button(QDialogButtonBox.StandardButton.Save)
        buttons.rejected.connect(self.reject)
        top = QVBoxLayout(self)
        top.addWidget(intro)
        top.addWidget(self.table, 1)
        top.addLayout(row)
        top.addWidget(self.report)
        top.addWidget(self.error)
        top.addWidget(buttons)
        self.resize(680, 420)

    def _load(self) -> None:
        try:
            hostfile = hosts_mod.read_machines(self.path.parent)
        except ProblemError as e:
            self.error.setText(f"{self.path} could not be read, so the list starts empty: {e}")
            hostfile = None
        if hostfile is None:
            self.add_host("127.0.0.1", "")  # this Mac first: rank 0 owns the run folder
            return
        self.backend.setCurrentIndex(max(0, self.backend.findData(hostfile.backend)))
        for host in hostfile.hosts:
            self.add_host(host.ssh, ", ".join(host.ips))

    # --- editing ---------------------------------------------------------------------------

    def add_host(self, ssh: str, ips: str) -> None:
        row = self.table.rowCount()
        self.table.blockSignals(True)  # (a row is judged once both of its cells are there)
        self.table.insertRow(row)
        self.table.setItem(row, 0, QTableWidgetItem(ssh))
        self.table.setItem(row, 1, QTableWidgetItem(ips))
        self.table.blockSignals(False)
        self.show_problems()

    def _on_remove_clicked(self) -> None:
        rows = sorted({i.row() for i in self.table.selectedIndexes()}, reverse=True)
        for row in rows:
            self.table.removeRow(row)
        self.show_problems()

    def _on_table_item_changed(self, item) -> None:
        self.show_problems()

    def _row(self, row: int) -> tuple[str, list[str]]:
        ssh, ips = ((self.table.item(row, c).text() if self.table.item(row, c) else "").strip() for c in (0, 1))
        return ssh, [ip.strip() for ip in ips.split(",") if ip.strip()]

    def show_problems(self) -> None:
        """Each row's problems (core.hosts) in its cells' tooltips and below the table; no Save while any."""
        lines, color = [], QColor(error_color(self.palette()))
        self.table.blockSignals(True)
        for row in range(self.table.rowCount()):
            ssh, ips = self._row(row)
            cells = ((hosts_mod.ssh_problem(ssh),), hosts_mod.address_problems(ips)) if ssh or ips else ((), ())
            for column, problems in enumerate(cells):
                item = self.table.item(row, column)
                text = "; ".join(p for p in problems if p)
                item.setToolTip(text)
                item.setForeground(color if text else self.palette().color(QPalette.ColorRole.Text))
                lines += [f"Row {row + 1}: {text}"] if text else []
        self.table.blockSignals(False)
        self.error.setText("\n".join(lines))
        self.save.setEnabled(not lines)

    def hostfile(self) -> hosts_mod.Hostfile:
        """The table as a checked hostfile; ProblemError names the row that is wrong."""
        entries = []
        for row in range(self.table.rowCount()):
            ssh, ips = self._row(row)
            if not ssh and not ips:
                continue
            entries.append({"ssh": ssh, "ips": ips})
        return hosts_mod.parse_hostfile({"backend": self.backend.currentData(), "hosts": entries}, str(self.path))

    # --- check -----------------------------------------------------------------------------

    def run_check(self) -> None:
        try:
            hostfile = self.hostfile()
        except ProblemError as e:
            self.error.setText(str(e))
            return
        from macfinetune import jobs  # imports no MLX until the job runs on the engine

        self.error.setText("")
        self.report.setPlainText("Checking…")
        self.check.setEnabled(False)
        self._job = self.session.submit("check_hosts", jobs.check_hosts, hostfile=hostfile).id

    def _on_session_job_event(self, job_event) -> None:
        if self._job is None or job_event.job_id != self._job:
            return
        event = job_event.event
        if isinstance(event, Stage):
            self.report.appendPlainText(event.message)
        elif isinstance(event, (JobFinished, JobFailed, JobCancelled)):
            self._job = None
            self.check.setEnabled(True)
            if isinstance(event, JobFinished):
                found = event.result
                lines = list(found.problems) or [f"ready: {len(found.reports)} Macs answered and agree"]
                self.report.setPlainText("\n".join(lines))
            else:
                self.report.setPlainText(f"Check did not finish: {getattr(event, 'message', 'cancelled')}")

    # --- closing ---------------------------------------------------------------------------

    def accept(self) -> None:
        if not any((self.table.item(r, 0) and self.table.item(r, 0).text().strip())
                   for r in range(self.table.rowCount())):
            self.path.unlink(missing_ok=True)  # no Macs: runs train on this one
            super().accept()
            return
        try:
            hostfile = self.hostfile()
        except ProblemError as e:
            self.error.setText(str(e))
            return
        hosts_mod.save_hostfile(self.path, hostfile)
        super().accept()

    def done(self, result: int) -> None:
        try:
            self.session.jobEvent.disconnect(self._on_session_job_event)
        except (RuntimeError, TypeError):
            pass
        super().done(result)
