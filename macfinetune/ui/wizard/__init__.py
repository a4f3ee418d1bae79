"""The New-run wizard (issue 11): Model, Data, Method, Settings, Review, and an always-visible memory gauge.

``WizardPage(services)`` is the page; ``WizardServices`` (services.py) is everything it needs from
the application. Every decision is in ``macfinetune.core.wizard``; these modules only draw it.
"""

from macfinetune.ui.wizard.page import WizardPage
from macfinetune.ui.wizard.services import WizardServices

__all__ = ["WizardPage", "WizardServices"]
