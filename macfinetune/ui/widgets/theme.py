"""Plot colours from the palette (pyqtgraph ignores QPalette), light and dark."""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtGui import QColor, QPalette

PRESSURE = {"green": "#34c759", "amber": "#ff9f0a", "red": "#ff3b30"}


@dataclass(frozen=True)
class PlotColors:
    background: QColor
    foreground: QColor
    grid: QColor
    series: tuple[QColor, ...]
    dark: bool

    def series_color(self, i: int) -> QColor:
        return self.series[i % len(self.series)]


# systemBlue, systemOrange, systemGreen, systemPurple, systemPink, systemTeal (light, dark)
_LIGHT = ("#0a64d6", "#c9650a", "#248a3d", "#8944ab", "#d30f45", "#007d8a")
_DARK = ("#409cff", "#ffb340", "#30d158", "#da8fff", "#ff6482", "#5de6ff")


def is_dark(palette: QPalette) -> bool:
    return palette.color(QPalette.ColorRole.Window).lightness() < 128


def plot_colors(palette: QPalette) -> PlotColors:
    dark = is_dark(palette)
    fg = palette.color(QPalette.ColorRole.Text)
    grid = QColor(fg)
    grid.setAlpha(40)
    names = _DARK if dark else _LIGHT
    return PlotColors(palette.color(QPalette.ColorRole.Base), fg, grid, tuple(QColor(n) for n in names), dark)


def faint(color: QColor, alpha: int = 70) -> QColor:
    out = QColor(color)
    out.setAlpha(alpha)
    return out


def dark_palette() -> QPalette:
    """A dark palette for screenshots and tests on platforms without a system dark mode."""
    p = QPalette()
    roles = QPalette.ColorRole
    for role, name in ((roles.Window, "#1e1e1e"), (roles.WindowText, "#e6e6e6"), (roles.Base, "#161616"),
                       (roles.AlternateBase, "#232323"), (roles.Text, "#e6e6e6"), (roles.Button, "#2b2b2b"),
                       (roles.ButtonText, "#e6e6e6"), (roles.Highlight, "#0a64d6"),
                       (roles.HighlightedText, "#ffffff"), (roles.ToolTipBase, "#2b2b2b"),
                       (roles.ToolTipText, "#e6e6e6"), (roles.PlaceholderText, "#8a8a8a"), (roles.Mid, "#3a3a3a"),
                       (roles.Light, "#3c3c3c"), (roles.Dark, "#101010"), (roles.Midlight, "#333333")):
        p.setColor(role, QColor(name))
    p.setColor(QPalette.ColorGroup.Disabled, roles.Text, QColor("#6a6a6a"))
    p.setColor(QPalette.ColorGroup.Disabled, roles.ButtonText, QColor("#6a6a6a"))
    p.setColor(QPalette.ColorGroup.Disabled, roles.WindowText, QColor("#6a6a6a"))
    return p
