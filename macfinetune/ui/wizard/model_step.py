"""Step 1, Model: the models on this Mac, a folder picker, a hub id with Download, the facts from
config.json, refusals in words beside the field, and the offer to quantize (QLoRA)."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableView,
)

from macfinetune.core import catalog, modelinfo, models_catalog, wizard
from macfinetune.core.events import JobCancelled, JobFailed
from macfinetune.core.models_catalog import DownloadFinished, DownloadProgress
from macfinetune.core.modelshape import read_shape
from macfinetune.core.problems import ProblemError
from macfinetune.ui.wizard.fields import make_error_label, show_error
from macfinetune.ui.wizard.model_table import ModelTableModel
from macfinetune.ui.wizard.step import Step
from macfinetune.ui.wizard.worker import Worker, retire, stop_all


class ModelStep(Step):
    def __init__(self, page):
        super().__init__(page, "Model", "Pick a model on this Mac, add a folder, or download one from Hugging Face. "
                         "Nothing is loaded until training starts: the facts below come from config.json.")
        self.table_model = ModelTableModel(self)
        self._scan: Worker | None = None
        self._workers: list[Worker] = []
        self._download_job = None  # the session's id of the download in progress
        self.supported = None  # the model types mlx-lm implements, once the scan has asked
        self._build()
        self.rescan()

    def _build(self) -> None:
        self.table = QTableView(self)
        self.table.setObjectName("modelTable")
        self.table.setTabKeyNavigation(False)  # Tab leaves the table (arrows move between rows)
        self.table.setModel(self.table_model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.table.verticalHeader().setVisible(False)
        self.table.clicked.connect(self._on_table_clicked)
        self.scan_label = QLabel("Looking for models…", self)
        self.scan_label.setObjectName("scanStatus")
        self.layout_.addWidget(self.scan_label)
        self.layout_.addWidget(self.table, 1)
        self._build_path_row()
        self._build_hub_row()
        self.facts = QLabel(self)
        self.facts.setObjectName("modelFacts")
        self.facts.setWordWrap(True)
        self.layout_.addWidget(self.facts)
        self._build_quantize_row()

    def _build_path_row(self) -> None:
        row = QHBoxLayout()
        self.path_edit = QLineEdit(self)
        self.path_edit.setObjectName("field:model.path")
        self.path_edit.setPlaceholderText("a model folder, or a Hugging Face id like mlx-community/Qwen3-0.6B-bf16")
        self.path_edit.editingFinished.connect(self._on_path_edit_finished)
        browse = QPushButton("Add folder…", self)
        browse.clicked.connect(self._on_browse_clicked)
        row.addWidget(QLabel("Model:", self))
        row.addWidget(self.path_edit, 1)
        row.addWidget(browse)
        self.layout_.addLayout(row)
        self.error = make_error_label("model.path", self)
        self.layout_.addWidget(self.error)

    def _build_hub_row(self) -> None:
        row = QHBoxLayout()
        self.hub_edit = QLineEdit(self)
        self.hub_edit.setObjectName("hubId")
        self.hub_edit.setPlaceholderText("org/name on Hugging Face")
        self.download_button = QPushButton("Download", self)
        self.download_button.setObjectName("download")
        self.download_button.clicked.connect(self._on_download_clicked)
        self.cancel_button = QPushButton("Cancel", self)
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self._on_cancel_clicked)
        self.download_status = QLabel(self)
        self.download_status.setObjectName("downloadStatus")
        self.download_status.setWordWrap(True)  # a long message must not widen the window
        if self.page.services.download is None:
            self.download_button.setEnabled(False)
            self.download_status.setText("Downloading from here is not connected yet: run `macfinetune models download "
                                         "ORG/NAME` in a terminal, then the model appears in the list.")
        for w in (QLabel("Download:", self), self.hub_edit, self.download_button, self.cancel_button):
            row.addWidget(w)
        self.layout_.addLayout(row)
        self.layout_.addWidget(self.download_status)

    def _build_quantize_row(self) -> None:
        row = QHBoxLayout()
        self.quantize = QComboBox(self)
        self.quantize.setObjectName("field:model.quantize")
        self.quantize.currentIndexChanged.connect(self._on_quantize_changed)
        self.quantize_label = QLabel("Quantize for QLoRA:", self)
        row.addWidget(self.quantize_label)
        row.addWidget(self.quantize, 1)
        self.layout_.addLayout(row)
        self.quantize_error = make_error_label("model.quantize", self)
        self.layout_.addWidget(self.quantize_error)
        self._fill_quantize()

    # --- scanning ----------------------------------------------------------------------------

    def rescan(self) -> None:
        retire(self._scan)
        services = self.page.services
        sources = models_catalog.default_sources(services.model_folders)
        scanners = {"hf-cache": services.hub_cache_scanner} if services.hub_cache_scanner else {}
        sources = [s for s in sources if s.kind != "hf-cache" or scanners]
        self._scan = Worker(lambda report, cancelled: _scan(sources, services.supported_types, scanners))
        self._workers.append(self._scan)
        self._scan.done.connect(self._on_scan_done)
        self._scan.failed.connect(self._on_scan_failed)
        self._scan.start()

    def _on_scan_done(self, result) -> None:
        self.supported, entries = result
        self.table_model.set_entries(entries)
        self._select_row(self.page.state.values["model"]["path"])
        self.scan_label.setText(f"{len(entries)} model{'s' if len(entries) != 1 else ''} on this Mac"
                                if entries else "No models found in the Hugging Face cache, LM Studio or "
                                "macfinetune's models folder. Add a folder or download one below.")

    def _on_scan_failed(self, message: str) -> None:
        self.scan_label.setText(f"Could not look for models: {message}")

    # --- choosing ----------------------------------------------------------------------------

    def _on_table_clicked(self, index) -> None:
        self.choose_path(str(self.table_model.entries[index.row()].path))

    def _on_path_edit_finished(self) -> None:
        text = self.path_edit.text().strip()
        if text != self.page.state.values["model"]["path"]:
            self.choose_path(text)

    def _on_browse_clicked(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a model folder")
        if folder:
            self.page.services.model_folders.append(Path(folder))
            self.choose_path(folder)
            self.rescan()

    def choose_path(self, path: str, keep_values: bool = False) -> None:
        """Select a model by folder or hub id: read its facts and shape, then recommend settings."""
        state = self.page.state
        state.shape, state.model_problem, facts = _read_model(path, self._supported_now())
        state.set("model.path", path)
        self.path_edit.setText(path)
        self.facts.setText(facts)
        self._select_row(path)
        self._fill_quantize()
        if state.values["data"].get("path"):
            self.page.steps["data"].start_reading()  # token lengths follow the model's tokenizer
        if not keep_values and state.shape is not None and not state.model_problem:
            self.page.steps["method"].apply_recommendation()
        else:
            self.page.refresh()

    def _supported_now(self):
        """The supported set if known without importing mlx-lm on the GUI thread (a callable is only
        called by the scan, on its worker)."""
        given = self.page.services.supported_types
        return self.supported if callable(given) else given

    def _select_row(self, path: str) -> None:
        rows = [i for i, e in enumerate(self.table_model.entries) if str(e.path) == path]
        if rows:
            self.table.selectRow(rows[0])
        else:
            self.table.clearSelection()

    def _fill_quantize(self) -> None:
        shape = self.page.state.shape
        offers = wizard.quantize_offer(shape) if shape else []
        self.quantize.blockSignals(True)
        self.quantize.clear()
        self.quantize.addItem("no: train the model as it is", None)
        for bits, saved in offers:
            self.quantize.addItem(f"{bits}-bit copy in the run folder: {saved:.1f} GB less for the weights", bits)
        self.quantize.blockSignals(False)
        visible = bool(offers)
        self.quantize.setVisible(visible)
        self.quantize_label.setVisible(visible)

    def _on_quantize_changed(self, index: int) -> None:
        self.page.set_value("model.quantize", self.quantize.itemData(index))

    def show_state(self) -> None:
        show_error(self.error, self.page.errors.get("model.path", "") if self.page.state.values["model"]["path"] else "")
        show_error(self.quantize_error, self.page.errors.get("model.quantize", ""))
        index = self.quantize.findData(self.page.state.values["model"].get("quantize"))
        self.quantize.blockSignals(True)
        self.quantize.setCurrentIndex(max(0, index))
        self.quantize.blockSignals(False)

    # --- download ----------------------------------------------------------------------------

    def _on_download_clicked(self) -> None:
        repo = self.hub_edit.text().strip()
        if not modelinfo.looks_like_repo_id(repo):
            self.download_status.setText(f"{repo!r} is not a Hugging Face id like org/name")
            return
        self.download_status.setText(f"Starting the download of {repo}…")
        self._set_downloading(True)
        self._download_job = self.page.services.download(repo)  # the job id when the session gives one

    def _on_cancel_clicked(self) -> None:
        if self.page.services.cancel_download:
            self.page.services.cancel_download()
        self.cancel_button.setEnabled(False)
        self.download_status.setText("Cancelling the download…")

    def _set_downloading(self, on: bool) -> None:
        self.cancel_button.setEnabled(on)
        self.download_button.setEnabled(not on and self.page.services.download is not None)

    def on_event(self, envelope) -> None:
        """Download progress from the engine: a JobEvent envelope (job 'download') or a bare event;
        once a download started through the session, only that job's events count."""
        job, event = getattr(envelope, "job", "download"), getattr(envelope, "event", envelope)
        job_id = getattr(envelope, "job_id", None)
        if job != "download" or (self._download_job is not None and job_id not in (None, self._download_job)):
            return
        if isinstance(event, JobFailed):
            self._set_downloading(False)
            self.download_status.setText(f"Download failed: {event.message}")
        elif isinstance(event, JobCancelled):
            self._set_downloading(False)
            self.download_status.setText("Download cancelled; starting it again resumes where it stopped.")
        elif isinstance(event, DownloadProgress):
            self.download_status.setText(models_catalog.download_progress_text(event))
        elif isinstance(event, DownloadFinished):
            self._set_downloading(False)
            self.download_status.setText(f"Downloaded {event.repo_id}.")
            self.rescan()
            self.choose_path(event.path)

    def shutdown(self) -> None:
        stop_all(self._workers)


def _scan(sources, supported, scanners) -> tuple:
    """(supported model types, models found): on the worker thread."""
    types = supported() if callable(supported) else supported
    return types, models_catalog.discover(sources, types, scanners)


def _read_model(path: str, supported) -> tuple:
    """(shape or None, problem words or '', facts text) for a folder or hub id."""
    folder = Path(path).expanduser()
    try:
        if folder.is_dir():
            entry = models_catalog.describe(folder, supported=supported)
            problem = "; ".join(p.message for p in entry.problems)
            shape = None if problem else read_shape(folder)
            return shape, problem, _facts(entry)
        shape = catalog.find_shape(path)
    except ProblemError as e:
        return None, "; ".join(p.message for p in e.problems), ""
    return shape, "", (f"{path}: not on this Mac yet (training downloads it). {shape.model_type}, "
                       f"{shape.layers} blocks, hidden {shape.hidden}, {shape.total_params / 1e9:.2f}B parameters")


def _facts(e) -> str:
    params = f"{e.parameters / 1e9:.2f}B" if e.parameters and e.parameters >= 1e8 else f"{(e.parameters or 0) / 1e6:.1f}M"
    parts = [e.architecture or e.model_type or "unknown architecture", f"{params} parameters",
             e.quantization or "full precision", e.dtype or "", f"context {e.context_length:,}" if e.context_length else "",
             f"{e.size_bytes / 1e9:.2f} GB on disk" if e.size_bytes >= 1e8 else f"{e.size_bytes / 1e6:.1f} MB on disk"]
    return f"<b>{e.name}</b>: " + " · ".join(p for p in parts if p)
