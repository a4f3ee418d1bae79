"""The Playground's settings row: system prompt and sampling (temperature, top-p, max tokens, seed)."""

from __future__ import annotations

from PySide6.QtWidgets import QDoubleSpinBox, QHBoxLayout, QLabel, QLineEdit, QSpinBox, QWidget

from macfinetune.core.sampling import Sampling

TIPS = {
    "temperature": "0 always picks the likeliest token (greedy); higher is more varied",
    "top_p": "sample only from the smallest set of tokens whose probabilities add up to this",
    "max_tokens": "the longest answer, in tokens",
    "seed": "the same seed, prompt and settings give the same answer",
}


class SamplingBar(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        defaults = Sampling()
        self.system = QLineEdit()
        self.system.setObjectName("systemPrompt")
        self.system.setPlaceholderText("System prompt (optional)")
        self.system.setClearButtonEnabled(True)
        self.temperature = self._double("temperature", defaults.temperature, 0.0, 2.0)
        self.top_p = self._double("top_p", defaults.top_p, 0.01, 1.0)
        self.max_tokens = self._int("max_tokens", defaults.max_tokens, 1, 32768)
        self.seed = self._int("seed", defaults.seed, 0, 2**31 - 1)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.system, 1)
        for text, editor in (("Temperature", self.temperature), ("Top-p", self.top_p),
                             ("Max tokens", self.max_tokens), ("Seed", self.seed)):
            label = QLabel(text)
            label.setBuddy(editor)
            label.setToolTip(editor.toolTip())
            layout.addWidget(label)
            layout.addWidget(editor)

    def sampling(self) -> Sampling:
        return Sampling(max_tokens=self.max_tokens.value(), temperature=self.temperature.value(),
                        top_p=self.top_p.value(), seed=self.seed.value())

    def set_sampling(self, sampling: Sampling) -> None:
        self.temperature.setValue(sampling.temperature)
        self.top_p.setValue(sampling.top_p)
        self.max_tokens.setValue(sampling.max_tokens)
        self.seed.setValue(sampling.seed)

    def system_prompt(self) -> str:
        return self.system.text()

    def _double(self, name: str, value: float, low: float, high: float) -> QDoubleSpinBox:
        box = QDoubleSpinBox()
        box.setObjectName(name)
        box.setRange(low, high)
        box.setSingleStep(0.05)
        box.setDecimals(2)
        box.setValue(value)
        box.setToolTip(TIPS[name])
        return box

    def _int(self, name: str, value: int, low: int, high: int) -> QSpinBox:
        box = QSpinBox()
        box.setObjectName(name)
        box.setRange(low, high)
        box.setValue(value)
        box.setToolTip(TIPS[name])
        return box
