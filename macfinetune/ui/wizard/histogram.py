"""The token-length histogram: bars from core.wizard.length_histogram, the max sequence length marked."""

from __future__ import annotations

from PySide6.QtCore import QRectF, QSize, Qt
from PySide6.QtGui import QPainter, QPalette, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

from macfinetune.core.wizard import Histogram
from macfinetune.ui.wizard.gauge import term_color


class HistogramView(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.histogram: Histogram | None = None
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setMinimumHeight(110)

    def sizeHint(self) -> QSize:
        return QSize(400, 110)

    def set_histogram(self, histogram: Histogram | None) -> None:
        self.histogram = histogram
        self.setToolTip(histogram.text if histogram else "")
        self.update()

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        pal = self.palette()
        area = QRectF(self.rect()).adjusted(4, 4, -4, -18)
        painter.fillRect(QRectF(self.rect()), pal.color(QPalette.ColorRole.Base))
        h = self.histogram
        if h is not None and h.rows:
            self._draw(painter, pal, area, h)
        painter.end()

    def _draw(self, painter: QPainter, pal: QPalette, area: QRectF, h: Histogram) -> None:
        top = max(h.counts) or 1
        span = h.edges[-1] - h.edges[0]
        width = area.width() / len(h.counts)
        kept, cut = term_color("weights", pal), term_color("attention", pal)
        for i, count in enumerate(h.counts):
            height = area.height() * count / top
            color = cut if h.edges[i] >= h.max_seq_length else kept
            painter.fillRect(QRectF(area.left() + i * width, area.bottom() - height, max(1.0, width - 1), height), color)
        x = area.left() + area.width() * (h.max_seq_length - h.edges[0]) / span
        painter.setPen(QPen(pal.color(QPalette.ColorRole.WindowText), 1, Qt.PenStyle.DashLine))
        painter.drawLine(int(x), int(area.top()), int(x), int(area.bottom()))
        painter.setPen(pal.color(QPalette.ColorRole.WindowText))
        painter.drawText(QRectF(area.left(), area.bottom() + 2, area.width(), 16), Qt.AlignmentFlag.AlignLeft, "0")
        painter.drawText(QRectF(area.left(), area.bottom() + 2, area.width(), 16), Qt.AlignmentFlag.AlignRight,
                         f"{h.edges[-1]:,} tokens")
        label = f"max_seq_length {h.max_seq_length:,}"
        room = painter.fontMetrics().horizontalAdvance(label) + 6
        left = x + 3 if x + room < area.right() else x - room
        painter.drawText(QRectF(left, area.top(), room, 16), Qt.AlignmentFlag.AlignLeft, label)
