"""The Runs page: table model, scan, filter, sort, open, resume, compare, rename, trash."""

import os
from dataclasses import replace
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication

from macfinetune.core import events, runs, runs_table, sample_run
from macfinetune.ui.runs.model import COLUMNS, RunsTableModel


def _names(page) -> list[str]:
    return [page.proxy.index(r, 0).data() for r in range(page.proxy.rowCount())]


def _select(page, *names: str) -> None:
    page.table.clearSelection()
    for name in names:
        row = _names(page).index(name)
        page.table.selectionModel().select(page.proxy.index(row, 0), page.table.selectionModel().SelectionFlag.Select
                                           | page.table.selectionModel().SelectionFlag.Rows)


@pytest.fixture
def page(runs_dir, window, qtbot):
    p = window.pages["runs"]
    p.refresh()
    p.wait_for_scan()
    qtbot.waitUntil(lambda: p.model.rowCount() == 4)
    return p


def test_model_passes_qtmodeltester(qtmodeltester, runs_dir):
    model = RunsTableModel()
    model.set_rows(runs_table.scan_rows(runs_dir))
    qtmodeltester.check(model)
    assert model.rowCount() == 4 and model.columnCount() == len(COLUMNS)


def test_table_shows_statuses_sorts_and_filters(page):
    cells = {page.proxy.index(r, 0).data(): [page.proxy.index(r, c).data() for c in range(len(COLUMNS))]
             for r in range(page.proxy.rowCount())}
    assert cells["stopped-run"][3:6] == ["stopped", "1.338", "600/1000"]
    assert cells["interrupted-run"][3] == "interrupted"
    assert cells["failed-run"][4] == "–"
    assert cells["finished-run"][7] == "7m 30s"
    page.table.sortByColumn(4, Qt.SortOrder.AscendingOrder)  # best validation loss
    assert _names(page) == ["finished-run", "stopped-run", "interrupted-run", "failed-run"]
    page.filter.setText("STOPPED")
    assert _names(page) == ["stopped-run"]
    page.filter.setText("")
    assert len(_names(page)) == 4


def test_buttons_follow_the_selection(page):
    _select(page, "finished-run")
    assert page.buttons["open"].isEnabled() and not page.buttons["resume"].isEnabled()
    assert not page.buttons["compare"].isEnabled()
    _select(page, "interrupted-run")
    assert page.buttons["resume"].isEnabled()
    _select(page, "finished-run", "stopped-run")
    assert page.buttons["compare"].isEnabled() and not page.buttons["open"].isEnabled()


def test_open_redraws_the_monitor_from_metrics(page, window, runs_dir):
    _select(page, "stopped-run")
    page.buttons["open"].click()
    monitor = window.pages["monitor"]
    assert window.current_page() == "monitor"
    logged = runs_table.load_run_events(runs_dir / "stopped-run")
    trains = [e for e in logged if isinstance(e, events.TrainReport)]
    x, y = monitor.loss.raw.getData()
    assert x.tolist() == [e.iteration for e in trains]
    assert y.tolist() == [e.train_loss for e in trains]
    assert monitor.progress.text().startswith("Stopped 600/1000")  # no last event in metrics: status.json says
    assert "best val 1.338 at 600" in monitor.stats.text()


def test_resume_runs_the_engines_resume_job(page, window, engine, runs_dir):
    _select(page, "interrupted-run")
    page.buttons["resume"].click()
    assert engine.calls[-1] == ("resume", runs_dir / "interrupted-run")
    assert window.session.state == "starting"
    assert window.current_page() == "monitor"
    assert not page.buttons["resume"].isEnabled()


def test_compare_overlays_runs_labelled_by_their_differences(page, runs_dir):
    _select(page, "finished-run", "stopped-run", "interrupted-run")
    page.buttons["compare"].click()
    dialog = page.compare_dialog
    names = [name for name, _ in dialog.curves]
    assert sorted(names) == sorted(["rank=16, learning_rate=0.0001 (train)", "rank=16, learning_rate=0.0001 (val)",
                     "rank=8, learning_rate=0.0003 (train)", "rank=8, learning_rate=0.0003 (val)",
                     "rank=8, learning_rate=0.0001 (train)", "rank=8, learning_rate=0.0001 (val)"])
    curves = dict(dialog.curves)
    assert len(curves["rank=8, learning_rate=0.0003 (train)"].getData()[0]) == 60  # 600 iterations, every 10
    assert len(curves["rank=16, learning_rate=0.0001 (val)"].getData()[0]) == 3
    legend = [label.text for _, label in dialog.legend.items]
    assert legend == names
    dialog.close()


def test_rename_and_trash(page, runs_dir, tmp_path, monkeypatch, qtbot):
    _select(page, "failed-run")
    page.rename_selected("failed-nan")
    page.wait_for_scan()
    qtbot.waitUntil(lambda: "failed-nan" in _names(page))
    assert (runs_dir / "failed-nan" / "metrics.jsonl").exists() and not (runs_dir / "failed-run").exists()
    trashed = []
    monkeypatch.setattr("send2trash.send2trash", trashed.append)
    _select(page, "failed-nan")
    page.delete_selected(confirm=lambda paths: False)
    assert trashed == []
    page.delete_selected(confirm=lambda paths: [p.name for p in paths] == ["failed-nan"])
    assert trashed == [str(runs_dir / "failed-nan")]
    page.wait_for_scan()


def test_real_trash_moves_the_folder(page, runs_dir, tmp_path, monkeypatch, qtbot):
    import send2trash.plat_other as trash

    monkeypatch.setattr(trash, "HOMETRASH", str(tmp_path / "xdg" / "Trash"))
    monkeypatch.setattr(trash, "HOMETRASH_B", str(tmp_path / "xdg" / "Trash").encode())
    _select(page, "failed-run")
    page.delete_selected(confirm=lambda paths: True)
    assert not (runs_dir / "failed-run").exists()
    assert Path(tmp_path / "xdg" / "Trash" / "files" / "failed-run" / "metrics.jsonl").exists()
    page.wait_for_scan()
    qtbot.waitUntil(lambda: page.model.rowCount() == 3)


def test_list_updates_when_a_run_starts_and_ends(page, window, engine, runs_dir, qtbot):
    from macfinetune.core import sample_run
    from macfinetune.core.events import JobFinished

    from .conftest import start_job

    start_job(engine, window.session, str(runs_dir / "new-run"))
    sample_run.write_sample_run(runs_dir / "new-run", upto=10, state="running")
    engine.send(sample_run.sample_events(str(runs_dir / "new-run"), upto=10)[0])  # RunStarted
    page.wait_for_scan()
    qtbot.waitUntil(lambda: "new-run" in _names(page))
    engine.send(JobFinished(None))
    page.wait_for_scan()


def test_duplicate_as_new_run_from_runs_and_from_the_monitor_fills_the_wizard(page, window, runs_dir, qtbot):
    from macfinetune.core.recipe import load_recipe

    _select(page, "stopped-run")
    page.buttons["duplicate"].click()
    assert window.current_page() == "new"
    wizard = window.pages["new"]
    recipe = load_recipe(runs_dir / "stopped-run" / "recipe.yaml")
    assert float(wizard.state.values["training"]["learning_rate"]) == recipe.training.learning_rate == 3e-4
    assert wizard.current_step() == "review"
    # from the Monitor, with another run opened there
    _select(page, "interrupted-run")
    page.buttons["open"].click()
    monitor = window.pages["monitor"]
    qtbot.waitUntil(monitor.duplicate_button.isEnabled)
    monitor.duplicate_button.click()
    assert window.current_page() == "new" and int(wizard.state.values["method"]["rank"]) == 16
    # a folder without recipe.yaml cannot be duplicated: the button says so by being off
    (runs_dir / "failed-run" / "recipe.yaml").unlink()
    page.refresh()
    page.wait_for_scan()
    qtbot.waitUntil(lambda: page.model.rowCount() == 4)
    _select(page, "failed-run")
    assert not page.buttons["duplicate"].isEnabled()


def test_a_run_folder_gone_behind_the_apps_back_is_refused_and_said(page, window, engine, runs_dir, qtbot):
    import shutil

    _select(page, "interrupted-run")
    shutil.rmtree(runs_dir / "interrupted-run")
    page.rename_selected("renamed")  # raised FileNotFoundError
    assert not (runs_dir / "renamed").exists()
    assert "interrupted-run" in page.message.text() and page.message.isVisibleTo(page)
    page.wait_for_scan()
    qtbot.waitUntil(lambda: "interrupted-run" not in _names(page))
    sample_run.write_sample_run(runs_dir / "stopped-gone", upto=300, state="stopped")
    page.refresh()
    page.wait_for_scan()
    qtbot.waitUntil(lambda: "stopped-gone" in _names(page))
    _select(page, "stopped-gone")
    shutil.rmtree(runs_dir / "stopped-gone")
    calls = len(engine.calls)
    for name in ("open", "resume", "duplicate"):
        page.message.clear()
        page.buttons[name].click()
        assert "stopped-gone" in page.message.text()
    assert len(engine.calls) == calls and window.current_page() == "runs"
    page.wait_for_scan()


def test_rename_is_refused_with_its_reason_and_off_while_the_run_trains(page, runs_dir):
    _select(page, "failed-run")
    page.rename_selected("..")
    assert page.message.text() == "Cannot rename “failed-run”: “..” cannot name a folder: it means the folder above"
    page.rename_selected("stopped-run")
    assert page.message.text() == f"Cannot rename “failed-run”: {runs_dir / 'stopped-run'} already exists"
    page.rename_selected("r" * 300)
    assert page.message.text() == "Cannot rename “failed-run”: File name too long"
    assert (runs_dir / "failed-run").is_dir()
    status = runs.read_status(runs_dir / "stopped-run")
    runs.write_status(runs_dir / "stopped-run", replace(status, state="paused", pid=os.getpid(), host=""))
    page.refresh()
    page.wait_for_scan()
    QApplication.processEvents()
    _select(page, "stopped-run")
    assert not page.buttons["rename"].isEnabled() and not page.buttons["delete"].isEnabled()
    page.rename_selected("moved")
    assert (runs_dir / "stopped-run").is_dir() and not (runs_dir / "moved").exists()


def test_a_filter_that_matches_nothing_says_so(page):
    page.filter.setText("no-such-run")
    assert _names(page) == []
    assert page.empty.isVisibleTo(page) and page.empty.text() == "No runs match “no-such-run”."
    page.filter.setText("failed")
    assert not page.empty.isVisibleTo(page)


def test_tab_leaves_the_runs_table(page, window, qtbot):
    window.show_page("runs")
    window.activateWindow()
    page.table.setFocus()
    _select(page, "finished-run")
    qtbot.keyClick(page.table, Qt.Key.Key_Tab)
    assert QApplication.focusWidget() is not page.table
