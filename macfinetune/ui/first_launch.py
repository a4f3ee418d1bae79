"""The first-launch screen: what the app does, whether this machine suits it, and the demo as a first run."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QGridLayout, QLabel, QVBoxLayout, QWidget

from macfinetune.core.machine_facts import Fact, machine_facts

INTRO = ("macfinetune fine-tunes a language model on your own Mac: pick a model and your data, and it tells you "
         "before training whether it fits in memory. Then watch it learn, keep the best checkpoint and try it "
         "side by side with the base model.")
SETTING = "app/first_launch_done"


class FirstLaunchDialog(QDialog):
    demoRequested = Signal()

    def __init__(self, facts: list[Fact], parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Welcome to macfinetune")
        self.setObjectName("firstLaunch")
        self.setAutoFillBackground(True)  # a dialog grabbed offscreen (screenshots) paints its own background
        layout = QVBoxLayout(self)
        layout.setSpacing(12)
        title = QLabel("<h2>Welcome to macfinetune</h2>")
        layout.addWidget(title)
        intro = QLabel(INTRO)
        intro.setWordWrap(True)
        layout.addWidget(intro)
        layout.addLayout(self._facts_grid(facts))
        demo = QLabel("New here? The demo trains a tiny model on pirate-style answers in about a minute, offline, "
                      "and shows it live in the Monitor.")
        demo.setWordWrap(True)
        layout.addWidget(demo)
        layout.addStretch(1)
        buttons = QDialogButtonBox()
        self.demo_button = buttons.addButton("Run the demo", QDialogButtonBox.ButtonRole.AcceptRole)
        self.close_button = buttons.addButton("Start without it", QDialogButtonBox.ButtonRole.RejectRole)
        self.demo_button.clicked.connect(self._demo)
        self.close_button.clicked.connect(self.reject)
        layout.addWidget(buttons)
        self.setMinimumWidth(520)
        self.resize(560, layout.heightForWidth(560) if layout.hasHeightForWidth() else self.sizeHint().height())

    def _facts_grid(self, facts: list[Fact]) -> QGridLayout:
        grid = QGridLayout()
        self.fact_labels: dict[str, QLabel] = {}
        for row, fact in enumerate(facts):
            mark = QLabel("✓" if fact.ok else "!")
            mark.setStyleSheet(f"color: {'#2e9d4f' if fact.ok else '#d08700'}; font-weight: bold;")
            mark.setAccessibleName("fine" if fact.ok else "attention")
            value = QLabel(fact.value + (f"\n{fact.advice}" if fact.advice else ""))
            value.setWordWrap(True)
            value.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            grid.addWidget(mark, row, 0)
            grid.addWidget(QLabel(f"<b>{fact.label}</b>"), row, 1)
            grid.addWidget(value, row, 2)
            self.fact_labels[fact.label] = value
        grid.setColumnStretch(2, 1)
        return grid

    def _demo(self) -> None:
        self.demoRequested.emit()
        self.accept()


def offer_first_launch(window, settings, data_folder: Path) -> FirstLaunchDialog | None:
    """Show the screen once per data folder's settings; the demo runs on the engine and shows in the Monitor."""
    if settings.value(SETTING, False, type=bool):
        return None
    settings.setValue(SETTING, True)
    dialog = FirstLaunchDialog(machine_facts(data_folder), window)
    dialog.demoRequested.connect(lambda: (window.session.start_demo(), window.show_page("monitor")))
    dialog.open()
    return dialog
