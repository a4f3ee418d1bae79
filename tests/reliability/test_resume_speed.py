"""Exact resume with packing and length buckets on (issue 14): their batches come from the seed alone."""

import pytest
from conftest import fast_recipe

from macfinetune.backend.training import train_run
from macfinetune.core.control import JobControl
from macfinetune.core.events import TrainReport

from .test_resume import EXACT, assert_resumes_exactly, losses


@pytest.mark.slow
@pytest.mark.parametrize("option", ["packing=true", "length_buckets=true"])
def test_resume_is_exact_with_packing_and_length_buckets(tiny_model, tmp_path, option):
    recipe = [*EXACT, option, "max_seq_length=256", "batch_size=2"]
    full = []
    assert train_run(fast_recipe(tiny_model, *recipe), tmp_path / "full", full.append).state == "finished"
    reports = [e for e in full if isinstance(e, TrainReport)]
    assert all(r.real_tokens_per_second for r in reports)
    control = JobControl()

    def stop_at_5(event):
        if isinstance(event, TrainReport) and event.iteration == 5:
            control.request_stop()

    result = train_run(fast_recipe(tiny_model, *recipe), tmp_path / "stop", stop_at_5, control)
    assert result.state == "stopped" and result.iteration == 5
    assert_resumes_exactly(tmp_path / "stop", 5, full)
    assert len(losses(full)) == 12
