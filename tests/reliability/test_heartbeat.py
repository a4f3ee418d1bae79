"""Heartbeats: time-based signs of life while a step runs, whatever report_every is; the CLI shows them."""

import io
import time

from conftest import fast_recipe

from macfinetune import cli
from macfinetune.backend import loop
from macfinetune.backend.training import train_run
from macfinetune.core.events import Heartbeat, MemorySample, TrainReport

SLOW_BATCH = 3  # the 4th step (after 3 completed iterations) takes 0.6 s


def test_heartbeats_arrive_during_a_slow_step(tiny_model, tmp_path, monkeypatch):
    from mlx_lm.tuner import trainer

    real = trainer.iterate_batches

    def slow_batches(**kwargs):
        for n, batch in enumerate(real(**kwargs)):
            if n == SLOW_BATCH:
                time.sleep(0.6)
            yield batch

    monkeypatch.setattr(trainer, "iterate_batches", slow_batches)
    monkeypatch.setattr(loop, "SAMPLE_SECONDS", 0.02)
    monkeypatch.setattr(loop, "HEARTBEAT_SECONDS", 0.1)
    events = []
    result = train_run(fast_recipe(tiny_model, "iterations=6", "report_every=1000"), tmp_path / "run", events.append)
    assert result.state == "finished"
    beats = [e for e in events if isinstance(e, Heartbeat) and e.iteration == SLOW_BATCH]
    assert len(beats) >= 2  # no report was due: only time drives them
    elapsed = [b.step_elapsed_s for b in beats]
    assert elapsed == sorted(elapsed) and elapsed[-1] > elapsed[0]
    assert all(b.trained_tokens > 0 for b in beats)
    reports = [e for e in events if isinstance(e, TrainReport)]
    assert [r.iteration for r in reports] == [6]  # the last iteration always reports
    with_mlx = [e for e in events if isinstance(e, MemorySample) and e.active_gb is not None]
    assert [e.iteration for e in with_mlx] == [6] and with_mlx[0].peak_gb > 0 and with_mlx[0].process_gb > 0


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_cli_progress_shows_the_running_step_and_tokens():
    stream = _Terminal()
    progress = cli.Progress(stream)
    progress.show(TrainReport(4, 100, 2.5, 1e-4, 1.0, 100.0, 4000, 1.0))
    progress.show(Heartbeat(4, 75.0, 4100))
    line = stream.getvalue().split("\r\033[K")[-1]
    assert line.startswith("[") and "4/100" in line  # the bar stays
    assert "iter 5 running 1m15s" in line and "4,100 tokens" in line


def test_cli_progress_in_a_log_prints_a_heartbeat_line_at_most_every_30_s():
    stream = io.StringIO()
    progress = cli.Progress(stream)
    progress.show(Heartbeat(4, 2.0, 4100))
    progress.show(Heartbeat(4, 4.0, 4100))
    assert stream.getvalue().splitlines() == ["iter 5 running 0m02s  4,100 tokens"]
