"""Recipe fields as widgets: an editor per key, its help as tooltip and hint, its error beside it.

Editors are named ``field:<key>`` and error labels ``error:<key>`` (tests find them by name).
Values go out as text (``on_change(key, value)``) and the recipe schema converts and judges them,
so a wrong value is kept, shown and explained instead of being silently clamped by a spin box.
"""

from __future__ import annotations

import typing
from collections.abc import Callable

from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QCheckBox, QComboBox, QGridLayout, QLabel, QLineEdit, QWidget

from macfinetune.core import wizard


def error_color(palette: QPalette) -> str:
    dark = palette.color(QPalette.ColorRole.Window).lightness() < 128
    return QColor.fromHsl(0, 200, 170 if dark else 100).name()


def error_html(message: str, palette: QPalette) -> str:
    return f"<span style='color:{error_color(palette)}'>⚠ {message}</span>" if message else ""


def advice_html(message: str, palette: QPalette) -> str:
    """Advice that does not block (an unusual value): amber, not the error red."""
    dark = palette.color(QPalette.ColorRole.Window).lightness() < 128
    return f"<span style='color:{QColor.fromHsl(35, 200, 160 if dark else 90).name()}'>{message}</span>"


def make_error_label(key: str, parent: QWidget) -> QLabel:
    label = QLabel(parent)
    label.setObjectName(f"error:{key}")
    label.setWordWrap(True)
    label.setVisible(False)
    return label


def show_error(label: QLabel, message: str) -> None:
    label.setText(error_html(message, label.palette()))
    label.setVisible(bool(message))
    label.setProperty("message", message)


def _label(key: str) -> str:
    return key.partition(".")[2].replace("_", " ").capitalize()


class FieldGrid(QWidget):
    """Rows of label, editor, range hint; the error line under its field."""

    def __init__(self, keys: tuple[str, ...], on_change: Callable[[str, object], None], parent=None,
                 inline_help: bool = False):
        super().__init__(parent)
        self._on_change = on_change
        self._inline_help = inline_help
        self.editors: dict[str, QWidget] = {}
        self.errors: dict[str, QLabel] = {}
        grid = QGridLayout(self)
        grid.setColumnStretch(3, 1)
        for row, key in enumerate(keys):
            self._add_row(grid, row, key)

    def _add_row(self, grid: QGridLayout, row: int, key: str) -> None:
        meta, kind = wizard.field_spec(key)
        editor = self._editor(key, meta, kind)
        editor.setObjectName(f"field:{key}")
        editor.setMinimumWidth(220)
        editor.setToolTip(meta["help"])
        label = QLabel(_label(key), self)
        label.setToolTip(meta["help"])
        label.setBuddy(editor)
        hint = QLabel(wizard.range_hint(key), self)
        hint.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        error = make_error_label(key, self)
        grid.addWidget(label, 3 * row, 0)
        grid.addWidget(editor, 3 * row, 1)
        grid.addWidget(hint, 3 * row, 2)
        grid.addWidget(error, 3 * row + 1, 1, 1, 3)
        if self._inline_help:
            help_line = QLabel(meta["help"], self)
            help_line.setWordWrap(True)
            help_line.setForegroundRole(QPalette.ColorRole.PlaceholderText)
            grid.addWidget(help_line, 3 * row + 2, 1, 1, 3)
        self.editors[key], self.errors[key] = editor, error

    def _editor(self, key: str, meta: dict, kind) -> QWidget:
        if kind is bool:
            box = QCheckBox(self)
            box.toggled.connect(lambda on, k=key: self._on_change(k, on))
            return box
        if meta.get("choices") is not None:
            combo = QComboBox(self)
            for choice in meta["choices"]:
                combo.addItem("none" if choice is None else str(choice), choice)
            combo.currentIndexChanged.connect(lambda i, k=key, c=combo: self._on_change(k, c.itemData(i)))
            return combo
        edit = QLineEdit(self)
        edit.setPlaceholderText("none" if type(None) in typing.get_args(kind) else "")
        edit.textEdited.connect(lambda text, k=key: self._on_change(k, _text_value(text)))
        return edit

    def set_values(self, values: dict) -> None:
        """Show ``values`` (recipe_to_dict form) without sending changes back."""
        for key, editor in self.editors.items():
            section, _, name = key.partition(".")
            set_editor(editor, values.get(section, {}).get(name))

    def show_errors(self, errors: dict[str, str], advice: dict[str, str] | None = None) -> None:
        """Each field's error, or where it has none its advice (``core.recommend.advice``)."""
        for key, label in self.errors.items():
            show_error(label, errors.get(key, ""))
            if key not in errors and (advice or {}).get(key):
                label.setText(advice_html(advice[key], label.palette()))
                label.setVisible(True)


def _text_value(text: str):
    text = text.strip()
    return None if text == "" else text


def set_editor(editor: QWidget, value) -> None:
    editor.blockSignals(True)
    try:
        if isinstance(editor, QCheckBox):
            editor.setChecked(bool(value))
        elif isinstance(editor, QComboBox):
            index = editor.findData(value)
            editor.setCurrentIndex(index if index >= 0 else editor.findText(str(value)))
        elif not editor.hasFocus():  # never rewrite what the user is typing
            editor.setText(value_text(value))
    finally:
        editor.blockSignals(False)


def value_text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ", ".join(value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
