"""Step 4, Settings: every recipe knob with its help as tooltip and range beside it; the basics shown,
the rest under Advanced; presets from the seeds."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from macfinetune.core import catalog, wizard
from macfinetune.core.problems import ProblemError
from macfinetune.core.recipe import all_keys, load_recipe
from macfinetune.ui.wizard.fields import FieldGrid
from macfinetune.ui.wizard.step import Step

# Keys set on other steps (or at Save as recipe), not repeated here.
ELSEWHERE = ("name", "description", "model.path", "model.quantize", "data.path", "data.mask_prompt",
             "data.valid_fraction", "method.type")


class SettingsStep(Step):
    def __init__(self, page):
        super().__init__(page, "Settings", "Each setting says what it does (the advanced ones when you hover them). Wrong values are marked beside the "
                         "field with the allowed range; the memory gauge above follows every change.")
        advanced = tuple(k for k in all_keys() if k not in ELSEWHERE and k not in wizard.BASIC_KEYS)
        self._build_presets()
        self.basics = FieldGrid(wizard.BASIC_KEYS, page.set_value, self, inline_help=True)
        self.advanced = FieldGrid(advanced, page.set_value, self)
        self.advanced.setVisible(False)
        self.fold = QToolButton(self)
        self.fold.setObjectName("advancedToggle")
        self.fold.setText("Advanced settings")
        self.fold.setCheckable(True)
        self.fold.setArrowType(Qt.ArrowType.RightArrow)
        self.fold.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.fold.toggled.connect(self._on_fold_toggled)
        inner = QWidget(self)
        column = QVBoxLayout(inner)
        for w in (self.basics, self.fold, self.advanced):
            column.addWidget(w)
        column.addStretch(1)
        scroll = QScrollArea(self)
        scroll.setWidgetResizable(True)
        scroll.setWidget(inner)
        self.layout_.addWidget(scroll, 1)

    def _build_presets(self) -> None:
        row = QHBoxLayout()
        self.presets = QComboBox(self)
        self.presets.setObjectName("presets")
        self.presets.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.presets.setMinimumContentsLength(24)  # long preset names must not widen the window
        for name in wizard.PRESETS:
            recipe = load_recipe(catalog.recipe_path(name))
            self.presets.addItem(f"{name}: {recipe.description}", name)
        apply = QPushButton("Apply preset", self)
        apply.setObjectName("applyPreset")
        apply.clicked.connect(self._on_apply_clicked)
        row.addWidget(QLabel("Preset:", self))
        row.addWidget(self.presets, 1)
        row.addWidget(apply)
        self.layout_.addLayout(row)

    def _on_apply_clicked(self) -> None:
        self.apply_preset(self.presets.currentData())

    def apply_preset(self, name: str) -> None:
        page = self.page
        base = page.recipe or page.state.with_paths(load_recipe(catalog.recipe_path(name)))
        try:
            preset = load_recipe(catalog.recipe_path(name))
        except ProblemError:
            return
        page.set_recipe(wizard.apply_preset(base, preset, page.state.shape))

    def _on_fold_toggled(self, on: bool) -> None:
        self.advanced.setVisible(on)
        self.fold.setArrowType(Qt.ArrowType.DownArrow if on else Qt.ArrowType.RightArrow)

    def show_state(self) -> None:
        for grid in (self.basics, self.advanced):
            grid.set_values(self.page.state.values)
            grid.show_errors(self.page.errors, self.page.advice)
        if any(k in self.page.errors for k in self.advanced.editors):
            self.fold.setChecked(True)  # never hide a wrong field
