"""Real training on the tiny model: every method, the run-folder contract, best, stop, pause."""

import json
import threading

import pytest
from conftest import fast_recipe

from macfinetune.backend import adapters as adapter_ops
from macfinetune.backend.training import train_run
from macfinetune.core import runs
from macfinetune.core.control import JobControl
from macfinetune.core.events import (
    CheckpointSaved,
    RunFinished,
    RunPaused,
    RunResumed,
    RunStarted,
    TrainReport,
)
from macfinetune.core.problems import ProblemError
from macfinetune.core.recipe import load_recipe


def train(recipe, run_dir, control=None):
    events = []
    result = train_run(recipe, run_dir, events.append, control)
    return result, events


@pytest.mark.parametrize("method", ["lora", "dora", "full"])
def test_each_method_trains_and_loss_falls(tiny_model, tmp_path, method, capfd):
    result, events = train(fast_recipe(tiny_model, f"method.type={method}"), tmp_path / "run")
    assert result.state == "finished" and result.iteration == 12
    losses = [e.train_loss for e in events if isinstance(e, TrainReport)]
    assert losses[-1] < losses[0]
    started = next(e for e in events if isinstance(e, RunStarted))
    assert 0 < started.trainable_parameters < started.total_parameters
    out, _ = capfd.readouterr()
    assert out == "", "the backend must not print"


def test_lora_parameter_count_matches_rank_arithmetic(tiny_model, tmp_path):
    config = json.loads((tiny_model / "config.json").read_text())
    h, layers = config["hidden_size"], config["num_hidden_layers"]
    kv = h // config["num_attention_heads"] * config["num_key_value_heads"]
    r = 4
    _, events = train(fast_recipe(tiny_model, f"rank={r}", "iterations=1", "target_modules=q_proj,v_proj"),
                      tmp_path / "run")
    started = next(e for e in events if isinstance(e, RunStarted))
    assert started.trainable_parameters == layers * r * ((h + h) + (h + kv))


def test_qlora_on_a_4bit_model_and_on_the_fly_quantization(tiny_model, tiny_model_q4, tmp_path):
    result, _ = train(fast_recipe(tiny_model_q4, "iterations=4"), tmp_path / "q4")
    assert result.state == "finished"
    result, _ = train(fast_recipe(tiny_model, "iterations=4", "model.quantize=8", "quantize_group_size=32"),
                      tmp_path / "fly")
    assert result.state == "finished"
    base = tmp_path / "fly" / runs.BASE_MODEL
    assert json.loads((base / "config.json").read_text())["quantization"]["bits"] == 8
    assert runs.read_status(tmp_path / "fly").model == str(base)


def test_run_folder_contract(trained_run):
    names = {p.name for p in trained_run.iterdir()}
    assert {"recipe.yaml", "metrics.jsonl", "status.json", "adapters", "data", "checkpoints"} <= names
    adapters = {p.name for p in (trained_run / "adapters").iterdir()}
    assert {"adapter_config.json", "adapters.safetensors", "0000004_adapters.safetensors",
            "0000012_adapters.safetensors"} <= adapters
    final, last = trained_run / "adapters" / "adapters.safetensors", trained_run / "adapters" / "0000012_adapters.safetensors"
    assert final.read_bytes() == last.read_bytes()  # the final weights are the last checkpoint's (cloned)...
    assert not final.samefile(last)  # ...in a file of their own: rewriting one never changes the other
    config = json.loads((trained_run / "adapters" / "adapter_config.json").read_text())
    assert config["fine_tune_type"] == "lora" and config["lora_parameters"]["scale"] == 2.0
    records = runs.read_metrics(trained_run)
    assert all("event" in r and "iteration" in r for r in records)
    assert {"start", "train", "val", "checkpoint", "finish"} <= {r["event"] for r in records}
    recipe = load_recipe(trained_run / "recipe.yaml")  # reloadable, fully resolved
    assert recipe.training.iterations == 12 and recipe.model.path and recipe.data.path
    assert runs.read_status(trained_run).state == "finished"


def test_each_checkpoint_carries_the_val_loss_of_its_own_weights(trained_run, tiny_model):
    """Best-checkpoint tracking is exact: re-evaluating a checkpoint reproduces its logged loss."""
    from macfinetune.backend import models
    from macfinetune.backend.training import _datasets, preflight, validation_loss

    saved = [r for r in runs.read_metrics(trained_run) if r["event"] == "checkpoint"]
    best = min(saved, key=lambda r: r["val_loss"])
    assert [r["iteration"] for r in saved if r["is_best"]][-1] == best["iteration"]
    assert runs.resolve_checkpoint(trained_run, "best")[1] == best["iteration"]
    assert runs.read_status(trained_run).best_iteration == best["iteration"]

    recipe = load_recipe(trained_run / "recipe.yaml")
    model, tokenizer, _ = models.load_model(tiny_model)
    adapter_ops.apply_adapter(model, trained_run / "adapters", runs.resolve_checkpoint(trained_run, "4")[0])
    pre = preflight(recipe, trained_run.parent / "unused")
    _, valid = _datasets(pre, tokenizer)
    loss = validation_loss(model, valid, pre)
    logged = next(r["val_loss"] for r in saved if r["iteration"] == 4)
    assert loss == pytest.approx(logged, rel=1e-4)


def test_stop_within_one_iteration_saves_a_loadable_checkpoint(tiny_model, tmp_path):
    control = JobControl()
    events = []

    def emit(event):
        events.append(event)
        if isinstance(event, TrainReport) and event.iteration == 4:
            control.request_stop()

    result = train_run(fast_recipe(tiny_model, "iterations=400", "save_every=100"), tmp_path / "run", emit, control)
    assert result.state == "stopped" and result.iteration == 4
    saved = [e for e in events if isinstance(e, CheckpointSaved)]
    assert saved[-1].iteration == 4
    assert isinstance(events[-1], RunFinished) and events[-1].stopped
    from macfinetune.backend import models

    model, _, _ = models.load_model(tiny_model)
    adapter_ops.apply_adapter(model, tmp_path / "run" / "adapters", runs.resolve_checkpoint(tmp_path / "run", "last")[0])
    assert runs.read_status(tmp_path / "run").state == "stopped"


def test_pause_blocks_training_until_resumed(tiny_model, tmp_path):
    control = JobControl()
    events = []
    paused = threading.Event()

    def emit(event):
        events.append(event)
        if isinstance(event, TrainReport) and event.iteration == 4 and not paused.is_set():
            control.pause()
        if isinstance(event, RunPaused):
            paused.set()
            threading.Timer(0.3, control.resume).start()

    result = train_run(fast_recipe(tiny_model, "iterations=8"), tmp_path / "run", emit, control)
    assert result.state == "finished"
    kinds = [type(e) for e in events]
    assert kinds.index(RunPaused) < kinds.index(RunResumed)
    assert next(e for e in events if isinstance(e, RunPaused)).iteration == 4


def test_grad_checkpoint_and_accumulation_train_and_restore_the_block(tiny_model, tmp_path):
    from macfinetune.backend import models

    model, _, _ = models.load_model(tiny_model)
    block_call = type(model.layers[0]).__call__
    result, _ = train(fast_recipe(tiny_model, "iterations=4", "grad_checkpoint=true", "grad_accumulation=2",
                                  "optimizer=adafactor", "lr_schedule=linear", "warmup_steps=1"),
                      tmp_path / "run")
    assert result.state == "finished"
    assert type(model.layers[0]).__call__ is block_call


@pytest.mark.parametrize(
    "override, expected",
    [
        ("num_layers=9", "the model has 2 layers"),
        ("target_modules=qq_proj", "no module named qq_proj"),
    ],
)
def test_model_dependent_bad_input_leaves_no_folder(tiny_model, tmp_path, override, expected):
    with pytest.raises(ProblemError, match=expected):
        train(fast_recipe(tiny_model, override), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_full_fine_tuning_of_a_quantized_model_is_refused(tiny_model_q4, tmp_path):
    with pytest.raises(ProblemError, match="full fine-tuning needs full-precision"):
        train(fast_recipe(tiny_model_q4, "method.type=full"), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_adapter_fields_reach_mlx_lm(tiny_model):
    from macfinetune.backend import models

    model, _, _ = models.load_model(tiny_model)
    recipe = fast_recipe(tiny_model, "rank=4", "alpha=12", "dropout=0.1", "target_modules=q_proj",
                         "num_layers=1", "method.type=dora")
    config = adapter_ops.adapter_config(recipe, adapter_ops.resolve_keys(model, ("q_proj",)), "base")
    assert config["lora_parameters"] == {"rank": 4, "scale": 3.0, "dropout": 0.1, "keys": ["self_attn.q_proj"]}
    assert config["num_layers"] == 1 and config["fine_tune_type"] == "dora"


@pytest.fixture
def mlx_lm_train(monkeypatch):
    """What mlx-lm's train() receives, and how many optimizer updates it really makes."""
    from mlx_lm.tuner import trainer

    seen = {"updates": 0}
    real = trainer.train

    def capture(model, optimizer, train_dataset, val_dataset=None, args=None, **kwargs):
        seen.update(args=args, optimizer=optimizer)
        update = optimizer.update

        def counted(model, gradients):
            seen["updates"] += 1
            return update(model, gradients)

        optimizer.update = counted
        return real(model, optimizer, train_dataset, val_dataset, args, **kwargs)

    monkeypatch.setattr(trainer, "train", capture)
    return seen


def test_training_fields_reach_mlx_lm_and_accumulation_really_happens(tiny_model, tmp_path, mlx_lm_train):
    """The one mapping function: schedule, warmup, peak and minimum learning rate, batch, length,
    checkpointing and accumulation arrive in mlx-lm's TrainingArgs and optimizer."""
    import mlx.optimizers as optim

    recipe = fast_recipe(tiny_model, "iterations=12", "batch_size=2", "max_seq_length=64", "grad_checkpoint=true",
                         "grad_accumulation=3", "optimizer=adamw", "weight_decay=0.05", "learning_rate=1e-3",
                         "lr_schedule=cosine", "warmup_steps=1", "min_lr_ratio=0.1", "save_every=6")
    result, _ = train(recipe, tmp_path / "run")
    assert result.state == "finished"
    args, opt = mlx_lm_train["args"], mlx_lm_train["optimizer"]
    assert (args.batch_size, args.max_seq_length, args.grad_checkpoint, args.grad_accumulation_steps,
            args.iters) == (2, 64, True, 3, 12)
    assert isinstance(opt, optim.AdamW) and opt.weight_decay == 0.05
    assert mlx_lm_train["updates"] == 12 // 3 and opt.step.item() == 4  # one update per 3 batches
    lr = opt._schedulers["learning_rate"]  # 4 updates: 1 of warmup from 0, then cosine 1e-3 -> 1e-4 over 3
    values = [lr(step).item() for step in range(6)]
    assert values[0] == 0.0
    assert values[1] == pytest.approx(1e-3) and values[2] == pytest.approx(1e-3)
    assert values[3] == pytest.approx(1e-4 + 0.9e-3 * 0.75)  # cosine a third of the way (linear: 7e-4)
    assert values[5] == pytest.approx(1e-4)


def test_each_optimizer_name_builds_its_optimizer(tiny_model):
    import mlx.optimizers as optim

    for name, kind in (("adam", optim.Adam), ("adamw", optim.AdamW), ("sgd", optim.SGD),
                       ("adafactor", optim.Adafactor)):
        opt = adapter_ops.make_optimizer(fast_recipe(tiny_model, f"optimizer={name}"), None)
        assert type(opt) is kind and opt.learning_rate.item() == pytest.approx(1e-3)


def test_validation_does_not_change_the_training_trajectory(tiny_model, tmp_path):
    def losses(name, *overrides):
        _, events = train(fast_recipe(tiny_model, "iterations=8", "report_every=1", *overrides), tmp_path / name)
        return [e.train_loss for e in events if isinstance(e, TrainReport)]

    often = losses("often", "eval_every=1", "save_every=2")
    rarely = losses("rarely", "eval_every=100", "save_every=100")
    assert often == pytest.approx(rarely, rel=1e-5)
