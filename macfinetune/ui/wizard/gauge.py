"""The memory gauge: a stacked bar of the estimate's parts against this Mac's budget (always visible)."""

from __future__ import annotations

from PySide6.QtCore import QRectF, QSize, Qt
from PySide6.QtGui import QColor, QPainter, QPalette, QPen
from PySide6.QtWidgets import QHBoxLayout, QLabel, QSizePolicy, QWidget

from macfinetune.core.wizard import Gauge

# One hue per estimator term; lightness follows the palette so both modes stay legible.
_HUES = {"weights": 210, "trainable": 280, "activations": 30, "attention": 0, "logits": 130, "overhead": 60}


def term_color(key: str, palette: QPalette) -> QColor:
    dark = palette.color(QPalette.ColorRole.Window).lightness() < 128
    return QColor.fromHsl(_HUES.get(key, 0), 150, 150 if dark else 120)


class GaugeBar(QWidget):
    """The bar alone; ``set_gauge`` redraws it. The budget is a vertical line with its value."""

    def __init__(self, parent=None, height: int = 18):
        super().__init__(parent)
        self._gauge: Gauge | None = None
        self._height = height
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def sizeHint(self) -> QSize:
        return QSize(320, self._height)

    def minimumSizeHint(self) -> QSize:
        return QSize(120, self._height)

    def set_gauge(self, gauge: Gauge | None) -> None:
        self._gauge = gauge
        self.setToolTip(_tooltip(gauge))
        self.update()

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        pal = self.palette()
        rect = QRectF(self.rect()).adjusted(0.5, 0.5, -0.5, -0.5)
        painter.fillRect(rect, pal.color(QPalette.ColorRole.Base))
        g = self._gauge
        if g is not None and g.budget_gb > 0:
            scale = rect.width() / max(g.total_gb, g.budget_gb * 1.1)
            x = rect.left()
            for seg in g.segments:
                width = seg.gb * scale
                painter.fillRect(QRectF(x, rect.top(), width, rect.height()), term_color(seg.key, pal))
                x += width
            budget_x = rect.left() + g.budget_gb * scale
            painter.setPen(QPen(pal.color(QPalette.ColorRole.WindowText), 2))
            painter.drawLine(int(budget_x), int(rect.top()), int(budget_x), int(rect.bottom()))
        painter.setPen(QPen(pal.color(QPalette.ColorRole.Mid), 1))
        painter.drawRect(rect)
        painter.end()


def _tooltip(g: Gauge | None) -> str:
    if g is None:
        return "Choose a model to see the memory estimate"
    lines = [f"{s.label}: {s.gb:.2f} GB" for s in g.segments]
    return "\n".join([*lines, f"total {g.total_gb:.2f} GB; budget {g.budget_gb:.1f} GB ({g.status})"])


class MemoryGauge(QWidget):
    """Bar plus its words ("3.1 of 12.6 GB · fits"); the compact one sits above every step."""

    def __init__(self, parent=None, height: int = 18, legend: bool = False):
        super().__init__(parent)
        self.bar = GaugeBar(self, height)
        self._status: str | None = None
        self.text = QLabel("no model yet", self)
        self.text.setObjectName("gaugeText")
        self.legend = QLabel(self) if legend else None
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(QLabel("Memory:", self))
        layout.addWidget(self.bar, 1)
        layout.addWidget(self.text)
        self.text.setMinimumWidth(self.text.fontMetrics().horizontalAdvance("888.8 of 888.8 GB · will not fit"))
        self.text.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)

    @property
    def status(self) -> str | None:
        return self._status

    def set_gauge(self, gauge: Gauge | None) -> None:
        self._status = gauge.status if gauge else None
        self.bar.set_gauge(gauge)
        self.text.setText(status_html(gauge, self.palette()) if gauge else "no model yet")
        self.text.setProperty("plain", gauge.text if gauge else "no model yet")

    def set_waiting(self, why: str) -> None:
        """Keep the last bar, say why it does not follow (a field is wrong)."""
        self.text.setText(why)
        self.text.setProperty("plain", why)


def status_color(status: str, palette: QPalette) -> QColor | None:
    dark = palette.color(QPalette.ColorRole.Window).lightness() < 128
    hue = {"tight": 38, "will not fit": 0}.get(status)
    return None if hue is None else QColor.fromHsl(hue, 200, 170 if dark else 100)


def status_html(g: Gauge, palette: QPalette) -> str:
    color = status_color(g.status, palette)
    return f"<span style='color:{color.name()}'><b>{g.text}</b></span>" if color else g.text


def legend_html(g: Gauge, palette: QPalette) -> str:
    """The parts of the bar in words, each with its colour swatch."""
    rows = [f"<span style='color:{term_color(s.key, palette).name()}'>■</span> {s.label}: {s.gb:.2f} GB"
            for s in g.segments]
    return "<br>".join(rows)
