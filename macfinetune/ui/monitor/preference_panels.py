"""The Monitor's panels for preference runs (DPO, ORPO): rewards and preference accuracy on the held-out
pairs, one point per validation (``PreferenceReport``). The page shows them once such a report arrives."""

from __future__ import annotations

from macfinetune.ui.monitor.buffer import MetricsBuffer
from macfinetune.ui.monitor.panels import VAL_SYMBOLS_MAX, Panel, _pen
from macfinetune.ui.widgets.theme import PlotColors, faint


class _PointsPanel(Panel):
    """Curves of validation points, marked while there are few of them, over a faint curve of the training
    batches (``train_key``: measured at every report step, before the update)."""

    train_key, shadows = "", ""

    def add_points(self, key: str, label: str) -> None:
        curve = self.add_curve(key, label)
        curve.setSymbol("o")
        curve.setSymbolSize(5)

    def add_train_curve(self, key: str, label: str, shadows: str) -> None:
        self.train_key, self.shadows = key, shadows
        self.add_curve(key, label).setZValue(-1)

    def apply_colors(self, colors: PlotColors) -> None:
        super().apply_colors(colors)
        points = [(k, c) for k, c in self.curves.items() if k != self.train_key]
        for i, (_, curve) in enumerate(points):
            curve.setSymbolBrush(colors.series_color(i))
            curve.setSymbolPen(_pen(colors.series_color(i)))
        if self.train_key:  # faint, in the colour of the validation curve it shadows
            color = colors.series_color([k for k, _ in points].index(self.shadows))
            self.curves[self.train_key].setPen(_pen(faint(color)))
            self._set_legend()

    def redraw(self, buffer: MetricsBuffer) -> None:
        for key, curve in self.curves.items():
            if self.changed(buffer, key):
                x, y = buffer.series[key].view()
                if key != self.train_key:
                    curve.setSymbol("o" if len(x) <= VAL_SYMBOLS_MAX else None)
                curve.setData(x, y)


class RewardsPanel(_PointsPanel):
    """DPO's implicit rewards beta x (policy - reference log-probability) of the chosen and rejected answers and
    their margin (ORPO: the answers' mean per-token log-probabilities)."""

    title = "Rewards (held-out pairs)"

    def __init__(self, parent=None):
        super().__init__("rewardsPanel", parent)
        self.add_points("pref_rewards_chosen", "chosen")
        self.add_points("pref_rewards_rejected", "rejected")
        self.add_points("pref_reward_margin", "margin (chosen - rejected)")
        self.add_train_curve("pref_train_reward_margin", "margin, training batches", "pref_reward_margin")


class PreferenceAccuracyPanel(_PointsPanel):
    """The share of held-out pairs whose chosen answer wins: by reward, and by likelihood."""

    title = "Preference accuracy (held-out)"

    def __init__(self, parent=None):
        super().__init__("preferenceAccuracyPanel", parent)
        self.add_points("pref_accuracy", "reward accuracy")
        self.add_points("pref_likelihood_accuracy", "chosen likelier (per token)")
        self.add_train_curve("pref_train_accuracy", "reward accuracy, training batches", "pref_accuracy")
        self.plot.setYRange(0.0, 1.0, padding=0.05)

    def redraw(self, buffer: MetricsBuffer) -> None:
        super().redraw(buffer)
        accuracy, likelihood = buffer.series["pref_accuracy"].last(), buffer.series["pref_likelihood_accuracy"].last()
        text = self.title if accuracy is None else f"{self.title}: {accuracy:.0%}, chosen likelier {likelihood:.0%}"
        self.heading.setText(text)
