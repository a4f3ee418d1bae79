"""The page registry the sidebar, the stack and the View menu (⌘1…⌘5) are built from.

A page is one module and one entry here: ``factory(session, settings)`` returns its widget.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module


@dataclass(frozen=True)
class PageSpec:
    id: str
    title: str
    factory: str  # "module:callable", imported when the window is built

    def create(self, session, settings):
        module, name = self.factory.split(":")
        return getattr(import_module(module), name)(session, settings)


REGISTRY: tuple[PageSpec, ...] = (
    PageSpec("runs", "Runs", "macfinetune.ui.runs.page:RunsPage"),
    PageSpec("new", "New run", "macfinetune.ui.wizard.factory:wizard_page"),
    PageSpec("monitor", "Monitor", "macfinetune.ui.monitor.page:MonitorPage"),
    PageSpec("checkpoints", "Checkpoints", "macfinetune.ui.checkpoints.page:CheckpointsPage"),
    PageSpec("playground", "Playground", "macfinetune.ui.playground.page:PlaygroundPage"),
)


WIZARD_STEPS = ("review",)  # wizard steps a screenshot shows (in the window, filled with the demo model and data)


def page_ids() -> list[str]:
    return [p.id for p in REGISTRY]


def screenshot_pages() -> list[str]:
    """What ``--screenshot`` renders: every page, the first-launch welcome and the wizard's steps."""
    return [*page_ids(), "welcome", *WIZARD_STEPS]
