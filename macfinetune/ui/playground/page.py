"""The Playground: one prompt, two panes (the base model and a run's checkpoint) answering side by side,
streamed token by token through the chat template, multi-turn, with a history of prompts and the same
prompt on every checkpoint of the run. Answers are engine jobs (``jobs.chat``) sent through the session;
the engine keeps the models loaded between prompts."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from macfinetune import jobs
from macfinetune.core import chat
from macfinetune.core.chat import BASE, TUNED, Conversation, PromptHistory, RunChoice
from macfinetune.core.events import (
    GenerationFinished,
    JobCancelled,
    JobFailed,
    JobFinished,
    JobStarted,
    ModelLoaded,
    TokenChunk,
)
from macfinetune.ui.playground.answers import CheckpointAnswers
from macfinetune.ui.playground.controls import SamplingBar
from macfinetune.ui.playground.pane import ChatPane

ENDS = (JobFinished, JobFailed, JobCancelled)
EMPTY = ("No run with a saved checkpoint yet. Train one from New run (or run the demo from the Help menu); "
         "its checkpoints appear here.")
TRAINING = "A run is training: the Playground answers again when it ends (its models were let go to make room)."


class PromptBox(QPlainTextEdit):
    """Multi-line; ⌘↩ (Ctrl+Return elsewhere) sends."""

    submitted = Signal()

    def keyPressEvent(self, event) -> None:  # noqa: N802 (Qt override)
        send = event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter)
        if send and event.modifiers() & Qt.KeyboardModifier.ControlModifier:
            self.submitted.emit()
            return
        super().keyPressEvent(event)


class PlaygroundPage(QWidget):
    def __init__(self, session, settings, parent=None):
        super().__init__(parent)
        self.setObjectName("playgroundPage")
        self.session, self.settings = session, settings
        self.choices: list[RunChoice] = []
        self.conversations = {BASE: Conversation(), TUNED: Conversation()}
        self.history = PromptHistory(tuple(settings.value("playground/history", []) or []))
        self._jobs: dict[int, str] = {}  # job id -> pane
        self._unanswered: set[str] = set()
        self._stopping = False
        self._build()
        session.jobEvent.connect(self._on_session_job_event)
        session.runsChanged.connect(self.refresh_runs)
        session.stateChanged.connect(self._on_session_state_changed)
        if hasattr(session, "testPrompt"):
            session.testPrompt.connect(self.select_run)
        self.refresh_runs()
        self._show_history()

    # --- building ---------------------------------------------------------------------

    def _build(self) -> None:
        self.controls = SamplingBar()
        self.panes = {BASE: ChatPane(BASE, "Base"), TUNED: ChatPane(TUNED, "Tuned")}
        self.run_box, self.checkpoint_box = QComboBox(), QComboBox()
        self.run_box.setObjectName("runChoice")
        self.checkpoint_box.setObjectName("checkpointChoice")
        self.run_box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.run_box.setMinimumContentsLength(16)
        self.run_box.currentIndexChanged.connect(self._on_run_box_changed)
        self.checkpoint_box.currentIndexChanged.connect(self._on_checkpoint_box_changed)
        self.answers = CheckpointAnswers()
        self.notice = QLabel()
        self.notice.setObjectName("playgroundNotice")
        self.notice.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addLayout(self._model_row())
        layout.addWidget(self.controls)
        layout.addWidget(self.notice)
        layout.addWidget(self._body(), 1)
        layout.addLayout(self._prompt_row())

    def _model_row(self) -> QHBoxLayout:
        row = QHBoxLayout()
        for text, box, stretch in (("Run", self.run_box, 1), ("Checkpoint", self.checkpoint_box, 0)):
            label = QLabel(text)
            label.setBuddy(box)
            row.addWidget(label)
            row.addWidget(box, stretch)
        return row

    def _body(self) -> QSplitter:
        side_by_side = QSplitter(Qt.Orientation.Horizontal)
        side_by_side.setObjectName("panesSplitter")
        for pane in self.panes.values():
            side_by_side.addWidget(pane)
        side_by_side.setSizes([1000, 1000])
        self.column = QSplitter(Qt.Orientation.Vertical)
        self.column.addWidget(side_by_side)
        self.column.addWidget(self._answers_box())
        self.column.setStretchFactor(0, 2)
        self.column.setStretchFactor(1, 1)
        body = QSplitter(Qt.Orientation.Horizontal)
        body.setObjectName("playgroundSplitter")
        body.addWidget(self.column)
        body.addWidget(self._history_column())
        body.setStretchFactor(0, 1)
        body.setSizes([900, 200])
        return body

    def _answers_box(self) -> QWidget:
        self.answers_caption = QLabel()
        self.answers_caption.setObjectName("answersCaption")
        self.answers_caption.setTextFormat(Qt.TextFormat.PlainText)
        hide = self._button("hideAnswers", "Hide", lambda: self.answers_box.hide())
        header = QHBoxLayout()
        header.addWidget(self.answers_caption, 1)
        header.addWidget(hide)
        self.answers_box = QWidget()
        layout = QVBoxLayout(self.answers_box)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(header)
        layout.addWidget(self.answers, 1)
        self.answers_box.hide()
        return self.answers_box

    def _history_column(self) -> QWidget:
        self.history_list = QListWidget()
        self.history_list.setObjectName("promptHistory")
        self.history_list.setWordWrap(True)
        self.history_list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.history_list.itemDoubleClicked.connect(self._on_history_list_double_clicked)
        self.rerun_button = self._button("rerun", "Re-run", self._on_rerun_clicked)
        column = QWidget()
        layout = QVBoxLayout(column)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(QLabel("History"))
        layout.addWidget(self.history_list, 1)
        layout.addWidget(self.rerun_button)
        column.setMinimumWidth(140)
        return column

    def _prompt_row(self) -> QHBoxLayout:
        self.prompt = PromptBox()
        self.prompt.setObjectName("promptBox")
        self.prompt.setPlaceholderText("Ask both models… (⌘↩ sends)")
        self.prompt.setFixedHeight(self.prompt.fontMetrics().lineSpacing() * 4 + 12)
        self.prompt.submitted.connect(self.send)
        self.prompt.textChanged.connect(self._update_actions)
        self.send_button = self._button("send", "Send", self.send)
        self.send_button.setDefault(True)
        self.stop_button = self._button("stop", "Stop", self.stop)
        self.all_button = self._button("allCheckpoints", "All checkpoints", self.ask_all_checkpoints)
        self.all_button.setToolTip("The same prompt on every checkpoint of the run, one answer each")
        self.new_button = self._button("newChat", "New chat", self.new_chat)
        buttons = QVBoxLayout()
        for left, right in ((self.send_button, self.stop_button), (self.all_button, self.new_button)):
            pair = QHBoxLayout()
            pair.addWidget(left)
            pair.addWidget(right)
            buttons.addLayout(pair)
        row = QHBoxLayout()
        row.addWidget(self.prompt, 1)
        row.addLayout(buttons)
        return row

    def _button(self, name: str, text: str, slot) -> QPushButton:
        button = QPushButton(text)
        button.setObjectName(name)
        button.clicked.connect(lambda _=False: slot())
        return button

    # --- runs and checkpoints -----------------------------------------------------------

    def refresh_runs(self) -> None:
        """The runs with checkpoints in the data folder and those opened before; keeps the selection."""
        current = self.current_choice()
        self.choices = chat.list_run_choices(self.session.data_folder(), self.session.opened_folders())
        self.run_box.blockSignals(True)
        self.run_box.clear()
        self.run_box.addItems([c.label for c in self.choices])
        paths = [c.path for c in self.choices]
        self.run_box.setCurrentIndex(paths.index(current.path) if current and current.path in paths else 0)
        self.run_box.blockSignals(False)
        self._on_run_box_changed()

    def select_run(self, run_dir: str, checkpoint: str = "best") -> None:
        """Preselect a run and one of its checkpoints (the Checkpoints page's Test prompt)."""
        path = Path(run_dir).resolve()
        if path not in [c.path for c in self.choices] and (choice := chat.run_choice(path)) is not None:
            self.choices.insert(0, choice)
            self.run_box.insertItem(0, choice.label)
        paths = [c.path for c in self.choices]
        if path in paths:
            self.run_box.setCurrentIndex(paths.index(path))
            self._select_checkpoint(self.choices[paths.index(path)].pick(checkpoint))

    def current_choice(self) -> RunChoice | None:
        index = self.run_box.currentIndex() if hasattr(self, "run_box") else -1
        return self.choices[index] if 0 <= index < len(self.choices) else None

    def current_checkpoint(self) -> int | None:
        return self.checkpoint_box.currentData()

    def _on_run_box_changed(self) -> None:
        choice = self.current_choice()
        self.checkpoint_box.clear()
        if choice is not None:
            for iteration, label in zip(choice.checkpoints, choice.checkpoint_labels(), strict=True):
                self.checkpoint_box.addItem(label, iteration)
            self._select_checkpoint(choice.pick("best"))
        self.panes[BASE].set_title(f"Base · {Path(choice.base_model).name}" if choice else "Base")
        self._update_actions()

    def _on_checkpoint_box_changed(self) -> None:
        text = self.checkpoint_box.currentText()
        self.panes[TUNED].set_title(f"Tuned · checkpoint {text}" if text else "Tuned")

    def _select_checkpoint(self, iteration: int | None) -> None:
        index = self.checkpoint_box.findData(iteration)
        if index >= 0:
            self.checkpoint_box.setCurrentIndex(index)

    # --- intent -----------------------------------------------------------------------

    def send(self, prompt: str | None = None) -> None:
        """Ask both panes (each continues its own conversation)."""
        prompt = (self.prompt.toPlainText() if prompt is None else prompt).strip()
        choice = self.current_choice()
        if not prompt or not self._can_ask() or choice is None:
            return
        self._ask(prompt)
        self._submit(BASE, self.conversations[BASE], model=choice.base_model, adapter=None)
        self._submit(TUNED, self.conversations[TUNED], model=None,
                     adapter=(choice.path, str(self.current_checkpoint())))

    def ask_all_checkpoints(self) -> None:
        """The prompt (or the last one sent) on every checkpoint of the run, one new answer each."""
        prompt = self.prompt.toPlainText().strip() or (self.history.prompts[:1] or [""])[0]
        choice = self.current_choice()
        if not prompt or not self._can_ask() or choice is None:
            return
        self._remember(prompt)
        rows = [(chat.checkpoint_pane(it), label) for it, label in zip(choice.checkpoints,
                                                                       choice.checkpoint_labels(), strict=True)]
        self.answers.start(rows)
        self.answers_caption.setText(f"Every checkpoint of {choice.label}: {chat.history_label(prompt, 80)}")
        self.answers_box.show()
        question = Conversation().ask(prompt)
        for (pane, _), iteration in zip(rows, choice.checkpoints, strict=True):
            self._submit(pane, question, model=None, adapter=(choice.path, str(iteration)))

    def stop(self) -> None:
        """Stop every answer: queued ones never start, the one being written ends where it is."""
        self._stopping = True
        for job_id in list(self._jobs):
            self.session.cancel(job_id)

    def new_chat(self) -> None:
        if self._jobs:
            return
        for pane_id, pane in self.panes.items():
            self.conversations[pane_id] = Conversation()
            pane.show_conversation(Conversation())
            pane.set_load("")
            pane.set_speed("")

    def rerun(self, prompt: str) -> None:
        self.prompt.setPlainText(prompt)
        self.send()

    def _ask(self, prompt: str) -> None:
        self._remember(prompt)
        self.prompt.clear()
        system = self.controls.system_prompt()
        for pane_id, pane in self.panes.items():
            first = not self.conversations[pane_id].turns
            self.conversations[pane_id] = self.conversations[pane_id].ask(prompt)
            if first and system.strip():
                pane.add_turn("system", system.strip())
            pane.add_turn("user", prompt)
            pane.set_speed("")

    def _remember(self, prompt: str) -> None:
        self.history = self.history.add(prompt)
        self.settings.setValue("playground/history", list(self.history.prompts))
        self._show_history()
        self._stopping = False

    def _submit(self, pane: str, conversation: Conversation, *, model: str | None, adapter) -> None:
        handle = self.session.submit("chat", jobs.chat, pane=pane, model=model, adapter=adapter,
                                     messages=conversation.messages(self.controls.system_prompt()),
                                     sampling=self.controls.sampling())
        self._jobs[handle.id] = pane
        self._unanswered.add(pane)
        self._set_load(pane, "waiting…")
        self._update_actions()

    def _can_ask(self) -> bool:
        return not self._jobs and not self.session.is_training

    # --- events -----------------------------------------------------------------------

    def _on_session_job_event(self, job_event) -> None:
        pane = self._jobs.get(job_event.job_id)
        if pane is None:
            return
        self.apply(pane, job_event.event)
        if isinstance(job_event.event, ENDS):
            del self._jobs[job_event.job_id]
            self._update_actions()

    def apply(self, pane: str, event) -> None:
        """One event of ``pane``'s answer (from its job, or replayed)."""
        if isinstance(event, JobStarted):
            self._set_load(pane, "loading the model…")
        elif isinstance(event, ModelLoaded):
            self._set_load(pane, chat.load_text(event.seconds, event.reused, event.swapped))
            if pane in self.panes:
                self.panes[pane].add_turn("assistant")
        elif isinstance(event, TokenChunk):
            self._append(pane, event.text)
        elif isinstance(event, GenerationFinished):
            self._finish(pane, event)
        elif isinstance(event, (JobFailed, JobCancelled)) and pane in self._unanswered:
            self._unanswered.discard(pane)
            self._fail(pane, event.message if isinstance(event, JobFailed) else "stopped before it answered")

    def replay(self, prompt: str, events: list[tuple[str, object]]) -> None:
        """A recorded exchange (screenshots, view tests): ``prompt`` asked, then each pane's events."""
        self._ask(prompt)
        for pane, event in events:
            self._unanswered.add(pane)
            self.apply(pane, event)

    def _append(self, pane: str, text: str) -> None:
        if pane in self.panes:
            self.panes[pane].append(text)
        elif self.answers.has(pane):
            self.answers.append(pane, text)

    def _finish(self, pane: str, event: GenerationFinished) -> None:
        self._unanswered.discard(pane)
        speed = chat.speed_text(event.generated_tokens, event.tokens_per_second, self._stopping)
        if pane in self.panes:
            self.conversations[pane] = self.conversations[pane].answer(event.text)
            self.panes[pane].set_speed(speed)
        elif self.answers.has(pane):
            self.answers.set_state(pane, speed)

    def _fail(self, pane: str, message: str) -> None:
        if pane in self.panes:  # the question stays in sight; the next prompt is sent without it
            self.panes[pane].show_conversation(self.conversations[pane], self.controls.system_prompt())
            self.conversations[pane] = self.conversations[pane].undo_question()
            self.panes[pane].set_load(f"⚠ {message}")
        elif self.answers.has(pane):
            self.answers.set_state(pane, message)

    def _set_load(self, pane: str, text: str) -> None:
        if pane in self.panes:
            self.panes[pane].set_load(text)
        elif self.answers.has(pane):
            self.answers.set_state(pane, text)

    def _on_session_state_changed(self, state: str) -> None:
        self._update_actions()

    # --- history ----------------------------------------------------------------------

    def _show_history(self) -> None:
        self.history_list.clear()
        for prompt in self.history.prompts:
            item = QListWidgetItem(chat.history_label(prompt, 40))
            item.setData(Qt.ItemDataRole.UserRole, prompt)
            item.setToolTip(prompt)
            self.history_list.addItem(item)
        self._update_actions()

    def _on_history_list_double_clicked(self, item: QListWidgetItem) -> None:
        self.rerun(item.data(Qt.ItemDataRole.UserRole))

    def _on_rerun_clicked(self) -> None:
        item = self.history_list.currentItem()
        if item is not None:
            self.rerun(item.data(Qt.ItemDataRole.UserRole))

    # --- state ------------------------------------------------------------------------

    def _update_actions(self) -> None:
        if not hasattr(self, "new_button"):
            return
        ready = self.current_choice() is not None and self._can_ask()
        has_prompt = bool(self.prompt.toPlainText().strip())
        self.send_button.setEnabled(ready and has_prompt)
        self.all_button.setEnabled(ready and (has_prompt or bool(self.history.prompts)))
        self.rerun_button.setEnabled(ready and self.history_list.count() > 0)
        self.stop_button.setEnabled(bool(self._jobs))
        self.new_button.setEnabled(not self._jobs)
        notice = TRAINING if self.session.is_training else EMPTY if self.current_choice() is None else ""
        self.notice.setText(notice)
        self.notice.setVisible(bool(notice))
        self.run_box.setEnabled(bool(self.choices))
        self.checkpoint_box.setEnabled(bool(self.choices))
