"""The Checkpoints page: table and curve from the run folder, point and row selection, samples, live
updates, Fuse, Export and Test prompt; and from a real tiny-model run, the table, the samples and a
fused model that loads."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import fast_recipe
from PySide6.QtCore import QPointF, Qt
from PySide6.QtWidgets import QApplication

from macfinetune import jobs
from macfinetune.core import checkpoints, events, runs, sample_run, samples
from macfinetune.core.events import FuseFinished, JobFinished, JobStarted, Stage
from macfinetune.ui.checkpoints.model import BEST_MARK, COLUMNS, CheckpointTableModel

from .conftest import start_job


def _cells(page) -> list[list[str]]:
    return [[page.model.index(r, c).data() for c in range(len(COLUMNS))] for r in range(page.model.rowCount())]


def _selected(page) -> int | None:
    row = page.selected_row()
    return row.iteration if row else None


def _show(page, qtbot, run_dir: Path, rows: int) -> None:
    page.show_run(run_dir)
    page.wait_for_reads()
    qtbot.waitUntil(lambda: page.model.rowCount() == rows)


@pytest.fixture
def finished_run(runs_dir) -> Path:
    run = runs_dir / "finished-run"
    sample_run.write_sample_checkpoints(run)
    return run


@pytest.fixture
def page(finished_run, window, qtbot):
    p = window.pages["checkpoints"]
    window.show_page("checkpoints")
    _show(p, qtbot, finished_run, 10)
    return p


def test_model_passes_qtmodeltester(qtmodeltester, finished_run):
    model = CheckpointTableModel()
    model.set_rows(checkpoints.read_checkpoints(finished_run).rows)
    qtmodeltester.check(model)
    assert model.rowCount() == 10


def test_table_shows_the_run_folder_and_selects_the_best(page, finished_run):
    data = checkpoints.read_checkpoints(finished_run)
    cells = _cells(page)
    assert [c[0].split()[0] for c in cells] == [f"{r.iteration:,}" for r in data.rows]
    assert [c[2] for c in cells] == [f"{r.val_loss:.3f}" for r in data.rows]
    assert {c[3] for c in cells} == {"15.8 MB"}
    best = runs.best_checkpoint(finished_run)[0]
    assert [c[0] for c in cells if BEST_MARK in c[0]] == [f"{best:,}  {BEST_MARK}"]
    assert _selected(page) == best
    assert page.summary.text() == f"10 checkpoints; best {best:,}"


def _click_point(page, qtbot, iteration: int) -> None:
    plot = page.curve.plot
    x, y = page.curve.point_position(iteration)
    scene = plot.getPlotItem().vb.mapViewToScene(QPointF(x, y))
    qtbot.mouseClick(plot.viewport(), Qt.MouseButton.LeftButton, pos=plot.mapFromScene(scene))


def test_clicking_a_point_selects_its_row_and_a_row_rings_its_point(page, qtbot):
    _click_point(page, qtbot, 300)
    qtbot.waitUntil(lambda: _selected(page) == 300)
    assert page.curve.selected.getData()[0].tolist() == [300]
    page.table.selectRow(6)
    assert page.curve.selected.getData()[0].tolist() == [700]
    assert page.samples.table.selectedIndexes()[0].column() == page.samples.iterations.index(700)


def test_samples_side_by_side(page):
    assert page.samples.table.rowCount() == len(sample_run.SAMPLE_PROMPTS)
    assert page.samples.table.columnCount() == 10
    assert page.samples.answers(100)[1] == "The capital of France is Paris."
    assert page.samples.answers(1000)[1].startswith("Arr")
    assert not page.samples.empty.isVisible()


def test_live_update_when_a_checkpoint_and_its_samples_are_saved(runs_dir, window, engine, qtbot):
    page = window.pages["checkpoints"]
    window.show_page("checkpoints")
    run = runs_dir / "live-run"
    evs = sample_run.write_sample_run(run, upto=200)
    job = start_job(engine, window.session, str(run))
    engine.send(evs[0], job=job)  # RunStarted: the page follows the run being trained
    page.wait_for_reads()
    qtbot.waitUntil(lambda: page.model.rowCount() == 2)
    log = runs.MetricsLog(run)
    log.write(events.CheckpointSaved(300, "x", 1.9, True, time=sample_run.T0 + 300))
    log.close()
    engine.send(events.CheckpointSaved(300, "x", 1.9, True), job=job)
    page.wait_for_reads()
    qtbot.waitUntil(lambda: page.model.rowCount() == 3)
    assert not page.samples.empty.isHidden()
    saved = events.SamplesSaved(str(run), 300, ("hi",), ("arr",), 0.1)
    samples.append_samples(run, saved)
    engine.send(saved, job=job)
    page.wait_for_reads()
    qtbot.waitUntil(lambda: page.samples.iterations == [300])
    assert page.samples.answers(300) == ["arr"]


def test_fuse_from_the_page_submits_the_job_and_reveals_the_folder(page, engine, tmp_path, qtbot, monkeypatch):
    page.select_iteration(500)
    page.dequantize.setChecked(True)
    page.fuse_selected(parent=str(tmp_path))
    name, fn, args = engine.calls[-1]
    assert (name, fn, args["which"], args["dequantize"]) == ("fuse", jobs.fuse, "500", True)
    assert args["out_dir"] == tmp_path / "finished-run-fused-500" and args["path"] == page.data.run_dir
    assert not page.fuse_button.isEnabled() and page.jobs.progress.isVisible()
    engine.send(JobStarted(), Stage("fuse", "Fusing adapter layers into the weights"))
    assert page.jobs.label.text().endswith("Fusing adapter layers into the weights")
    engine.send(JobFinished(FuseFinished(str(args["out_dir"]), None)))
    assert page.jobs.label.text() == f"Done: {args['out_dir']}"
    assert page.jobs.reveal.isVisible() and page.fuse_button.isEnabled()
    opened = []
    monkeypatch.setattr("macfinetune.ui.checkpoints.tasks.QDesktopServices.openUrl", opened.append)
    page.jobs.reveal.click()
    assert [u.toLocalFile() for u in opened] == [str(tmp_path)]  # the fused folder does not exist here


def test_export_is_disabled_without_export_model_and_submits_with_it(page, engine, tmp_path, monkeypatch):
    if hasattr(jobs, "export_model"):
        monkeypatch.delattr(jobs, "export_model")
    page.select_iteration(400)
    assert not page.export_button.isEnabled() and "export_model" in page.export_button.toolTip()

    def export_model(emit, control, **args):
        return None

    monkeypatch.setattr(jobs, "export_model", export_model, raising=False)
    page.select_iteration(300)
    assert page.export_button.isEnabled()
    page.export_selected("gguf", dest=str(tmp_path))
    assert engine.calls[-1] == ("export", export_model, {"run_dir": page.data.run_dir, "checkpoint": "300",
                                                         "target": "gguf", "dest": str(tmp_path)})


def test_export_dialog_shows_each_targets_options_and_refuses_what_core_refuses(page, tmp_path, qtbot):
    from PySide6.QtWidgets import QDialog

    from macfinetune.ui.checkpoints.export_dialog import ExportDialog

    (page.data.run_dir / runs.ADAPTERS / "adapter_config.json").write_text("{}")  # the sample run has none
    dialog = ExportDialog(page.data.run_dir, "300", "hub", parent=page)
    qtbot.addWidget(dialog)
    dialog.show()
    assert dialog.repo.isVisible() and dialog.private.isChecked() and not dialog.dest.isVisible()
    assert not dialog.dtype.isVisible() and "keychain" in dialog.help.text()
    dialog.repo.setText("not a repo id")
    dialog.export.click()
    assert dialog.error.text().startswith("The hub export needs a repository id like") and dialog.result() != QDialog.Accepted
    dialog.repo.setText("me/tuned")
    dialog.contents.setCurrentIndex(dialog.contents.findData("adapters"))
    dialog.export.click()
    assert dialog.result() == QDialog.Accepted and dialog.error.text() == ""
    assert dialog.request() == ("hub", "me/tuned", {"private": True, "contents": "adapters"})

    dialog = ExportDialog(page.data.run_dir, "300", "gguf", parent=page)
    qtbot.addWidget(dialog)
    dialog.show()
    dialog.target.setCurrentIndex(dialog.target.findData("ollama"))  # the user switches target
    assert dialog.dest.isVisible() and dialog.name.isVisible() and dialog.system.isVisible()
    assert not dialog.repo.isVisible() and not dialog.dequantize.isVisible()
    dialog.name.setText("My Model")
    dialog.dtype.setCurrentText("f32")
    dialog.export.click()
    assert "Name must be lower-case letters" in dialog.error.text() and dialog.result() != QDialog.Accepted
    existing = tmp_path / "taken"
    existing.mkdir()
    (existing / "file").write_text("x")
    dialog.name.setText("my-model")
    dialog.dest.setText(str(existing))
    dialog.export.click()
    assert str(existing) in dialog.error.text() and dialog.result() != QDialog.Accepted
    dialog.dest.setText(str(tmp_path / "new-folder"))
    dialog.system.setPlainText("Answer briefly.")
    dialog.export.click()
    assert dialog.result() == QDialog.Accepted
    assert dialog.request() == ("ollama", str(tmp_path / "new-folder"),
                                {"dtype": "f32", "name": "my-model", "system": "Answer briefly."})


def test_export_menu_asks_the_dialog_and_submits_its_options(page, engine, tmp_path, monkeypatch):
    asked = []

    def ask(target, checkpoint):
        asked.append((target, checkpoint))
        return ("ollama", str(tmp_path / "out"), {"dtype": "f32", "name": "mine"}) if len(asked) == 1 else None

    monkeypatch.setattr(page, "ask_export", ask)
    page.select_iteration(300)
    action = next(a for a in page.export_menu.actions() if a.text().startswith("Ollama"))
    action.trigger()
    assert asked == [("ollama", "300")]
    name, fn, args = engine.calls[-1]
    assert name == "export" and args == {"run_dir": page.data.run_dir, "checkpoint": "300", "target": "ollama",
                                         "dest": str(tmp_path / "out"), "dtype": "f32", "name": "mine"}
    calls = len(engine.calls)
    page.jobs._done("done")  # the first export ended; a cancelled dialog submits nothing
    next(a for a in page.export_menu.actions() if a.text().startswith("Hugging Face")).trigger()
    assert asked[-1] == ("hub", "300") and len(engine.calls) == calls


def test_test_prompt_opens_the_playground_with_the_checkpoint(page, window, qtbot):
    page.select_iteration(800)
    with qtbot.waitSignal(window.session.testPrompt) as signal:
        page.test_button.click()
    assert signal.args == [str(page.data.run_dir), "800"]
    assert window.current_page() == "playground"


def test_no_runs(window, qtbot):
    page = window.pages["checkpoints"]
    page.refresh_runs()
    page.wait_for_reads()
    window.show_page("checkpoints")
    # the scan's result arrives as a queued signal after the read ends ("Reading runs…" until then)
    qtbot.waitUntil(lambda: page.empty.isVisible() and page.empty.text().startswith("No runs yet"))
    assert not page.run_combo.isEnabled()
    assert not page.fuse_button.isEnabled() and not page.test_button.isEnabled()


# --- a real run -------------------------------------------------------------------------------


@pytest.fixture
def real_window(qtbot, settings):
    from macfinetune.engine import Engine
    from macfinetune.ui.main_window import create_main_window

    engine = Engine()
    engine.start()
    window = create_main_window(engine, settings)
    window.resize(1100, 720)
    window.show()
    yield window
    assert engine.shutdown(60_000)
    qtbot.waitUntil(lambda: not window.session.is_training)
    window.close()
    window.deleteLater()
    QApplication.processEvents()


@pytest.mark.slow
def test_a_real_run_with_samples_then_fuse_a_checkpoint_and_load_it(real_window, tiny_model, tmp_path, qtbot):
    from macfinetune.core.sampling import Sampling

    window, session = real_window, real_window.session
    page = window.pages["checkpoints"]
    run_dir = tmp_path / "data" / "runs" / "with-samples"
    session.prepare(fast_recipe(tiny_model, "samples=true", "sample_count=2", "sample_max_tokens=8"), run_dir)
    window.start_action.trigger()
    qtbot.waitUntil(lambda: session.state == "idle" and (run_dir / runs.STATUS).exists(), timeout=180_000)
    page.wait_for_reads()
    qtbot.waitUntil(lambda: page.model.rowCount() == 3 and page.samples.iterations == [4, 8, 12], timeout=10_000)
    data = checkpoints.read_checkpoints(run_dir)
    assert [c.iteration for c in runs.complete_checkpoints(run_dir)] == [r.iteration for r in data.rows]
    assert [c[2] for c in _cells(page)] == [f"{c.val_loss:.3f}" for c in runs.complete_checkpoints(run_dir)]
    best = runs.resolve_checkpoint(run_dir, "best")[1]
    assert [r for r, c in enumerate(_cells(page)) if BEST_MARK in c[0]] == [data.row_of(best)]
    written = samples.read_samples(run_dir)
    assert page.samples.answers(8) == [text for _, text in written[8]]

    page.select_iteration(8)
    page.fuse_selected(parent=str(tmp_path))
    qtbot.waitUntil(lambda: not page.jobs.busy, timeout=120_000)
    fused = tmp_path / "with-samples-fused-8"
    assert page.jobs.label.text() == f"Done: {fused}", page.jobs.label.text()
    assert (fused / "config.json").exists() and list(fused.glob("*.safetensors"))
    results = []
    session.jobEvent.connect(lambda e: results.append(e.event.result) if isinstance(e.event, JobFinished) else None)
    session.submit("generate", jobs.generate, model=str(fused), adapter=None, prompt="Is it hot?",
                   sampling=Sampling(temperature=0.0, max_tokens=4))
    qtbot.waitUntil(lambda: bool(results), timeout=60_000)
    assert results[0][0].generated_tokens > 0


def test_screenshot_of_the_page_is_deterministic_and_shows_the_demo_run(tmp_path):
    import hashlib

    from .test_cli_app import _shot

    (tmp_path / "again").mkdir()
    first = _shot(tmp_path, "checkpoints")
    assert hashlib.sha256(first).digest() == hashlib.sha256(_shot(tmp_path / "again", "checkpoints")).digest()
    assert _shot(tmp_path, "checkpoints", "dark") != first


def test_a_run_without_checkpoints_disables_the_actions_and_drops_the_last_result(page, engine, runs_dir, tmp_path,
                                                                                  qtbot):
    page.fuse_selected(parent=str(tmp_path))
    engine.send(JobStarted(), JobFinished(FuseFinished(str(tmp_path / "fused"), None)))
    assert page.jobs.isVisibleTo(page) and page.fuse_button.isEnabled()
    page.run_combo.setCurrentIndex(page.run_combo.findData(str(runs_dir / "failed-run")))
    page.run_combo.activated.emit(page.run_combo.currentIndex())
    page.wait_for_reads()
    qtbot.waitUntil(lambda: page.model.rowCount() == 0)
    assert page.empty.isVisibleTo(page)
    assert not page.fuse_button.isEnabled()
    assert not page.export_button.isEnabled()
    assert not page.test_button.isEnabled()
    assert not page.jobs.isVisibleTo(page) and page.jobs.label.text() == ""


def test_tab_leaves_the_checkpoints_table(page, window, qtbot):
    window.activateWindow()
    page.table.setFocus()
    qtbot.keyClick(page.table, Qt.Key.Key_Tab)
    assert QApplication.focusWidget() is not page.table
