"""What a new user's trial of the wizard found: each finding driven through the real widgets."""

from __future__ import annotations

import json

from conftest import SAMPLE_DATA

from .conftest import wait_data
from .test_wizard import button, choose_tiny, error


def test_unreadable_data_is_the_only_problem_and_the_data_step_says_why(qtbot, make_page, tiny_model, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps({"text": f"row {i}"}) + "\n" for i in range(3)) + '{"text": "unterminated\n')
    page = make_page(folders=[tiny_model.parent])
    choose_tiny(qtbot, page, tiny_model)
    page.go("data")
    page.steps["data"].choose_path(str(bad))
    wait_data(qtbot, page)
    assert "line 4: not valid JSON" in error(page, "data.path")
    assert error(page, "training.batch_size") == ""
    assert "batch_size" not in page.blockers.text()
    lengths = page.steps["data"].histogram_text.text()
    assert "choose a model" not in lengths and "could not be read" in lengths


def test_a_truncated_config_json_is_named_as_not_valid_json_with_file_and_line(qtbot, make_page, tiny_model, tmp_path):
    import shutil

    from macfinetune.core.modelinfo import read_config
    from macfinetune.core.problems import ProblemError

    broken = tmp_path / "broken-model"
    shutil.copytree(tiny_model, broken)
    (broken / "config.json").write_text('{"model_type": "llama",\n "hidden_size": ')
    page = make_page()
    page.steps["model"].choose_path(str(broken))
    message = error(page, "model.path")
    assert message.startswith(f"{broken / 'config.json'} line 2: not valid JSON: Expecting value at column 17")
    assert "model_type" not in message
    try:
        read_config(broken)
    except ProblemError as e:
        assert message == str(e)  # the CLI's words


def _tab_chain(qtbot, start, count: int) -> list[str]:
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QApplication

    start.setFocus()
    names = []
    for _ in range(count):
        widget = QApplication.focusWidget()
        names.append(widget.objectName() or widget.text())
        qtbot.keyClick(widget, Qt.Key.Key_Tab)
    return names


def test_tab_walks_the_step_list_then_the_step_then_back_and_next(qtbot, make_page, tiny_model):
    page = make_page(folders=[tiny_model.parent])
    choose_tiny(qtbot, page, tiny_model)
    page.activateWindow()
    qtbot.waitUntil(page.isActiveWindow)
    chain = _tab_chain(qtbot, page.step_list, 12)
    assert chain[:4] == ["stepList", "modelTable", "field:model.path", "Add folder…"]
    assert chain.index("hubId") < chain.index("Next") and "Back" not in chain  # Back is off on the first step
    assert chain[chain.index("Next") + 1] == "stepList"
    page.go("method")
    chain = _tab_chain(qtbot, page.step_list, 30)
    cycle = chain[:chain.index("Next") + 1]
    assert cycle.count("catalogTable") == 1 and cycle[-2:] == ["Back", "Next"] and chain[len(cycle)] == "stepList"


def test_while_a_run_trains_review_says_so_and_train_is_off(qtbot, make_page, tiny_model, tmp_path):
    training = [False]
    page = make_page(folders=[tiny_model.parent], is_training=lambda: training[0])
    choose_tiny(qtbot, page, tiny_model)
    page.steps["data"].choose_path(str(SAMPLE_DATA))
    wait_data(qtbot, page)
    page.go("review")
    assert page.blockers.text() == "Ready to train." and button(page, "train").isEnabled()
    training[0] = True
    page.on_session_state("running")
    assert page.blockers.text().startswith("A run is training") and not button(page, "train").isEnabled()
    training[0] = False
    page.on_session_state("idle")
    assert page.blockers.text() == "Ready to train." and button(page, "train").isEnabled()
