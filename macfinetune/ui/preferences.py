"""Preferences: data folder, keep the Mac awake while training, report interval (persisted in QSettings),
and the Machines a run may train on (the app's hostfile, edited in ``ui.machines``)."""

from __future__ import annotations

from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QWidget,
)

from macfinetune.core import paths


class PreferencesDialog(QDialog):
    def __init__(self, settings, parent=None, session=None):
        super().__init__(parent)
        self.session = session
        self.setObjectName("preferencesDialog")
        self.setWindowTitle("Preferences")
        self.settings = settings
        self.folder = QLineEdit(settings.value("prefs/data_folder", "") or "")
        self.folder.setObjectName("prefsDataFolder")
        self.folder.setPlaceholderText(str(paths.data_home()))
        self.folder.setToolTip("Runs, recipes and downloaded models live here (runs/ and recipes/ inside it)")
        browse = QPushButton("Choose…")
        browse.clicked.connect(self._on_browse_clicked)
        row = QHBoxLayout()
        row.addWidget(self.folder, 1)
        row.addWidget(browse)
        holder = QWidget()
        holder.setLayout(row)
        self.keep_awake = QCheckBox("Keep the Mac awake while training")
        self.keep_awake.setObjectName("prefsKeepAwake")
        self.keep_awake.setChecked(settings.value("prefs/keep_awake", True, type=bool))
        self.report_every = QSpinBox()
        self.report_every.setObjectName("prefsReportEvery")
        self.report_every.setRange(0, 10_000)
        self.report_every.setSpecialValueText("recipe's setting")
        self.report_every.setSuffix(" iterations")
        self.report_every.setValue(int(settings.value("prefs/report_every", 0) or 0))
        form = QFormLayout(self)
        form.addRow("Data folder:", holder)
        form.addRow("", self.keep_awake)
        form.addRow("Report every:", self.report_every)
        if session is not None:
            self.machines = QLabel(machines_summary(session))
            self.machines.setObjectName("prefsMachines")
            edit = QPushButton("Edit…")
            edit.setObjectName("prefsMachinesEdit")
            edit.clicked.connect(self.edit_machines)
            machines_row = QHBoxLayout()
            machines_row.addWidget(self.machines, 1)
            machines_row.addWidget(edit)
            form.addRow("Machines:", machines_row)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def edit_machines(self) -> None:
        from macfinetune.ui.machines import MachinesDialog

        dialog = MachinesDialog(self.session, self)
        dialog.exec()
        dialog.deleteLater()
        self.machines.setText(machines_summary(self.session))

    def _on_browse_clicked(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Data folder", self.folder.text())
        if folder:
            self.folder.setText(folder)

    def accept(self) -> None:
        self.settings.setValue("prefs/data_folder", self.folder.text().strip())
        self.settings.setValue("prefs/keep_awake", self.keep_awake.isChecked())
        self.settings.setValue("prefs/report_every", self.report_every.value())
        super().accept()


def machines_summary(session) -> str:
    """'This Mac only' or '3 Macs, ring backend (studio.local, …)', from the machines file."""
    from macfinetune.core import hosts as hosts_mod
    from macfinetune.core.problems import ProblemError

    try:
        hostfile = hosts_mod.read_machines(session.machines_file().parent)
    except ProblemError:
        return "the machines file cannot be read: Edit… to fix it"
    if hostfile is None or hostfile.size < 2:
        return "This Mac only"
    names = ", ".join(h.name for h in hostfile.hosts[:3]) + (", …" if hostfile.size > 3 else "")
    return f"{hostfile.size} Macs, {hostfile.backend} backend ({names})"
