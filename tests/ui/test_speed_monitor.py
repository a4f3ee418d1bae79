"""The Monitor's throughput panel draws the real tokens/s beside mlx-lm's tokens/s (issue 14)."""

from macfinetune.core import events

from .conftest import start_job


def test_throughput_panel_draws_real_tokens_per_second(window, engine, qtbot):
    monitor = window.pages["monitor"]
    start_job(engine, window.session)
    reports = [events.TrainReport(i, 100, 2.0, 1e-4, 2.0, 1000.0 + i, 10 * i, 0.5, real_tokens_per_second=800.0 + i)
               for i in (10, 20, 30)]
    engine.send(*reports)
    qtbot.waitUntil(lambda: monitor.buffer.series["real_tokens_per_second"].n == 3)
    monitor.redraw()
    panel = monitor.throughput
    x, y = panel.curves["real_tokens_per_second"].getData()
    assert x.tolist() == [10, 20, 30] and y.tolist() == [810.0, 820.0, 830.0]
    assert "real tokens/s" in panel.legend.text() and "tokens/s (left)" in panel.legend.text()
