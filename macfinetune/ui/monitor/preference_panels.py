"""The Monitor's panels for preference runs (DPO, ORPO): rewards and preference accuracy on the held-out
pairs, one point per validation (``PreferenceReport``). The page shows them once such a report arrives."""

from __future__ import annotations

from macfinetune.ui.monitor.buffer import MetricsBuffer
from macfinetune.ui.monitor.panels import VAL_SYMBOLS_MAX, Panel, _pen
from macfinetune.ui.widgets.theme import PlotColors


class _PointsPanel(Panel):
    """Curves of validation points, marked while there are few of them."""

    def add_points(self, key: str, label: str) -> None:
        curve = self.add_curve(key, label)
        curve.setSymbol("o")
        curve.setSymbolSize(5)

    def apply_colors(self, colors: PlotColors) -> None:
        super().apply_colors(colors)
        for i, curve in enumerate(self.curves.values()):
            curve.setSymbolBrush(colors.series_color(i))
            curve.setSymbolPen(_pen(colors.series_color(i)))

    def redraw(self, buffer: MetricsBuffer) -> None:
        for key, curve in self.curves.items():
            if self.changed(buffer, key):
                x, y = buffer.series[key].view()
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


class PreferenceAccuracyPanel(_PointsPanel):
    """The share of held-out pairs whose chosen answer wins: by reward, and by likelihood."""

    title = "Preference accuracy (held-out)"

    def __init__(self, parent=None):
        super().__init__("preferenceAccuracyPanel", parent)
        self.add_points("pref_accuracy", "reward accuracy")
        self.add_points("pref_likelihood_accuracy", "chosen likelier (per token)")
        self.plot.setYRange(0.0, 1.0, padding=0.05)

    def redraw(self, buffer: MetricsBuffer) -> None:
        super().redraw(buffer)
        accuracy, likelihood = buffer.series["pref_accuracy"].last(), buffer.series["pref_likelihood_accuracy"].last()
        text = self.title if accuracy is None else f"{self.title}: {accuracy:.0%}, chosen likelier {likelihood:.0%}"
        self.heading.setText(text)
