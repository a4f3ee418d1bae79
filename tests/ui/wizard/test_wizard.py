"""The New-run wizard driven like a user would, from the tiny model and the sample data to Train."""

from __future__ import annotations

import json

from conftest import SAMPLE_DATA
from PySide6.QtCore import QObject, Qt, Slot
from PySide6.QtWidgets import QLabel, QLineEdit, QPushButton, QRadioButton

from macfinetune.core.recipe import load_recipe
from macfinetune.ui.wizard.gauge import MemoryGauge

from .conftest import wait_data

QWEN = "mlx-community/Qwen3-1.7B-bf16"  # shipped config: estimates without a download


def field(page, key) -> QLineEdit:
    return page.findChild(QLineEdit, f"field:{key}")


def error(page, key) -> str:
    label = page.findChild(QLabel, f"error:{key}")
    return (label.property("message") or "") if not label.isHidden() else ""


def type_into(edit: QLineEdit, text: str) -> None:
    edit.setText(text)
    edit.textEdited.emit(text)


def button(page, name) -> QPushButton:
    return page.findChild(QPushButton, name)


def choose_tiny(qtbot, page, tiny_model):
    model_step = page.steps["model"]
    # the data folder may hold other models (the demo's, built by an earlier test): find ours
    paths = lambda: [e.path for e in model_step.table_model.entries]  # noqa: E731
    qtbot.waitUntil(lambda: tiny_model in paths(), timeout=20_000)
    index = model_step.table_model.index(paths().index(tiny_model), 0)
    model_step.table.clicked.emit(index)


def test_every_step_from_the_tiny_model_to_train(qtbot, make_page, tiny_model, fake_engine):
    page = make_page(folders=[tiny_model.parent])
    assert page.gauge.text.property("plain") == "no model yet"
    choose_tiny(qtbot, page, tiny_model)
    facts = page.findChild(QLabel, "modelFacts").text()
    assert "LlamaForCausalLM" in facts and "full precision" in facts
    assert page.state.shape.layers == 2
    assert page.gauge.text.property("plain").endswith("· fits")

    page.go("data")
    page.steps["data"].choose_path(str(SAMPLE_DATA))
    wait_data(qtbot, page)
    summary = page.findChild(QLabel, "dataSummary").text()
    assert "mlx-lm chat (messages)" in summary and "train 306 rows" in summary and "valid 50 rows" in summary
    assert page.findChild(QLabel, "splitOffer").text() == ""  # the folder has its own valid.jsonl
    histogram = page.steps["data"].histogram.histogram
    assert histogram.rows == 356 and sum(histogram.counts) == 356
    assert page.findChild(QLabel, "histogramText").text().startswith("356 rows, longest")
    preview = page.steps["data"].preview
    assert "through the model's chat template" in preview.toPlainText()
    assert "<|im_start|>assistant\nArr, matey!" in preview.toPlainText()
    longest = page.state.data.longest_tokens
    assert longest == histogram.longest
    assert page.recommended and page.recipe.data.max_seq_length == min(256 * -(-longest // 256),
                                                                       page.state.shape.max_positions)
    page.steps["data"].mask.setChecked(True)
    highlighted = preview.toHtml().split("background-color:")[1]
    assert "Arr, matey!" in highlighted.split("</span>")[0] and "user" not in highlighted.split("</span>")[0]
    page.steps["data"].mask.setChecked(False)

    page.go("method")
    assert "method.type" in page.steps["method"].reasons.toPlainText()
    checked = [b.objectName() for b in page.findChildren(QRadioButton) if b.isChecked() and b.objectName().startswith("method:")]
    assert checked == [f"method:{page.recipe.method.type}"]

    page.go("settings")
    for key, value in (("training.iterations", "6"), ("training.batch_size", "2"), ("data.max_seq_length", "96")):
        type_into(field(page, key), value)
    page.go("review")
    review = page.steps["review"]
    assert page.findChild(QLabel, "verdict").text().startswith("<b>Fits</b>")
    assert "Iterations: <b>6</b>" in page.findChild(QLabel, "plan").text()
    command = page.findChild(QLineEdit, "command").text()
    assert f"--model {tiny_model}" in command and "--set training.iterations=6" in command
    assert "iterations: 6" in page.findChild(type(review.yaml), "yaml").toPlainText()

    qtbot.mouseClick(button(page, "train"), Qt.MouseButton.LeftButton)
    (recipe, run_dir, allow), = fake_engine.started
    assert (recipe.model.path, recipe.data.path, allow) == (str(tiny_model), str(SAMPLE_DATA), False)
    assert (recipe.training.iterations, recipe.training.batch_size, recipe.data.max_seq_length) == (6, 2, 96)
    assert run_dir.parent == page.services.runs_home() and not run_dir.exists()
    assert fake_engine.monitor_shown == 1


def test_bad_values_block_train_with_the_message_beside_the_field(qtbot, make_page, tiny_model, fake_engine):
    page = make_page(folders=[tiny_model.parent])
    choose_tiny(qtbot, page, tiny_model)
    page.steps["data"].choose_path(str(SAMPLE_DATA))
    wait_data(qtbot, page, tokens=False)
    page.go("settings")
    type_into(field(page, "training.batch_size"), "0")
    type_into(field(page, "method.rank"), "eight")
    type_into(field(page, "method.num_layers"), "5")
    assert error(page, "training.batch_size") == "0 is out of range; allowed 1 to 4096"
    assert error(page, "method.rank") == "expected a whole number, got 'eight'"
    page.go("review")
    assert not button(page, "train").isEnabled()
    assert "training.batch_size" in page.findChild(QLabel, "blockers").text()

    type_into(field(page, "training.batch_size"), "2")
    type_into(field(page, "method.rank"), "8")
    assert error(page, "method.num_layers").startswith("5 is not allowed; allowed: 1 to 2 (the model's blocks)")
    assert not button(page, "train").isEnabled()
    type_into(field(page, "method.num_layers"), "2")
    assert page.errors == {} and button(page, "train").isEnabled()
    assert error(page, "method.num_layers") == ""


def test_an_unusual_learning_rate_is_advised_beside_the_field_without_blocking(qtbot, make_page, tiny_model,
                                                                               fake_engine):
    page = make_page(folders=[tiny_model.parent])
    choose_tiny(qtbot, page, tiny_model)
    page.steps["data"].choose_path(str(SAMPLE_DATA))
    wait_data(qtbot, page, tokens=False)
    page.go("settings")
    label = page.findChild(QLabel, "error:training.learning_rate")
    type_into(field(page, "training.learning_rate"), "1.0")
    assert not label.isHidden() and "unusually high: the demo recipe's rate for 0.1M parameters is 0.002" in label.text()
    assert error(page, "training.learning_rate") == ""  # advice, not an error: Train stays possible
    page.go("review")
    assert page.errors == {} and button(page, "train").isEnabled()
    page.go("settings")
    type_into(field(page, "training.learning_rate"), "0.002")
    assert label.isHidden()


def test_auto_fit_makes_an_over_budget_configuration_fit(qtbot, make_page):
    page = make_page(memory_gb=16)
    page.steps["model"].choose_path(QWEN)
    page.state.set("data.path", "somewhere.jsonl")  # not read: no data yet
    page.go("settings")
    type_into(field(page, "training.batch_size"), "16")
    type_into(field(page, "data.max_seq_length"), "4096")
    page.go("review")
    assert page.findChild(QLabel, "verdict").text().startswith("<b>Will not fit</b>")
    assert page.findChild(MemoryGauge, "gauge").status == "will not fit"
    autofit = button(page, "autofit")
    assert autofit.isEnabled()
    summary = page.findChild(QLabel, "fitSummary").text()
    fit = page.steps["review"].plan.fit
    # at 4096 and 2048 tokens the run already uses the memory-light attention (training.attention: auto),
    # so cutting the sequences is enough; before it, a smaller batch was needed too (issue 14)
    assert summary.startswith("Auto-fit would change: sequences cut at 1024 tokens") and "fits in" in summary, summary
    qtbot.mouseClick(autofit, Qt.MouseButton.LeftButton)
    assert page.findChild(QLabel, "verdict").text().startswith("<b>Fits</b>")
    r = page.recipe
    assert (r.data.max_seq_length, r.training.batch_size, r.training.grad_accumulation) == \
        (fit.settings.max_seq_length, fit.settings.batch_size, fit.settings.grad_accumulation) == (1024, 16, 1), \
        (fit.settings.max_seq_length, fit.settings.batch_size, fit.settings.grad_accumulation)
    assert field(page, "data.max_seq_length").text() == str(page.recipe.data.max_seq_length)
    assert page.findChild(QLabel, "fitSummary").text() == "Fits as it is: nothing to change."


def test_over_budget_train_needs_the_confirmation(qtbot, make_page, tiny_model, fake_engine):
    page = make_page(memory_gb=16)
    page.steps["model"].choose_path(QWEN)
    page.go("settings")
    type_into(field(page, "training.batch_size"), "16")
    type_into(field(page, "data.max_seq_length"), "4096")
    page.state.set("data.path", str(SAMPLE_DATA / "train.jsonl"))
    page.refresh()
    page.go("review")
    asked = []
    review = page.steps["review"]
    review.confirm_over_budget = lambda text: asked.append(text) or False
    qtbot.mouseClick(button(page, "train"), Qt.MouseButton.LeftButton)
    assert fake_engine.started == [] and "memory guard will pause it" in asked[0]
    review.confirm_over_budget = lambda text: True
    qtbot.mouseClick(button(page, "train"), Qt.MouseButton.LeftButton)
    assert fake_engine.started[0][2] is True


def test_refused_models_say_why_beside_the_field(qtbot, make_page, tmp_path):
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    (pickled / "pytorch_model.bin").write_bytes(b"x")
    (pickled / "tokenizer.json").write_text("{}")
    page = make_page()
    page.steps["model"].choose_path(str(pickled))
    assert "only pickle weights (pytorch_model.bin)" in error(page, "model.path")
    assert page.state.shape is None and not button(page, "train").isEnabled()


def test_data_without_validation_offers_a_split_and_masking_text_is_refused(qtbot, make_page, tiny_model, tmp_path):
    text = tmp_path / "notes.jsonl"
    text.write_text("".join(json.dumps({"text": f"row {i} about ships"}) + "\n" for i in range(40)))
    page = make_page(folders=[tiny_model.parent])
    choose_tiny(qtbot, page, tiny_model)
    page.steps["data"].choose_path(str(text))
    wait_data(qtbot, page)
    assert page.findChild(QLabel, "splitOffer").text().startswith("No validation file: 4 of 40 rows (10%)")
    assert "mlx-lm text" in page.findChild(QLabel, "dataSummary").text()
    page.steps["data"].mask.setChecked(True)
    assert error(page, "data.mask_prompt").startswith("prompt masking needs chat or completions data")
    assert not button(page, "train").isEnabled()


def test_load_recipe_fills_the_wizard_from_a_run_folder(qtbot, make_page, tiny_model, tmp_path):
    from conftest import fast_recipe

    from macfinetune.core.recipe import save_recipe

    run = tmp_path / "old-run"
    run.mkdir()
    save_recipe(run / "recipe.yaml", fast_recipe(tiny_model, "rank=4", "learning_rate=3e-4"))
    page = make_page(folders=[tiny_model.parent])
    page.load_recipe(run)
    wait_data(qtbot, page)
    assert page.current_step() == "review"
    assert page.recipe == load_recipe(run / "recipe.yaml")
    assert field(page, "method.rank").text() == "4" and field(page, "training.learning_rate").text() == "0.0003"
    assert button(page, "train").isEnabled()


def test_save_as_recipe_writes_what_train_would_run(qtbot, make_page, tmp_path):
    page = make_page()
    page.steps["model"].choose_path(QWEN)
    page.state.set("data.path", "data.jsonl")
    page.refresh()
    assert page.steps["review"].save_to(tmp_path / "mine.yaml") == ""
    assert load_recipe(tmp_path / "mine.yaml") == page.recipe


def test_save_as_recipe_says_why_it_did_not_save(qtbot, make_page, tmp_path, monkeypatch):
    """A shipped recipe's name in your recipes folder would hide it; an unwritable place is said, not raised."""
    from macfinetune.core import paths

    monkeypatch.setenv("MACFINETUNE_HOME", str(tmp_path / "home"))
    page = make_page()
    review = page.steps["review"]
    shadow = paths.user_recipes_home() / "demo-tiny-lora.yaml"
    assert "a shipped recipe has this name" in review.save_to(shadow) and not shadow.exists()
    (tmp_path / "a-file").write_text("x")
    assert "could not write the recipe" in review.save_to(tmp_path / "a-file" / "r.yaml")


def test_a_preset_fills_the_settings(qtbot, make_page):
    page = make_page()
    page.steps["model"].choose_path(QWEN)
    page.go("settings")
    page.steps["settings"].apply_preset("quick-test")
    assert field(page, "training.batch_size").text() == "2"
    assert field(page, "training.grad_accumulation").text() == "8"
    assert field(page, "training.epochs").text() == "3"


class _Events(QObject):
    def __init__(self):
        super().__init__()
        self.events = []

    @Slot(object)
    def on_event(self, envelope):
        self.events.append(envelope.event)  # the engine sends every event in a JobEvent envelope


def test_train_starts_a_real_run_on_the_engine(qtbot, make_page, tiny_model, tmp_path):
    from macfinetune.core.events import RunFinished, RunStarted
    from macfinetune.engine import Engine

    engine, events = Engine(), _Events()
    engine.event.connect(events.on_event)
    engine.start()
    try:
        page = make_page(folders=[tiny_model.parent], start_training=engine.train)
        choose_tiny(qtbot, page, tiny_model)
        page.steps["data"].choose_path(str(SAMPLE_DATA))
        wait_data(qtbot, page, tokens=False)
        for key, value in (("training.iterations", "4"), ("training.batch_size", "2"), ("data.max_seq_length", "64"),
                           ("eval.eval_every", "4"), ("eval.save_every", "4"), ("eval.val_batches", "2"),
                           ("training.grad_accumulation", "1")):
            type_into(field(page, key), value)
        page.go("review")
        run_dir = page.steps["review"].start()
        qtbot.waitUntil(lambda: any(isinstance(e, RunFinished) for e in events.events), timeout=120_000)
    finally:
        assert engine.shutdown()
    started = next(e for e in events.events if isinstance(e, RunStarted))
    assert (started.run_dir, started.iterations, started.batch_size) == (str(run_dir), 4, 2)
    assert load_recipe(run_dir / "recipe.yaml") == page.recipe


def test_opening_a_path_fills_the_right_step(qtbot, make_page, tiny_model, tmp_path):
    from conftest import fast_recipe

    from macfinetune.core.recipe import save_recipe

    save_recipe(tmp_path / "r.yaml", fast_recipe(tiny_model, "rank=2"))
    page = make_page()
    assert page.open_path(tiny_model) == "model" and page.state.values["model"]["path"] == str(tiny_model)
    assert page.open_path(SAMPLE_DATA / "train.jsonl") == "data" and page.current_step() == "data"
    wait_data(qtbot, page)
    assert page.open_path(tmp_path / "r.yaml") == "recipe" and page.recipe.method.rank == 2
    wait_data(qtbot, page)


def test_download_progress_and_result_arrive_through_on_event(qtbot, make_page, tiny_model):
    from macfinetune.core.events import JobEvent as Envelope
    from macfinetune.core.events import JobFailed
    from macfinetune.core.models_catalog import DownloadFinished, DownloadProgress

    asked = []
    page = make_page(download=asked.append)
    page.findChild(QLineEdit, "hubId").setText("org/some-model")
    qtbot.mouseClick(button(page, "download"), Qt.MouseButton.LeftButton)
    assert asked == ["org/some-model"]
    status = page.findChild(QLabel, "downloadStatus")
    page.on_event(Envelope(1, "download", DownloadProgress("org/some-model", 500_000_000, 2_000_000_000, 1, 4)))
    assert status.text() == "Downloading org/some-model: 0.50 GB of 2.00 GB, 1/4 files"
    page.on_event(Envelope(1, "train", JobFailed("not ours")))
    assert status.text().startswith("Downloading")
    page.on_event(Envelope(1, "download", JobFailed("offline: the hub cannot be reached")))
    assert status.text() == "Download failed: offline: the hub cannot be reached"
    page.on_event(Envelope(2, "download", DownloadFinished("org/some-model", str(tiny_model))))
    assert page.state.values["model"]["path"] == str(tiny_model) and page.state.shape.layers == 2


def test_reading_pauses_the_collector_and_freezes_what_was_read():
    import gc

    import pytest

    from macfinetune.ui.wizard.worker import quiet_gc

    frozen = gc.get_freeze_count()
    with pytest.raises(ValueError), quiet_gc():
        rows = [[str(i)] for i in range(1000)]  # lists are tracked by the collector
        assert not gc.isenabled()
        raise ValueError("a broken file")
    assert gc.isenabled() and gc.get_freeze_count() >= frozen + len(rows)


def test_review_shows_this_macs_correction_and_measure_this_mac_updates_it(qtbot, make_page):
    """Issue 13: the wizard shows this Mac's correction and its confidence, and Measure this Mac runs the
    probe job and then reads the runs again (the gauge, the verdict and Train use the corrected figure)."""
    from macfinetune.backend.probe import ProbeRow
    from macfinetune.core.calibration import MacRow
    from macfinetune.core.events import JobEvent, JobFinished, Stage

    rows: list = []
    asked: list = []

    def measure(recipe):
        asked.append(recipe)
        return 7

    page = make_page(memory_gb=64, mac_rows=lambda: list(rows), measure=measure)
    page.steps["model"].choose_path(QWEN)
    page.state.set("data.path", "somewhere.jsonl")
    page.go("review")
    label = page.findChild(QLabel, "correction")
    qtbot.waitUntil(lambda: label.text().startswith("Not corrected"), timeout=10_000)
    plain = page.steps["review"].plan.estimate
    assert "corrected" not in page.findChild(MemoryGauge, "gauge").text.text()
    rows += [MacRow(f"run{i}", plain.family, plain.settings.method, plain.mode, 10.0, 10.8) for i in range(4)]
    page.reload_mac_rows()
    qtbot.waitUntil(lambda: len(page.mac_rows) == 4, timeout=10_000)
    assert label.text().startswith("Corrected +6% from 4 runs on this Mac"), label.text()
    assert "confidence high" in label.text()
    plan = page.steps["review"].plan
    assert plan.estimate.total_bytes == round(plain.total_bytes * 1.064, -3) or \
        abs(plan.estimate.total_bytes / plain.total_bytes - 1.064) < 1e-3
    assert "corrected +6% on this Mac" in page.findChild(MemoryGauge, "gauge").text.text()

    measure_button = button(page, "measureMac")
    assert measure_button.isEnabled()
    qtbot.mouseClick(measure_button, Qt.MouseButton.LeftButton)
    assert len(asked) == 1 and asked[0].model.path == QWEN and not measure_button.isEnabled()
    assert label.text().startswith("Measuring this Mac")
    page.on_event(JobEvent(7, "measure", Stage("measure", "probe: 512 tokens per row, 2 rows per batch")))
    assert "probe: 512 tokens per row" in label.text()
    page.on_event(JobEvent(8, "measure", JobFinished([])))  # another job's end: not ours
    assert not measure_button.isEnabled()
    rows.append(MacRow("probe", plain.family, plain.settings.method, plain.mode, 10.0, 10.8))
    page.on_event(JobEvent(7, "measure", JobFinished([ProbeRow("probe", 512, 3.8, 4.0)])))
    assert label.text().startswith("Measured: 512 tokens: measured 4.00 GB, estimated 3.80 GB (-5%)")
    qtbot.waitUntil(lambda: len(page.mac_rows) == 5, timeout=10_000)
    assert label.text().startswith("Corrected +7% from 5 runs on this Mac"), label.text()
    assert measure_button.isEnabled()


def test_train_on_the_machines_of_preferences(qtbot, make_page, tiny_model):
    """Issue 16: with two or more Macs in Preferences -> Machines the review offers them; the plan counts
    global steps and explains the global batch; Train hands the hostfile to the engine."""
    from PySide6.QtWidgets import QComboBox

    from macfinetune.core import hosts

    machines = hosts.Hostfile((hosts.Host("127.0.0.1"), hosts.Host("me@studio.local")), "ring", (),
                              "/data/machines.json")
    started = []
    page = make_page(memory_gb=64, folders=[tiny_model.parent], machines=lambda: machines,
                     start_on_hosts=lambda recipe, run_dir, allow, hostfile: started.append((run_dir, hostfile)))
    choose_tiny(qtbot, page, tiny_model)
    page.go("data")
    page.steps["data"].choose_path(str(SAMPLE_DATA))
    wait_data(qtbot, page)
    page.go("review")
    combo = page.findChild(QComboBox, "trainOn")
    assert combo.isVisible() and [combo.itemText(i) for i in range(combo.count())] == [
        "This Mac", "2 Macs (127.0.0.1, studio.local)"]
    numbers = page.findChild(QLabel, "plan")
    assert "On 2 Macs" not in numbers.text() and "--hosts" not in page.findChild(QLineEdit, "command").text()
    one_mac = page.steps["review"].plan.iterations_per_epoch
    combo.setCurrentIndex(1)
    batch = page.recipe.training.batch_size
    assert page.steps["review"].plan.iterations_per_epoch == 306 // (2 * batch) < one_mac  # global steps
    assert f"2 Macs × batch {batch} = global batch {2 * batch} per step" in numbers.text()
    assert page.findChild(QLineEdit, "command").text().endswith("--hosts /data/machines.json")
    assert page.errors == {}, page.errors
    qtbot.mouseClick(button(page, "train"), Qt.MouseButton.LeftButton)
    assert len(started) == 1 and started[0][1] is machines


def test_check_these_macs_judges_the_recipe_and_offers_to_copy(qtbot, make_page, tiny_model):
    """Issue 16: the review's Check these Macs runs check_hosts for this recipe on the chosen Macs; what is
    wrong is listed per host, and Copy to the Macs appears when a host lacks the model or data."""
    from PySide6.QtWidgets import QComboBox

    from macfinetune.core import hosts
    from macfinetune.core.events import JobEvent, JobFinished, Stage

    machines = hosts.Hostfile((hosts.Host("127.0.0.1"), hosts.Host("studio")), "ring", (), "/data/machines.json")
    asked, cancelled = [], []
    page = make_page(memory_gb=64, folders=[tiny_model.parent], machines=lambda: machines,
                     start_on_hosts=lambda *a: None, cancel_job=cancelled.append,
                     check_hosts=lambda recipe, hostfile, copy: asked.append((recipe, hostfile, copy)) or 40 + len(asked))
    choose_tiny(qtbot, page, tiny_model)
    page.go("data")
    page.steps["data"].choose_path(str(SAMPLE_DATA))
    wait_data(qtbot, page)
    page.go("review")
    check, copy, label = button(page, "checkMacs"), button(page, "copyMacs"), page.findChild(QLabel, "hostsCheck")
    assert not check.isVisible() and not copy.isVisible()  # This Mac: nothing to check
    page.findChild(QComboBox, "trainOn").setCurrentIndex(1)
    assert check.isVisible() and check.isEnabled() and not copy.isVisible()
    qtbot.mouseClick(check, Qt.MouseButton.LeftButton)
    assert asked == [(page.recipe, machines, False)] and not check.isEnabled()
    page.on_event(JobEvent(41, "check_hosts", Stage("check_hosts", "studio: answered")))
    assert label.text() == "studio: answered"
    page.on_event(JobEvent(9, "check_hosts", JobFinished(hosts.HostCheck((), ()))))  # the Machines dialog's check
    assert not check.isEnabled()
    missing = f"studio: {SAMPLE_DATA} is not there; copy it"
    page.on_event(JobEvent(41, "check_hosts", JobFinished(hosts.HostCheck(
        (hosts.HostReport("127.0.0.1", True), hosts.HostReport("studio", True, missing=(str(SAMPLE_DATA),))),
        ("studio: the run needs about 9.0 GB per Mac, that Mac can give MLX 5.0 GB", missing), 9.0))))
    assert "studio: the run needs about 9.0 GB" in label.text() and "is not there" in label.text()
    assert check.isEnabled() and copy.isVisible() and copy.isEnabled()
    qtbot.mouseClick(copy, Qt.MouseButton.LeftButton)
    assert asked[-1] == (page.recipe, machines, True)
    stop = button(page, "stopCheckMacs")
    assert stop.isVisible() and not copy.isVisible()  # a copy can take long: it can be stopped
    qtbot.mouseClick(stop, Qt.MouseButton.LeftButton)
    assert cancelled == [42] and label.text() == "Stopping…"
    page.on_event(JobEvent(42, "check_hosts", JobFinished(hosts.HostCheck(
        (hosts.HostReport("127.0.0.1", True), hosts.HostReport("studio", True)), (), 0.4, (f"studio: {SAMPLE_DATA}",)))))
    assert f"Copied studio: {SAMPLE_DATA}" in label.text() and "Ready: 2 Macs" in label.text()
    assert "0.40 GB" in label.text() and not copy.isVisible() and not stop.isVisible()


def test_train_on_is_hidden_without_machines(qtbot, make_page):
    from PySide6.QtWidgets import QComboBox

    page = make_page(memory_gb=64, machines=lambda: None, start_on_hosts=lambda *a: None)
    page.steps["model"].choose_path(QWEN)
    page.go("review")
    assert not page.findChild(QComboBox, "trainOn").isVisible()
