"""What a new user's trial of the wizard found: each finding driven through the real widgets."""

from __future__ import annotations

import json

from .conftest import wait_data
from .test_wizard import choose_tiny, error


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
