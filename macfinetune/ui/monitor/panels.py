"""The Monitor's plots, one class per panel. Each draws from the buffer when asked by the page's
throttled redraw; colours come from ``PlotColors`` and are redone when the palette changes."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QPalette, QPen
from PySide6.QtWidgets import QCheckBox, QHBoxLayout, QLabel, QSlider, QVBoxLayout, QWidget

from macfinetune.core.smoothing import EmaState, ema
from macfinetune.ui.monitor.buffer import MetricsBuffer
from macfinetune.ui.widgets.theme import PRESSURE, PlotColors, faint

pg.setConfigOptions(antialias=False, useOpenGL=False)
VAL_SYMBOLS_MAX = 500  # validation points drawn with a marker up to this many; a plain line beyond


def _pen(color: QColor, width: int = 1, style=Qt.PenStyle.SolidLine) -> QPen:
    pen = pg.mkPen(color, width=width)
    pen.setStyle(style)
    pen.setCosmetic(True)
    return pen


def set_curve(curve: pg.PlotDataItem, x, y) -> None:
    """``curve.setData``; a lone point is drawn as a dot (a line through one point draws nothing)."""
    lone = len(x) == 1
    if lone != (curve.opts["symbol"] is not None):
        pen = pg.mkPen(curve.opts["pen"])
        curve.setSymbolPen(pen)
        curve.setSymbolBrush(pen.color())
        curve.setSymbolSize(6)
        curve.setSymbol("o" if lone else None)
    curve.setData(x, y)


class Panel(QWidget):
    """A titled PlotWidget; subclasses make curves and fill them in ``redraw``."""

    title = ""

    def __init__(self, name: str, parent=None):
        super().__init__(parent)
        self.setObjectName(name)
        self.setMinimumWidth(240)
        self.plot = pg.PlotWidget()
        self.plot.setObjectName(f"{name}Plot")
        self.plot.setMenuEnabled(False)
        self.plot.showGrid(x=True, y=True, alpha=0.15)
        self.plot.setMouseEnabled(x=True, y=False)
        self.plot.getPlotItem().setDownsampling(auto=True, mode="peak")
        self.plot.getPlotItem().setClipToView(True)
        self.plot.getViewBox().setLimits(xMin=0)  # iterations and seconds: auto range never goes below 0
        self.heading = QLabel(self.title)
        self.heading.setObjectName(f"{name}Title")
        font = self.heading.font()
        font.setBold(True)
        self.heading.setFont(font)
        self.header = QHBoxLayout()
        self.header.addWidget(self.heading)
        self.header.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.setSpacing(2)
        layout.addLayout(self.header)
        layout.addWidget(self.plot, 1)
        self.legend = QLabel()
        self.legend.setObjectName(f"{name}Legend")
        self.legend.setTextFormat(Qt.TextFormat.RichText)
        self.legend.setWordWrap(True)
        layout.addWidget(self.legend)
        self.curves: dict[str, pg.PlotDataItem] = {}
        self.labels: dict[str, str] = {}
        self._drawn: dict[str, tuple] = {}  # key -> (series, changes) last handed to pyqtgraph

    def add_curve(self, key: str, label: str) -> pg.PlotDataItem:
        curve = self.plot.plot([], [], connect="finite")
        curve.setSkipFiniteCheck(False)
        self.curves[key] = curve
        self.labels[key] = label
        return curve

    def legend_items(self) -> list[tuple[str, QColor]]:
        return [(self.labels[k], pg.mkPen(c.opts["pen"]).color()) for k, c in self.curves.items() if self.labels[k]]

    def _set_legend(self) -> None:
        """The legend as a line of coloured marks under the plot (an in-plot legend hides the curves)."""
        self.legend.setText("&nbsp;&nbsp;".join(f'<span style="color:{color.name()}">━━</span>&nbsp;{label}'
                                                  for label, color in self.legend_items()))

    def apply_colors(self, colors: PlotColors) -> None:
        self.plot.setBackground(colors.background)
        for axis in ("left", "bottom"):
            ax = self.plot.getAxis(axis)
            ax.setPen(_pen(colors.grid))
            ax.setTextPen(_pen(colors.foreground))
        for i, curve in enumerate(self.curves.values()):
            curve.setPen(_pen(colors.series_color(i)))
        self._set_legend()

    def redraw(self, buffer: MetricsBuffer) -> None:
        for key, curve in self.curves.items():
            if self.changed(buffer, key):
                set_curve(curve, *buffer.series[key].view())

    def changed(self, buffer: MetricsBuffer, key: str, series_key: str | None = None) -> bool:
        """Whether curve ``key`` (drawn from ``series_key``, default the same name) moved since it was drawn;
        setData on 100k points costs milliseconds, so unchanged curves are left alone."""
        series = buffer.series[series_key or key]
        stamp = (series, series.changes)
        if self._drawn.get(key) == stamp:
            return False
        self._drawn[key] = stamp
        return True

    def export_png(self, path: str) -> bool:
        from pyqtgraph.exporters import ImageExporter

        exporter = ImageExporter(self.plot.getPlotItem())
        exporter.parameters()["width"] = max(600, self.plot.width())
        return bool(exporter.export(path))


class LossPanel(Panel):
    """Train and validation loss; EMA smoothing with the raw curve faint behind; log scale; best marked;
    a hover read-out of step, raw and smoothed value."""

    title = "Loss"

    def __init__(self, parent=None):
        super().__init__("lossPanel", parent)
        self.raw = self.add_curve("raw", "")
        self.smooth = self.add_curve("smooth", "train (smoothed; raw faint)")
        self.val = self.add_curve("val_loss", "validation")
        self.val.setSymbol("o")
        self.val.setSymbolSize(5)
        self.best = pg.ScatterPlotItem(size=14, symbol="star")
        self.plot.addItem(self.best)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setObjectName("smoothingSlider")
        self.slider.setRange(0, 99)
        self.slider.setFixedWidth(120)
        self.slider.setToolTip("Smoothing: debiased exponential moving average (like TensorBoard)")
        self.smoothing_label = QLabel()
        self.smoothing_label.setObjectName("smoothingValue")
        self.log_box = QCheckBox("Log scale")
        self.log_box.setObjectName("logScale")
        self.readout = QLabel(" ")
        self.readout.setObjectName("lossReadout")
        for w in (self.readout, QLabel("Smoothing"), self.slider, self.smoothing_label, self.log_box):
            self.header.addWidget(w)
        self.slider.valueChanged.connect(self._on_slider_changed)
        self.log_box.toggled.connect(self._on_log_toggled)
        self._proxy = pg.SignalProxy(self.plot.scene().sigMouseMoved, rateLimit=30, slot=self._on_mouse_moved)
        self._ema: tuple[object, int, float, np.ndarray, EmaState] = (None, 0, -1.0, np.empty(0), EmaState())
        self._buffer: MetricsBuffer | None = None
        self.set_smoothing(0.6)

    @property
    def weight(self) -> float:
        return self.slider.value() / 100

    def set_smoothing(self, weight: float) -> None:
        self.slider.setValue(int(round(weight * 100)))
        self.smoothing_label.setText(f"{self.weight:.2f}")

    def apply_colors(self, colors: PlotColors) -> None:
        super().apply_colors(colors)
        train, val = colors.series_color(0), colors.series_color(1)
        self.raw.setPen(_pen(faint(train)))
        self.smooth.setPen(_pen(train))
        self.val.setPen(_pen(val))
        self.val.setSymbolBrush(val)
        self.val.setSymbolPen(_pen(val))
        self.best.setBrush(pg.mkBrush(colors.series_color(2)))
        self.best.setPen(_pen(colors.foreground))
        self._set_legend()
        self.legend.setText(self.legend.text() + f'&nbsp;&nbsp;<span style="color:{colors.series_color(2).name()}">'
                            "★</span>&nbsp;best checkpoint")

    def smoothed(self, buffer: MetricsBuffer) -> np.ndarray:
        """EMA of the train loss, extended incrementally as points arrive."""
        series = buffer.series["train_loss"]
        _, y = series.view()
        source, n, weight, values, state = self._ema
        if source is not series or weight != self.weight or n > len(y):
            n, values, state = 0, np.empty(0), EmaState()  # another run, or another weight: start over
        if n < len(y):
            more, state = ema(y[n:].tolist(), self.weight, state)
            values = np.concatenate([values, more])
        self._ema = (series, len(y), self.weight, values, state)
        return values

    def redraw(self, buffer: MetricsBuffer) -> None:
        self._buffer = buffer
        x, y = buffer.series["train_loss"].view()
        if self.changed(buffer, "raw", "train_loss") | self.changed(buffer, "smooth", "train_loss"):
            set_curve(self.raw, x, y)
            set_curve(self.smooth, x, self.smoothed(buffer))
        if self.changed(buffer, "val_loss"):
            vx, vy = buffer.series["val_loss"].view()
            self.val.setSymbol("o" if len(vx) <= VAL_SYMBOLS_MAX else None)  # 100k markers cost 50 ms a redraw
            self.val.setData(vx, vy)
        best = buffer.run.best
        self.best.setData([best[0]], [best[1]] if best else []) if best else self.best.setData([], [])
        self.best.setToolTip(f"best checkpoint: iteration {best[0]}, validation loss {best[1]:.3f}" if best else "")

    def readout_at(self, step: float) -> str:
        """'step 420 · raw 1.234 · smoothed 1.200' at the report nearest to ``step``."""
        if self._buffer is None:
            return ""
        x, y = self._buffer.series["train_loss"].view()
        if not len(x):
            return ""
        i = int(np.clip(np.searchsorted(x, step), 0, len(x) - 1))
        if i > 0 and abs(x[i - 1] - step) < abs(x[i] - step):
            i -= 1
        smooth = self.smoothed(self._buffer)
        return f"step {int(x[i])} · raw {y[i]:.3f} · smoothed {smooth[i]:.3f}"

    def _on_slider_changed(self, value: int) -> None:
        self.smoothing_label.setText(f"{value / 100:.2f}")
        if self._buffer is not None:
            self._drawn.pop("smooth", None)
            self.redraw(self._buffer)

    def _on_log_toggled(self, on: bool) -> None:
        self.plot.setLogMode(x=False, y=on)

    def _on_mouse_moved(self, args) -> None:
        pos = args[0]
        if self.plot.sceneBoundingRect().contains(pos):
            step = self.plot.getPlotItem().vb.mapSceneToView(pos).x()
            self.readout.setText(self.readout_at(step))


class ThroughputPanel(Panel):
    title = "Throughput"

    def __init__(self, parent=None):
        super().__init__("throughputPanel", parent)
        self.add_curve("tokens_per_second", "tokens/s (left)")
        self.add_curve("real_tokens_per_second", "real tokens/s (left)")  # non-padding tokens the loss trains on
        self.its = pg.ViewBox()
        self.plot.getPlotItem().showAxis("right")
        self.plot.getPlotItem().scene().addItem(self.its)
        self.plot.getPlotItem().getAxis("right").linkToView(self.its)
        self.plot.getPlotItem().getAxis("right").setLabel("it/s")
        self.its.setXLink(self.plot.getPlotItem())
        self.its_curve = pg.PlotDataItem([], [])
        self.its.addItem(self.its_curve)
        self.plot.getPlotItem().vb.sigResized.connect(self._on_resized)

    def apply_colors(self, colors: PlotColors) -> None:
        super().apply_colors(colors)
        self.its_curve.setPen(_pen(colors.series_color(2)))
        self._set_legend()
        right = self.plot.getAxis("right")
        right.setPen(_pen(colors.grid))
        right.setTextPen(_pen(colors.foreground))

    def legend_items(self) -> list[tuple[str, QColor]]:
        return [*super().legend_items(), ("iterations/s (right)", pg.mkPen(self.its_curve.opts["pen"]).color())]

    def redraw(self, buffer: MetricsBuffer) -> None:
        super().redraw(buffer)
        if self.changed(buffer, "its", "iterations_per_second"):
            set_curve(self.its_curve, *buffer.series["iterations_per_second"].view())

    def _on_resized(self) -> None:
        self.its.setGeometry(self.plot.getPlotItem().vb.sceneBoundingRect())


class MemoryPanel(Panel):
    """MLX active/cache/peak, process, system used and swap (GB), with the budget and the estimator's figure as
    labelled lines; the title carries the pressure colour."""

    title = "Unified memory"

    def __init__(self, parent=None):
        super().__init__("memoryPanel", parent)
        for key, label in (("mem_active", "MLX active"), ("mem_cache", "MLX cache"), ("mem_peak", "MLX peak"),
                           ("mem_process", "process"), ("mem_system", "system used"), ("mem_swap", "swap")):
            self.add_curve(key, label)
        self.budget = pg.InfiniteLine(angle=0, movable=False, label="budget {value:.1f} GB",  # text under the line,
                                      labelOpts={"position": 0.1, "anchors": [(0, 0), (0, 0)]})  # at the left: the
        #                                            budget is the top of the plot, the estimate's text is at the right
        self.estimate = pg.InfiniteLine(angle=0, movable=False, label="estimate {value:.1f} GB",
                                        labelOpts={"position": 0.9, "anchors": [(1, 1), (1, 1)]})
        for line in (self.budget, self.estimate):
            line.setVisible(False)
            self.plot.addItem(line)
        self.pressure = QLabel()
        self.pressure.setObjectName("pressureLevel")
        self.header.addWidget(self.pressure)
        self.plot.setLabel("bottom", "seconds")
        self.plot.setLabel("left", "GB")
        self._colors: PlotColors | None = None

    def apply_colors(self, colors: PlotColors) -> None:
        super().apply_colors(colors)
        self._colors = colors
        self.budget.setPen(_pen(QColor(PRESSURE["red"]), style=Qt.PenStyle.DashLine))
        self.estimate.setPen(_pen(colors.foreground, style=Qt.PenStyle.DotLine))
        for line in (self.budget, self.estimate):
            line.label.setColor(colors.foreground)

    def redraw(self, buffer: MetricsBuffer) -> None:
        super().redraw(buffer)
        r = buffer.run
        for line, value in ((self.budget, r.budget_gb), (self.estimate, r.estimate_gb)):
            line.setVisible(value is not None)
            if value is not None:
                line.setValue(value)
        self.set_pressure(r.pressure if buffer.series["mem_process"].n else "")

    def set_pressure(self, level: str) -> None:
        self.pressure.setProperty("level", level)
        self.pressure.setText(f"● pressure {level}" if level else "")
        palette = self.pressure.palette()
        color = QColor(PRESSURE[level]) if level else self.palette().color(QPalette.ColorRole.WindowText)
        palette.setColor(QPalette.ColorRole.WindowText, color)
        self.pressure.setPalette(palette)


class LearningRatePanel(Panel):
    title = "Learning rate"

    def __init__(self, parent=None):
        super().__init__("lrPanel", parent)
        self.add_curve("learning_rate", "learning rate")
        self.setMaximumHeight(200)

    def redraw(self, buffer: MetricsBuffer) -> None:
        """A constant learning rate (no schedule) is drawn inside 0 .. 2x its value: pyqtgraph's auto-range would
        centre a flat line on a span of one around it, and label 0.001 as "0"."""
        if not self.changed(buffer, "learning_rate"):
            return
        x, y = buffer.series["learning_rate"].view()
        set_curve(self.curves["learning_rate"], x, y)
        finite = y[np.isfinite(y)] if len(y) else y
        if len(finite) and finite.min() == finite.max():
            value = float(finite[0])
            low, high = (0.0, 2 * value) if value > 0 else (value - 1, value + 1)
            self.plot.setYRange(low, high, padding=0)
        else:
            self.plot.enableAutoRange(axis="y")
