"""The wizard with preference pairs (issue 17): it offers DPO and ORPO, previews both answers, trains DPO."""

from __future__ import annotations

from conftest import SAMPLE_DATA
from PySide6.QtWidgets import QRadioButton

from .conftest import wait_data
from .test_wizard import button, choose_tiny, error

PAIRS = SAMPLE_DATA.parent / "sample_preferences"


def objective(page, name) -> QRadioButton:
    return page.findChild(QRadioButton, f"objective:{name}")


def test_pairs_offer_dpo_and_orpo_and_train_with_dpo(qtbot, make_page, tiny_model, fake_engine):
    page = make_page(folders=[tiny_model.parent])
    choose_tiny(qtbot, page, tiny_model)
    page.go("data")
    page.steps["data"].choose_path(str(PAIRS))
    wait_data(qtbot, page)
    assert "preference pairs (prompt, chosen, rejected)" in page.findChild(type(page.steps["data"].summary),
                                                                            "dataSummary").text()
    preview = page.steps["data"].preview.toPlainText()
    assert "<|im_start|>assistant\nArr, matey!" in preview  # a pair previews as its prompt and chosen answer
    assert page.recipe.training.objective == "dpo"  # pairs switch the objective from supervised
    page.go("method")
    assert objective(page, "dpo").isChecked() and objective(page, "orpo").isEnabled()
    assert not objective(page, "sft").isEnabled()
    objective(page, "orpo").click()
    assert page.recipe.training.objective == "orpo"
    page.steps["method"].apply_recommendation()  # a recommendation keeps a preference objective
    assert page.recipe.training.objective == "orpo"
    objective(page, "dpo").click()
    page.go("review")
    assert error(page, "training.objective") == ""
    button(page, "train").click()
    assert fake_engine.started[-1][0].training.objective == "dpo"

    page.go("data")  # supervised data switches back, and DPO is no longer offered
    page.steps["data"].choose_path(str(SAMPLE_DATA))
    wait_data(qtbot, page)
    assert page.recipe.training.objective == "sft"
    assert objective(page, "sft").isChecked() and not objective(page, "dpo").isEnabled()
