"""The Monitor's reward panels (issue 17), fed recorded events: shown for preference runs only."""

from macfinetune.core import events, sample_run

from .conftest import start_job


def preference_reports():
    """Held-out measures at 0, 100 and 200, as a DPO run reports them."""
    numbers = [(0.693, 0.0, 0.0, 0.0, 0.30), (0.2, 1.5, -0.4, 0.9, 0.92), (0.05, 2.4, -1.1, 1.0, 1.0)]
    return [events.PreferenceReport(it, "valid", "dpo", loss, chosen, rejected, chosen - rejected, accuracy,
                                    -120.0, -90.0, likelihood, 50)
            for it, (loss, chosen, rejected, accuracy, likelihood) in zip((0, 100, 200), numbers, strict=True)]


def train_batch_reports():
    """A training batch's measures at every report step (split train)."""
    return [events.PreferenceReport(it, "train", "dpo", 0.5, 0.1, -0.1, 0.2 + it / 100, min(1.0, it / 100),
                                    -110.0, -95.0, 0.5, 4) for it in range(10, 201, 10)]


def test_a_preference_run_shows_rewards_and_accuracy(window, engine, qtbot):
    monitor = window.pages["monitor"]
    start_job(engine, window.session)
    engine.send(*sample_run.sample_events(upto=200), *preference_reports(), *train_batch_reports())
    monitor.redraw()
    assert monitor.preference_row.isVisibleTo(monitor)
    x, y = monitor.rewards.curves["pref_reward_margin"].getData()
    assert x.tolist() == [0, 100, 200] and y.tolist() == [0.0, 1.9, 3.5]
    assert monitor.rewards.curves["pref_rewards_rejected"].getData()[1].tolist() == [0.0, -0.4, -1.1]
    x, y = monitor.rewards.curves["pref_train_reward_margin"].getData()  # training batches: their own faint curve
    assert x.tolist() == list(range(10, 201, 10)) and y[-1] == 2.2
    assert monitor.pref_accuracy.curves["pref_train_accuracy"].getData()[1][-1] == 1.0
    assert monitor.pref_accuracy.curves["pref_likelihood_accuracy"].getData()[1].tolist() == [0.3, 0.92, 1.0]
    assert monitor.pref_accuracy.heading.text() == "Preference accuracy (held-out): 100%, chosen likelier 100%"
    assert "Preference (valid, 50 pairs) at 200: accuracy 100%, reward margin +3.500" in monitor.log.toPlainText()


def test_a_supervised_run_has_no_reward_panels(window, engine):
    monitor = window.pages["monitor"]
    start_job(engine, window.session)
    engine.send(*sample_run.sample_events(upto=200))
    monitor.redraw()
    assert not monitor.preference_row.isVisibleTo(monitor)
    assert monitor.rewards.curves["pref_reward_margin"].getData()[0] is None or \
        len(monitor.rewards.curves["pref_reward_margin"].getData()[0]) == 0


def test_panels_in_the_hidden_row_are_drawn_only_once_they_can_be_seen(window, engine):
    """Issue 10's redraw cost: a hidden panel is not handed its 100k points on every redraw, only noted as
    behind, and drawn as soon as its row is shown."""
    import numpy as np

    monitor = window.pages["monitor"]
    start_job(engine, window.session)
    engine.send(*sample_run.sample_events(upto=200))
    x = np.arange(1.0, 6.0)
    monitor.buffer.series["pref_reward_margin"].set(x, x / 10)
    monitor.buffer.version += 1
    monitor.redraw()
    assert not monitor.preference_row.isVisibleTo(monitor)
    assert len(monitor.rewards.curves["pref_reward_margin"].getData()[0] or []) == 0  # not drawn while hidden
    assert monitor.rewards in monitor._behind
    monitor.buffer.run.objective = "dpo"
    monitor.buffer.version += 1
    monitor.redraw()
    assert monitor.rewards.curves["pref_reward_margin"].getData()[0].tolist() == x.tolist()
    assert monitor.rewards not in monitor._behind
