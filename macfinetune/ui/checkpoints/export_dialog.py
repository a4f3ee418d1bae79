"""Export a checkpoint: where to, in what form, with which options, checked before anything runs.

One dialog for every target of ``core.exports`` (GGUF, Ollama, LM Studio, the Hugging Face hub, an
MLX folder). Each target shows only the options it takes; **Export** asks ``core.exports.plan_export``
(the same check the CLI's ``export`` makes) and shows its refusal beside the buttons instead of
closing, so a bad repository id, a name Ollama refuses or a folder that already exists is said in
words before the engine is asked. The dialog decides nothing itself.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from macfinetune.core import exports
from macfinetune.core.problems import ProblemError

TARGET_TITLES = {"gguf": "GGUF file (llama.cpp)", "ollama": "Ollama (GGUF + Modelfile)",
                 "lmstudio": "LM Studio", "hub": "Hugging Face hub", "mlx": "MLX model folder"}
TARGET_HELP = {
    "gguf": "One .gguf file with the fused weights, the tokenizer and the chat template; llama.cpp, LM Studio "
            "and Ollama load it.",
    "ollama": "The GGUF and a Modelfile (chat template, stop tokens, system prompt); then run the "
              "'ollama create' command shown when it is done.",
    "lmstudio": "The fused MLX model, written into LM Studio's models folder so it appears in LM Studio.",
    "hub": "Upload the fused model or the adapters to a repository you name, with a model card; uses the "
           "token in your keychain (Preferences).",
    "mlx": "The fused model as an MLX folder (mlx-lm, macfinetune generate, the Playground).",
}
# which fields each target shows (the options core.exports takes for it)
_FIELDS = {"gguf": {"dest", "dtype"}, "ollama": {"dest", "dtype", "name", "system"},
           "lmstudio": {"lmstudio", "name", "dequantize"}, "hub": {"repo", "private", "contents", "dequantize"},
           "mlx": {"dest", "dequantize"}}


class ExportDialog(QDialog):
    """``ExportDialog(run_dir, iteration, target)``; after ``exec()`` is accepted, ``request()`` is
    ``(target, dest, options)`` for ``jobs.export_model``."""

    def __init__(self, run_dir: Path, checkpoint: str, target: str = "gguf", start_folder: str = "",
                 parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("exportDialog")
        self.setWindowTitle(f"Export checkpoint {checkpoint}")
        self.run_dir, self.checkpoint, self._start = Path(run_dir), str(checkpoint), start_folder
        self._build()
        self.target.setCurrentIndex(max(0, self.target.findData(target)))
        self._on_target_changed()

    # --- layout ----------------------------------------------------------------------------

    def _build(self) -> None:
        self.target = QComboBox(self)
        self.target.setObjectName("exportTarget")
        for key in exports.TARGETS:
            self.target.addItem(TARGET_TITLES[key], key)
        self.target.currentIndexChanged.connect(self._on_target_changed)
        self.help = QLabel(self)
        self.help.setObjectName("exportHelp")
        self.help.setWordWrap(True)
        self.dest = QLineEdit(self)
        self.dest.setObjectName("exportDest")
        self.dest.setPlaceholderText("a new folder (default: exports/ inside the run folder)")
        self.browse = QPushButton("Choose…", self)
        self.browse.clicked.connect(self._on_browse_clicked)
        dest_row = QWidget(self)
        row = QHBoxLayout(dest_row)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.dest, 1)
        row.addWidget(self.browse)
        self.lmstudio = QLabel(str(exports.lmstudio_models_dir()), self)
        self.lmstudio.setObjectName("exportLmstudioFolder")
        self.lmstudio.setWordWrap(True)
        self.dtype = QComboBox(self)
        self.dtype.setObjectName("exportDtype")
        self.dtype.addItems(list(exports.GGUF_DTYPES))
        self.name = QLineEdit(self)
        self.name.setObjectName("exportName")
        self.name.setPlaceholderText("run name and checkpoint (lower-case letters, digits, . _ -)")
        self.system = QPlainTextEdit(self)
        self.system.setObjectName("exportSystem")
        self.system.setPlaceholderText("optional system prompt for Ollama's SYSTEM line")
        self.system.setFixedHeight(self.fontMetrics().lineSpacing() * 4)
        self.repo = QLineEdit(self)
        self.repo.setObjectName("exportRepo")
        self.repo.setPlaceholderText("your-name/model-name")
        self.private = QCheckBox("Private repository", self)
        self.private.setObjectName("exportPrivate")
        self.private.setChecked(True)
        self.contents = QComboBox(self)
        self.contents.setObjectName("exportContents")
        self.contents.addItem("The fused model", "model")
        self.contents.addItem("The adapters only (small; needs the base model)", "adapters")
        self.dequantize = QCheckBox("De-quantize (full-precision weights)", self)
        self.dequantize.setObjectName("exportDequantize")
        self.error = QLabel(self)
        self.error.setObjectName("exportError")
        self.error.setWordWrap(True)
        self.error.setStyleSheet("color: #d70015;")
        form = QFormLayout()
        form.addRow("Export as:", self.target)
        form.addRow("", self.help)
        self._rows = {"dest": ("Folder:", dest_row), "lmstudio": ("LM Studio's models:", self.lmstudio),
                      "dtype": ("GGUF type:", self.dtype), "name": ("Name:", self.name),
                      "system": ("System prompt:", self.system), "repo": ("Repository:", self.repo),
                      "private": ("", self.private), "contents": ("Upload:", self.contents),
                      "dequantize": ("", self.dequantize)}
        for label, widget in self._rows.values():
            form.addRow(label, widget)
        self._form = form
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel, parent=self)
        self.export = buttons.addButton("Export", QDialogButtonBox.ButtonRole.AcceptRole)
        self.export.setObjectName("exportGo")
        self.export.setDefault(True)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        top = QVBoxLayout(self)
        top.addLayout(form)
        top.addWidget(self.error)
        top.addWidget(buttons)
        self.setMinimumWidth(520)

    def _on_target_changed(self, *args) -> None:
        target = self.current_target()
        self.help.setText(TARGET_HELP[target])
        shown = _FIELDS[target]
        for key, (_, widget) in self._rows.items():
            self._form.setRowVisible(widget, key in shown)
        self.error.setText("")

    def _on_browse_clicked(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Export into a new folder inside…", self._start or str(Path.home()))
        if folder:
            self.dest.setText(str(Path(folder) / exports.plan_export_name(self.run_dir, self.checkpoint,
                                                                          self.current_target())))

    # --- values ----------------------------------------------------------------------------

    def current_target(self) -> str:
        return self.target.currentData()

    def request(self) -> tuple[str, str | None, dict]:
        """(target, dest, options) as ``jobs.export_model`` takes them; only the target's own options."""
        target, shown = self.current_target(), _FIELDS[self.current_target()]
        options: dict = {}
        dest: str | None = None
        if "dest" in shown:
            dest = self.dest.text().strip() or None
        if "repo" in shown:
            dest = self.repo.text().strip()
            options["private"] = self.private.isChecked()
            options["contents"] = self.contents.currentData()
        if "dtype" in shown:
            options["dtype"] = self.dtype.currentText()
        if "name" in shown and self.name.text().strip():
            options["name"] = self.name.text().strip()
        if "system" in shown and self.system.toPlainText().strip():
            options["system"] = self.system.toPlainText().strip()
        if "dequantize" in shown and self.dequantize.isChecked():
            options["dequantize"] = True
        return target, dest, options

    def accept(self) -> None:
        """Export only what ``plan_export`` accepts; its refusal stays beside the buttons."""
        target, dest, options = self.request()
        try:
            exports.plan_export(self.run_dir, self.checkpoint, target, dest, **options)
        except ProblemError as e:
            self.error.setText("\n".join(_beside_the_field(p) for p in e.problems))
            return
        self.error.setText("")
        super().accept()


def _beside_the_field(problem) -> str:
    """A refusal in words for the dialog: the file it names, never the internal field name."""
    return f"{problem.file}: {problem.message}" if problem.file else problem.message[:1].upper() + problem.message[1:]
