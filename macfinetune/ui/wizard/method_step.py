"""Step 3, Method: Full, LoRA, DoRA, QLoRA; the recipe catalog judged for this model and Mac; the
recommendation for this Mac, preselected, with its reasons."""

from __future__ import annotations

import html
from dataclasses import replace

from PySide6.QtWidgets import (
    QAbstractItemView,
    QButtonGroup,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QRadioButton,
    QTableView,
    QTextBrowser,
    QWidget,
)

from macfinetune.core import catalog, wizard
from macfinetune.core.recipe import field_help
from macfinetune.core.recommend import Recommendation, recommend
from macfinetune.ui.wizard.catalog_table import CatalogTableModel
from macfinetune.ui.wizard.fields import make_error_label, show_error
from macfinetune.ui.wizard.step import Step

# training.objective: supervised for ordinary data, DPO or ORPO for preference pairs (docs/preference.md)
OBJECTIVES = (("sft", "Supervised (SFT)"), ("dpo", "DPO (preference pairs)"), ("orpo", "ORPO (preference pairs)"))


class MethodStep(Step):
    def __init__(self, page):
        super().__init__(page, "Method", "How the weights are trained. The recommendation below is for this model "
                         "on this Mac; the catalog lists the seeds' recipes that fit it.")
        self.recommendation: Recommendation | None = None
        self._catalog_for = None
        self._methods_for = ()
        self._choices: list = []
        self._build()

    def _build(self) -> None:
        self.method_row = QHBoxLayout()
        self.group = QButtonGroup(self)
        self.group.idClicked.connect(self._on_method_clicked)
        self.layout_.addLayout(self.method_row)
        self.error = make_error_label("method.type", self)
        self.layout_.addWidget(self.error)
        self._build_objectives()
        self.layout_.addWidget(QLabel("<b>Recommended for this Mac</b>", self))
        self.reasons = QTextBrowser(self)
        self.reasons.setObjectName("recommendation")
        self.reasons.setPlainText("Choose a model first.")
        self.reasons.setMaximumHeight(150)
        self.layout_.addWidget(self.reasons)
        use = QPushButton("Use the recommendation", self)
        use.setObjectName("useRecommendation")
        use.clicked.connect(self.apply_recommendation)
        self.layout_.addWidget(use)
        self._build_catalog()

    def _build_catalog(self) -> None:
        self.catalog_label = QLabel(self)
        self.catalog_label.setObjectName("catalogLabel")
        self.catalog_model = CatalogTableModel(self)
        self.table = QTableView(self)
        self.table.setObjectName("catalogTable")
        self.table.setTabKeyNavigation(False)  # Tab leaves the table (arrows move between rows)
        self.table.setModel(self.catalog_model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        header = self.table.horizontalHeader()
        for column in range(4):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(4, QHeaderView.ResizeMode.Stretch)
        self.table.setWordWrap(True)
        self.table.verticalHeader().setVisible(False)
        self.table.doubleClicked.connect(self._on_catalog_double_clicked)
        self.layout_.addWidget(self.catalog_label)
        self.layout_.addWidget(self.table, 1)

    def _build_objectives(self) -> None:
        """What the run learns: supervised, or DPO/ORPO when the data holds preference pairs."""
        row = QHBoxLayout()
        row.addWidget(QLabel("<b>Objective</b>", self))
        self.objectives = QButtonGroup(self)
        for i, (objective, label) in enumerate(OBJECTIVES):
            button = QRadioButton(label, self)
            button.setObjectName(f"objective:{objective}")
            button.setToolTip(field_help("training", "objective"))
            self.objectives.addButton(button, i)
            row.addWidget(button)
        row.addStretch(1)
        self.objectives.idClicked.connect(self._on_objective_clicked)
        self.layout_.addLayout(row)
        self.objective_error = make_error_label("training.objective", self)
        self.layout_.addWidget(self.objective_error)

    def _on_objective_clicked(self, index: int) -> None:
        self.page.set_value("training.objective", OBJECTIVES[index][0])

    def _show_objective(self) -> None:
        data = self.page.state.data
        chosen = self.page.state.values["training"].get("objective", "sft")
        for i, (objective, _) in enumerate(OBJECTIVES):
            button = self.objectives.button(i)
            button.blockSignals(True)
            button.setChecked(objective == chosen)
            button.setEnabled(data is None or data.is_pairs == (objective != "sft"))
            button.blockSignals(False)
        show_error(self.objective_error, self.page.errors.get("training.objective", ""))

    # --- methods ---------------------------------------------------------------------------

    def _fill_methods(self) -> None:
        for button in self.group.buttons():
            self.group.removeButton(button)
            self.method_row.removeWidget(button)
            button.hide()
            button.setParent(None)
            button.deleteLater()
        self._choices = wizard.methods_for(self.page.state.shape)
        previous = self.page.step_list  # new widgets join the Tab order last: put these first in the step
        for i, (method, bits, label) in enumerate(self._choices):
            button = QRadioButton(label, self)
            button.setObjectName(f"method:{method}" + (f"-{bits}" if bits else ""))
            self.group.addButton(button, i)
            self.method_row.addWidget(button)
            QWidget.setTabOrder(previous, button)
            previous = button

    def _on_method_clicked(self, index: int) -> None:
        method, bits, _ = self._choices[index]
        self.page.state.set("model.quantize", bits)
        self.page.set_value("method.type", method)

    def show_state(self) -> None:
        if self._methods_for is not self.page.state.shape:
            self._methods_for = self.page.state.shape
            self._fill_methods()
        values = self.page.state.values
        chosen = (values["method"]["type"], values["model"].get("quantize"))
        for i, (method, bits, _) in enumerate(self._choices):
            button = self.group.button(i)
            button.blockSignals(True)
            button.setChecked((method, bits) == chosen)
            button.blockSignals(False)
        show_error(self.error, self.page.errors.get("method.type", ""))
        self._show_objective()

    def refresh(self) -> None:
        shape = self.page.state.shape
        if shape is None or self._catalog_for is shape:
            return
        self._catalog_for = shape
        rows, hidden = wizard.catalog_rows(catalog.list_recipes(), shape, self.page.services.machine,
                                           catalog.entry_shape)
        self.catalog_model.set_rows(rows)
        self.catalog_label.setText(f"<b>Recipes for a model of this size</b> ({len(rows)} fit this Mac"
                                   + (f"; {hidden} that would not fit are hidden)" if hidden else ")"))

    def _on_catalog_double_clicked(self, index) -> None:
        row = self.catalog_model.rows[index.row()]
        self.page.set_recipe(self.page.state.with_paths(row.recipe))

    # --- recommendation ------------------------------------------------------------------

    def apply_recommendation(self) -> None:
        """Fill every setting from ``recommend`` for this model and Mac (keeps the model and data)."""
        state = self.page.state
        if state.shape is None:
            return
        data = state.data
        self.recommendation = recommend(state.shape, self.page.services.machine,
                                        model_path=state.values["model"]["path"],
                                        data_path=state.values["data"]["path"],
                                        train_rows=data.train_rows if data else None,
                                        longest_row_tokens=data.longest_tokens if data else None,
                                        sequences_per_row=2 if data and data.is_pairs else 1)
        self.reasons.setHtml(_reasons_html(self.recommendation))
        keep = {k: state.values["data"][k] for k in ("mask_prompt", "valid_fraction")}
        recipe = wizard.fit_to_model(self.recommendation.recipe, state.shape)
        if self.page.recipe is not None:  # the objective and its knobs are the user's, like the data's
            t = self.page.recipe.training
            recipe = replace(recipe, training=replace(recipe.training, objective=t.objective, dpo_beta=t.dpo_beta,
                                                      orpo_lambda=t.orpo_lambda))
        self.page.set_recipe(replace(recipe, data=replace(recipe.data, **keep)))
        self.page.recommended = True


def _reasons_html(rec: Recommendation) -> str:
    items = "".join(f"<li><b>{html.escape(c.key)} = {html.escape(str(c.value))}</b>: {html.escape(c.reason)}</li>"
                    for c in rec.choices)
    return f"<ul>{items}</ul>"
