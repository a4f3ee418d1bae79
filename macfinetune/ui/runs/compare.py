"""Compare runs: their loss curves (train solid, validation dashed) on one plot, each labelled with the
settings that differ between them."""

from __future__ import annotations

from pathlib import Path

import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDialog, QVBoxLayout

from macfinetune.core import events, runs_table
from macfinetune.ui.widgets.theme import plot_colors


class CompareDialog(QDialog):
    def __init__(self, run_dirs: list[Path], parent=None):
        super().__init__(parent)
        self.setObjectName("compareDialog")
        self.setWindowTitle(f"Compare {len(run_dirs)} runs")
        self.resize(900, 560)
        self.plot = pg.PlotWidget()
        self.plot.setObjectName("comparePlot")
        self.plot.showGrid(x=True, y=True, alpha=0.15)
        self.plot.setLabel("bottom", "iteration")
        self.plot.setLabel("left", "loss")
        self.legend = self.plot.addLegend(offset=(-10, 10))
        layout = QVBoxLayout(self)
        layout.addWidget(self.plot)
        names = [Path(d).name for d in run_dirs]
        self.labels = runs_table.difference_labels([runs_table.flat_recipe(d) for d in run_dirs], names)
        self.curves: list[tuple[str, pg.PlotDataItem]] = []
        colors = plot_colors(self.palette())
        self.plot.setBackground(colors.background)
        for i, (run_dir, label) in enumerate(zip(run_dirs, self.labels, strict=True)):
            self._add_run(run_dir, label, colors.series_color(i))

    def _add_run(self, run_dir: Path, label: str, color) -> None:
        evs = runs_table.load_run_events(Path(run_dir))
        train = [(e.iteration, e.train_loss) for e in evs if isinstance(e, events.TrainReport)]
        val = [(e.iteration, e.val_loss) for e in evs if isinstance(e, events.ValReport)]
        for points, suffix, style in ((train, "train", Qt.PenStyle.SolidLine), (val, "val", Qt.PenStyle.DashLine)):
            pen = pg.mkPen(color, width=1, style=style)
            xs, ys = [p[0] for p in points], [p[1] for p in points]
            curve = self.plot.plot(xs, ys, pen=pen, name=f"{label} ({suffix})")
            self.curves.append((f"{label} ({suffix})", curve))
