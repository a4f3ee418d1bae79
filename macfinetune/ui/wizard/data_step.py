"""Step 2, Data: a file or folder (picker or drag-and-drop), its format and row counts, a preview with
the trained part highlighted, the token-length histogram (filled in as rows are tokenized), the
doctor's findings naming rows, the split offer and the data-size warnings."""

from __future__ import annotations

import html
from pathlib import Path

from PySide6.QtGui import QPalette
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QProgressBar,
    QPushButton,
    QSplitter,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from macfinetune.core import doctor, formats, opening, wizard
from macfinetune.core.formats import pairs
from macfinetune.core.problems import ProblemError
from macfinetune.ui.wizard.fields import make_error_label, show_error
from macfinetune.ui.wizard.histogram import HistogramView
from macfinetune.ui.wizard.state import DataInfo
from macfinetune.ui.wizard.step import Step
from macfinetune.ui.wizard.worker import Worker, quiet_gc, retire, stop_all

CHUNK_ROWS = 2000  # rows tokenized between two progress reports (the histogram grows after each)
PREVIEW_ROWS = 3


class DataStep(Step):
    def __init__(self, page):
        super().__init__(page, "Data", "Choose a dataset file or folder, or drop it here. Every format the doctor "
                         "reads works: mlx-lm chat, tools, completions and text, Alpaca, ShareGPT, CSV/TSV, "
                         "text files, saved Hugging Face datasets.")
        self._job: Worker | None = None
        self._workers: list[Worker] = []
        self.loaded: formats.LoadedData | None = None
        self.lengths: tuple[int, ...] = ()
        self.token_note = ""  # why there is no histogram
        self.rendered: list = []  # the first rows through the chat template: (full, prompt) or an error
        self.setAcceptDrops(True)
        self._build()

    def _build(self) -> None:
        row = QHBoxLayout()
        self.path_edit = QLineEdit(self)
        self.path_edit.setObjectName("field:data.path")
        self.path_edit.setPlaceholderText("a .jsonl/.json/.csv/.tsv/.txt file or a folder")
        self.path_edit.editingFinished.connect(self._on_path_edit_finished)
        file_button, folder_button = QPushButton("Choose file…", self), QPushButton("Choose folder…", self)
        file_button.clicked.connect(self._on_file_clicked)
        folder_button.clicked.connect(self._on_folder_clicked)
        for w in (QLabel("Data:", self), self.path_edit, file_button, folder_button):
            row.addWidget(w, 1 if w is self.path_edit else 0)
        self.layout_.addLayout(row)
        self.error = make_error_label("data.path", self)
        self.layout_.addWidget(self.error)
        self.summary = QLabel("No data chosen yet.", self)
        self.summary.setObjectName("dataSummary")
        self.summary.setWordWrap(True)
        self.layout_.addWidget(self.summary)
        self._build_options()
        self._build_views()

    def _build_options(self) -> None:
        row = QHBoxLayout()
        self.split_label = QLabel(self)
        self.split_label.setObjectName("splitOffer")
        self.split_label.setWordWrap(True)
        self.split = QComboBox(self)
        self.split.setObjectName("field:data.valid_fraction")
        for share in wizard.SPLIT_CHOICES:
            self.split.addItem(f"hold out {share:.0%}", share)
        self.split.currentIndexChanged.connect(self._on_split_changed)
        self.mask = QCheckBox("Train on the answers only (prompt masking)", self)
        self.mask.setObjectName("field:data.mask_prompt")
        self.mask.toggled.connect(self._on_mask_toggled)
        row.addWidget(self.split_label, 1)
        row.addWidget(self.split)
        self.layout_.addLayout(row)
        self.layout_.addWidget(self.mask)
        self.mask_error = make_error_label("data.mask_prompt", self)
        self.layout_.addWidget(self.mask_error)
        self.warnings = QLabel(self)
        self.warnings.setObjectName("dataWarnings")
        self.warnings.setWordWrap(True)
        self.layout_.addWidget(self.warnings)

    def _build_views(self) -> None:
        self.progress = QProgressBar(self)
        self.progress.setObjectName("tokenizeProgress")
        self.progress.setVisible(False)
        self.histogram = HistogramView(self)
        self.histogram.setObjectName("histogram")
        self.histogram_text = QLabel(self)
        self.histogram_text.setObjectName("histogramText")
        self.histogram_text.setWordWrap(True)
        self.preview = QTextBrowser(self)
        self.preview.setObjectName("preview")
        self.findings = QListWidget(self)
        self.findings.setObjectName("findings")
        split = QSplitter(self)
        split.addWidget(_titled("Preview", self.preview, self))
        split.addWidget(_titled("The doctor's findings (each names its rows)", self.findings, self))
        for w in (self.progress, self.histogram, self.histogram_text):
            self.layout_.addWidget(w)
        self.layout_.addWidget(split, 1)

    # --- choosing --------------------------------------------------------------------------

    def _on_path_edit_finished(self) -> None:
        text = self.path_edit.text().strip()
        if text != self.page.state.values["data"]["path"]:
            self.choose_path(text)

    def _on_file_clicked(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose a dataset file", "", opening.DATA_FILTER)
        if path:
            self.choose_path(path)

    def _on_folder_clicked(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a dataset folder")
        if folder:
            self.choose_path(folder)

    def dragEnterEvent(self, event) -> None:
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        urls = event.mimeData().urls()
        if urls:
            self.choose_path(urls[0].toLocalFile())

    def choose_path(self, path: str) -> None:
        """Read the dataset on a worker thread; the summary and histogram fill in as it goes."""
        self.page.state.set("data.path", path)
        self.path_edit.setText(path)
        self.start_reading()

    def start_reading(self) -> None:
        retire(self._job)
        state, values = self.page.state, self.page.state.values
        path = values["data"]["path"]
        state.data, self.loaded, self.lengths, self.token_note, self.rendered = None, None, (), "", []
        self.findings.clear()
        self.preview.clear()
        self.histogram.set_histogram(None)
        if not path:
            self.page.refresh()
            return
        state.data_busy = True
        self.summary.setText(f"Reading {path}…")
        counter = self._counter()
        job = DataJob(path, values["data"].get("valid_fraction") or 0.1, values["training"].get("seed") or 0, counter,
                      self._factory(self.page.services.template_renderer))
        self._job = Worker(job)
        self._workers.append(self._job)
        self._job.progress.connect(self._on_job_progress)
        self._job.done.connect(self._on_job_done)
        self._job.failed.connect(self._on_job_failed)
        self._job.start()
        self.page.refresh()

    def _counter(self):
        """ADAPTER: the injected tokenizer factory (see services.py); None: no histogram."""
        return self._factory(self.page.services.token_counter)

    def _factory(self, make):
        """``make(model)`` deferred to the worker, or None without a usable local model."""
        model = self.page.state.values["model"]["path"]
        if make is None or not model or self.page.state.model_problem or not Path(model).expanduser().is_dir():
            return None
        return lambda: make(model)

    # --- results from the worker ---------------------------------------------------------

    def _on_job_progress(self, message) -> None:
        kind = message[0]
        if kind == "loaded":
            self._show_loaded(*message[1:])
        elif kind == "preview":
            self.rendered = message[1]
            self._draw_preview()
        elif kind == "tokens":
            _, self.lengths, done, total = message
            self.progress.setVisible(True)
            self.progress.setRange(0, total)
            self.progress.setValue(done)
            self._draw_histogram()

    def _show_loaded(self, data: formats.LoadedData, report: doctor.Report, info: DataInfo) -> None:
        self.loaded = data
        self.page.state.data = info
        self.page.state.data_busy = False
        self.page.state.follow_data()  # preference pairs: DPO; other data: supervised
        self.summary.setText(_summary(report))
        self._show_findings(report)
        self._draw_preview()
        self.page.refresh()

    def _on_job_done(self, result) -> None:
        if result is None:
            return
        report, info, note = result
        self.progress.setVisible(False)
        self.page.state.data = info
        self._show_findings(report)
        self._draw_histogram()
        self.token_note = note
        if self.page.recommended:  # now that the rows are known: passes and sequence length from the data
            self.page.steps["method"].apply_recommendation()
        self.page.refresh()

    def _on_job_failed(self, message: str) -> None:
        self.progress.setVisible(False)
        self.page.state.data_busy = False
        self.page.state.data = DataInfo(self.page.state.values["data"]["path"], "", 0, 0, False, problem=message)
        self.summary.setText("The data cannot be used; see the message above.")
        self.page.refresh()

    def _show_findings(self, report: doctor.Report) -> None:
        self.findings.clear()
        for f in report.findings:
            self.findings.addItem(f"{f.severity}: {f.problem().message}")
        if not report.findings:
            self.findings.addItem("The doctor found nothing wrong with the rows.")

    def _draw_histogram(self) -> None:
        if not self.lengths:
            self.histogram_text.setText(self.token_note or self._no_lengths_text())
            return
        max_seq = _int(self.page.state.values["data"].get("max_seq_length"), 2048)
        h = wizard.length_histogram(self.lengths, max_seq)
        self.histogram.set_histogram(h)
        self.histogram_text.setText(h.text)

    def _draw_preview(self) -> None:
        if self.loaded is None:
            return
        masked = self.page.state.values["data"].get("mask_prompt") in (True, "true")
        self.preview.setHtml(preview_html(self.loaded, masked, self.palette(), self.rendered))

    def _no_lengths_text(self) -> str:
        if self.page.services.token_counter is None:
            return "Token lengths need the model's tokenizer, which this window was started without."
        if self.page.state.data_busy or self._job is not None and self._job.isRunning():
            return "Counting tokens…"
        if self.page.state.data is not None and self.page.state.data.problem:
            return "No token lengths: the data could not be read (see the message above)."
        model = self.page.state.values["model"]["path"]
        if not model:
            return "Token lengths need the model's tokenizer: choose a model first."
        if self.page.state.model_problem:
            return "Token lengths need the model's tokenizer: the model cannot be used (see the Model step)."
        if not Path(model).expanduser().is_dir():
            return f"Token lengths need the model's tokenizer: {model} is not downloaded yet."
        return "Token lengths need the model's tokenizer; choose the data again to count them."

    # --- options ---------------------------------------------------------------------------

    def _on_split_changed(self, index: int) -> None:
        self.page.set_value("data.valid_fraction", self.split.itemData(index))
        if self.loaded is not None and not self.page.state.data.has_valid:
            self.start_reading()

    def _on_mask_toggled(self, on: bool) -> None:
        self.page.set_value("data.mask_prompt", on)
        self._draw_preview()

    def show_state(self) -> None:
        page, values = self.page, self.page.state.values["data"]
        show_error(self.error, page.errors.get("data.path", "") if values["path"] else "")
        show_error(self.mask_error, page.errors.get("data.mask_prompt", ""))
        self.mask.blockSignals(True)
        self.mask.setChecked(values.get("mask_prompt") in (True, "true"))
        self.mask.blockSignals(False)
        info = page.state.data
        offer = wizard.split_offer(info.train_rows + info.valid_rows, info.has_valid, _float(values.get("valid_fraction"), 0.1)) \
            if info and not info.problem else ""
        self.split_label.setText(offer)
        self.split.setVisible(bool(offer))
        self.warnings.setText(self._warnings_text())
        self.warnings.setVisible(bool(self.warnings.text()))
        self._draw_histogram()

    def _warnings_text(self) -> str:
        info, recipe = self.page.state.data, self.page.recipe
        if info is None or recipe is None or info.problem:
            return ""
        words = wizard.data_warnings(recipe, info.train_rows, info.valid_rows, info.leaked_rows)
        return "\n".join(f"⚠ {w}" for w in words)

    def shutdown(self) -> None:
        stop_all(self._workers)


class DataJob:
    """Read, split and check the data, then tokenize it in chunks (worker thread; no Qt, no MLX)."""

    def __init__(self, path: str, valid_fraction: float, seed: int, counter_factory, renderer_factory=None):
        self.path, self.fraction, self.seed = path, float(valid_fraction), int(seed)
        self.counter_factory, self.renderer_factory = counter_factory, renderer_factory

    def __call__(self, report, cancelled):
        with quiet_gc():
            data = formats.load_any(self.path)
            split = formats.with_valid_split(data, self.fraction, self.seed)
            first = doctor.inspect(split, valid_fraction=self.fraction, seed=self.seed)
        info = data_info(split, first, data.split("valid") is not None)
        report(("loaded", split, first, info))
        self._preview(split, report)
        if self.counter_factory is None:
            return None
        try:
            count = self.counter_factory()
        except ProblemError as e:  # no tokenizer (offline, not downloaded): the data is still usable
            return first, info, f"Token lengths unavailable: {e}"
        counts = self._tokenize(split, count, report, cancelled)
        if counts is None:
            return None
        final = doctor.inspect(split, count_tokens=lambda rows: counts, valid_fraction=self.fraction, seed=self.seed)
        lengths = [c.total for c in counts if not c.error]
        return final, info.with_tokens(max(lengths, default=0), sum(lengths) / max(1, len(lengths))), ""

    def _preview(self, split, report) -> None:
        if self.renderer_factory is None:
            return
        try:
            render = self.renderer_factory()
        except ProblemError:
            return  # the plain preview stays
        rows = [pairs.pair_as_chat(r) if pairs.is_pair(r) else r for r in split.split("train").rows[:PREVIEW_ROWS]]
        report(("preview", [render(row) for row in rows]))  # a pair previews as its prompt and chosen answer

    def _tokenize(self, split, count, report, cancelled):
        rows = [r for s in split.splits for r in s.rows]
        counts, lengths = [], []
        for start in range(0, len(rows), CHUNK_ROWS):
            if cancelled():
                return None
            with quiet_gc(collect_young=True):
                chunk = list(count(rows[start:start + CHUNK_ROWS]))
            counts += chunk
            lengths = sorted(lengths + [c[0] for c in chunk])
            report(("tokens", tuple(lengths), len(counts), len(rows)))
        return counts


def _titled(title: str, widget, parent) -> QWidget:
    box = QWidget(parent)
    column = QVBoxLayout(box)
    column.setContentsMargins(0, 0, 0, 0)
    column.addWidget(QLabel(f"<b>{title}</b>", box))
    column.addWidget(widget, 1)
    return box


def data_info(data: formats.LoadedData, report: doctor.Report, has_valid: bool) -> DataInfo:
    rows = {s.name: len(s.rows) for s in data.splits}
    leaked = sum(len(f.rows) for f in report.findings if f.check == "leakage")
    try:
        formats.check_trainable(data, True)
        mask_problem = ""
    except ProblemError as e:
        mask_problem = "; ".join(p.message for p in e.problems)
    return DataInfo(data.source, data.format, rows.get("train", 0), rows.get("valid", 0), has_valid, leaked,
                    mask_problem=mask_problem)


def _summary(report: doctor.Report) -> str:
    name = formats.SOURCE_FORMATS.get(report.format, report.format)
    parts = [f"{s.name} {s.rows:,} rows" + (" (split off, seeded)" if s.created else "") for s in report.splits]
    return f"<b>Format:</b> {html.escape(name)} · " + " · ".join(parts)


def preview_html(data: formats.LoadedData, masked: bool, palette: QPalette, rendered: list = ()) -> str:
    """The first rows, the part that carries loss highlighted (only the answer when masking);
    through the model's chat template when ``rendered`` has them."""
    mark = _tint(palette.color(QPalette.ColorRole.Highlight), palette.color(QPalette.ColorRole.Base)).name()
    text = palette.color(QPalette.ColorRole.Text).name()
    if rendered:
        blocks = [_template_html(r, masked, mark, text) for r in rendered]
        how = "through the model's chat template"
    else:
        blocks = [_row_html(row, masked, mark, text) for row in data.split("train").rows[:PREVIEW_ROWS]]
        how = "as roles and text (no tokenizer yet)"
    legend = f"The first rows, {how}. Highlighted: what the model is trained on" + (
        " (the answer only: prompt masking)" if masked else "")
    return f"<p><i>{legend}</i></p>" + "<hr>".join(blocks)


def _template_html(item, masked: bool, mark: str, fg: str) -> str:
    if isinstance(item, str):
        return f"<p>⚠ the chat template refuses this row: {html.escape(item)}</p>"
    full, prompt = item
    plain, trained = wizard.trained_part(full, prompt, masked)
    marked = f"<span style='background:{mark}; color:{fg}'>{html.escape(trained)}</span>"
    return f"<pre style='white-space:pre-wrap'>{html.escape(plain)}{marked}</pre>"


def _tint(color, base, share: float = 0.35):
    """``color`` mixed into ``base``: a highlight that keeps the text readable in both modes."""
    from PySide6.QtGui import QColor

    mix = [round(share * a + (1 - share) * b) for a, b in zip(color.getRgb()[:3], base.getRgb()[:3], strict=True)]
    return QColor(*mix)


def _row_html(row: dict, masked: bool, mark: str, fg: str) -> str:
    def hl(s: str, on: bool) -> str:
        s = html.escape(s)
        return f"<span style='background:{mark}; color:{fg}'>{s}</span>" if on else s

    if pairs.is_pair(row):  # the prompt, then both answers: the model is trained on the two
        prompt = "<br>".join(f"<b>{html.escape(str(m.get('role')))}:</b> {html.escape(str(m.get('content')))}"
                             for m in row["prompt"])
        return f"{prompt}<br><b>chosen:</b> {hl(row['chosen'], True)}<br><b>rejected:</b> {hl(row['rejected'], True)}"
    if "messages" in row:
        messages = row["messages"]
        return "<br>".join(f"<b>{html.escape(str(m.get('role')))}:</b> "
                           f"{hl(str(m.get('content') or ''), not masked or i == len(messages) - 1)}"
                           for i, m in enumerate(messages))
    if "prompt" in row:
        return f"{hl(row['prompt'], not masked)}<br>{hl(row['completion'], True)}"
    return hl(str(row.get("text", ""))[:2000], True)


def _int(value, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _float(value, default: float) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default



