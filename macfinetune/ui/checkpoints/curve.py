"""The loss curve with the checkpoints as clickable points; colours from the palette (``PlotColors``)."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, Qt, Signal
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from macfinetune.core.checkpoints import RunCheckpoints
from macfinetune.ui.monitor.panels import _pen
from macfinetune.ui.widgets.theme import faint, plot_colors

pg.setConfigOptions(antialias=False, useOpenGL=False)


def _xy(points) -> tuple[np.ndarray, np.ndarray]:
    if not points:
        return np.zeros(0), np.zeros(0)
    array = np.asarray(points, dtype=float)
    return array[:, 0], array[:, 1]


class CheckpointCurve(QWidget):
    """Train loss (faint line), validation loss, a point per checkpoint (click: ``pointClicked``), the
    selected one ringed and the best one a star."""

    pointClicked = Signal(int)  # the checkpoint's iteration

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("checkpointCurve")
        self.plot = pg.PlotWidget()
        self.plot.setObjectName("checkpointCurvePlot")
        self.plot.setMenuEnabled(False)
        self.plot.showGrid(x=True, y=True, alpha=0.15)
        self.plot.setMouseEnabled(x=True, y=False)
        self.plot.getPlotItem().setDownsampling(auto=True, mode="peak")
        self.plot.getPlotItem().setClipToView(True)
        self.train = self.plot.plot([], [], connect="finite")
        self.val = self.plot.plot([], [], connect="finite")
        self.points = pg.ScatterPlotItem(size=9, symbol="o", hoverable=True, tip=self._tip)
        self.points.sigClicked.connect(self._on_points_clicked)
        self.selected = pg.ScatterPlotItem(size=17, symbol="o")
        self.best = pg.ScatterPlotItem(size=16, symbol="star")
        for item in (self.points, self.selected, self.best):
            self.plot.addItem(item)
        self.legend = QLabel()
        self.legend.setObjectName("checkpointCurveLegend")
        self.legend.setTextFormat(Qt.TextFormat.RichText)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.plot, 1)
        layout.addWidget(self.legend)
        self._data = RunCheckpoints(run_dir=None)
        self._selected: int | None = None
        self.apply_colors()

    # --- drawing ----------------------------------------------------------------------

    def set_run(self, data: RunCheckpoints) -> None:
        self._data = data
        self.train.setData(*_xy(data.train_curve))
        self.val.setData(*_xy(data.val_curve))
        self.points.setData(*self._checkpoint_xy(data.rows), data=[r.iteration for r in data.rows])
        self.best.setData(*self._checkpoint_xy([r for r in data.rows if r.is_best]))
        self.set_selected(self._selected)
        self.plot.getPlotItem().enableAutoRange()

    @staticmethod
    def _checkpoint_xy(rows) -> tuple[list, list]:
        """x = iteration, y = validation loss (train loss when there is none; rows without either are left out)."""
        shown = [(r.iteration, r.val_loss if r.val_loss is not None else r.train_loss) for r in rows]
        shown = [(x, y) for x, y in shown if y is not None]
        return [x for x, _ in shown], [y for _, y in shown]

    def set_selected(self, iteration: int | None) -> None:
        self._selected = iteration
        self.selected.setData(*self._checkpoint_xy([r for r in self._data.rows if r.iteration == iteration]))

    def point_position(self, iteration: int) -> tuple[float, float] | None:
        """Where a checkpoint's point is, in plot coordinates (tests click there)."""
        xs, ys = self._checkpoint_xy([r for r in self._data.rows if r.iteration == iteration])
        return (xs[0], ys[0]) if xs else None

    def _tip(self, x, y, data) -> str:
        return f"checkpoint {int(x):,}\nloss {y:.3f}"

    def _on_points_clicked(self, item, points, event=None) -> None:
        if len(points):
            self.pointClicked.emit(int(points[0].data()))

    # --- colours ----------------------------------------------------------------------

    def apply_colors(self) -> None:
        colors = plot_colors(self.palette())
        self.plot.setBackground(colors.background)
        for axis in ("left", "bottom"):
            ax = self.plot.getAxis(axis)
            ax.setPen(_pen(colors.grid))
            ax.setTextPen(_pen(colors.foreground))
        train, val = colors.series_color(0), colors.series_color(1)
        self.train.setPen(_pen(faint(train, 150)))
        self.val.setPen(_pen(val))
        self.points.setBrush(pg.mkBrush(val))
        self.points.setPen(_pen(colors.background))
        self.selected.setBrush(pg.mkBrush(None))
        self.selected.setPen(pg.mkPen(colors.foreground, width=2))
        self.best.setBrush(pg.mkBrush(colors.series_color(2)))
        self.best.setPen(_pen(colors.background))
        self.legend.setText("&nbsp;&nbsp;".join(f'<span style="color:{c.name()}">{mark}</span>&nbsp;{label}' for
                                                 mark, c, label in (("━━", train, "train"), ("━━", val, "validation"),
                                                                    ("●", val, "checkpoint"),
                                                                    ("★", colors.series_color(2), "best"))))

    def changeEvent(self, event) -> None:
        if event.type() == QEvent.Type.PaletteChange:
            self.apply_colors()
        super().changeEvent(event)
