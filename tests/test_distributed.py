"""Training on several hosts: MLX's ring backend with two ranks on loopback (``mlx.launch``), as on two Macs."""

import json
import random
import threading
import time

import pytest
from conftest import fast_recipe

from macfinetune.backend import launch
from macfinetune.backend.training import resume_run, train_run
from macfinetune.cli import main
from macfinetune.core import hosts, runs, wire
from macfinetune.core.control import JobControl
from macfinetune.core.events import CheckpointSaved, HostSample, RunFailed, TrainReport, ValReport
from macfinetune.core.plan import make_plan
from macfinetune.core.problems import Problem, ProblemError
from macfinetune.core.recipe import Recipe, apply_overrides, with_paths

# --- the hostfile, the batch across hosts, the wire: pure ----------------------------------------------


def test_a_hostfile_in_mlx_launch_format_is_read_with_its_backend_and_hosts(tmp_path):
    path = tmp_path / "hosts.json"
    path.write_text(json.dumps({"backend": "ring", "envs": ["MLX_METAL_FAST_SYNCH=1"], "hosts": [
        {"ssh": "me@studio.local", "ips": ["10.0.0.2"]}, {"ssh": "laptop.local", "ips": ["10.0.0.3"]}]}))
    hostfile = hosts.load_hostfile(path)
    assert [h.name for h in hostfile.hosts] == ["studio.local", "laptop.local"]
    assert hostfile.size == 2 and hostfile.backend == "ring" and hostfile.envs == ("MLX_METAL_FAST_SYNCH=1",)
    assert hostfile.to_json()["hosts"][0] == {"ssh": "me@studio.local", "ips": ["10.0.0.2"]}


def test_a_bad_hostfile_names_the_file_the_line_and_the_value(tmp_path):
    path = tmp_path / "hosts.json"
    path.write_text('{"hosts": [\n  {"ssh": "a", "ips": ["1.2.3.4"]},\n  {"ips": ["5.6.7.8"]}\n],\n "backend": "tcp"}')
    with pytest.raises(ProblemError) as e:
        hosts.load_hostfile(path)
    problems = {p.field: p for p in e.value.problems}
    assert problems["backend"].value == "tcp" and problems["backend"].line == 5
    assert problems["hosts[1]"].file == str(path) and problems["hosts[1]"].line == 3
    path.write_text('{"hosts": [\n  {"ssh": "a",}\n]}')
    with pytest.raises(ProblemError) as e:
        hosts.load_hostfile(path)
    assert e.value.problems[0].line == 2 and "not valid JSON" in e.value.problems[0].message


def test_the_global_batch_is_fixed_for_the_run_and_divides_over_any_number_of_hosts_that_divides_it():
    assert hosts.layout(2, 3) == hosts.Layout(3, 6, 2)
    assert "global batch 6" in hosts.layout(2, 3).explain(1e-4)
    assert hosts.resumed_layout(6, 1).per_host_batch == 6
    assert hosts.resumed_layout(6, 2).per_host_batch == 3
    with pytest.raises(ProblemError) as e:
        hosts.resumed_layout(6, 4)
    assert "1, 2, 3, 6" in e.value.problems[0].message


def test_epochs_count_steps_of_the_global_batch(tiny_model):
    recipe = apply_overrides(with_paths(Recipe(), str(tiny_model), "data"), ["epochs=1", "batch_size=2"])
    one, two = make_plan(recipe, 64, 8), make_plan(recipe, 64, 8, hosts=2)
    assert (one.iterations, two.iterations) == (32, 16)
    assert (two.batch_size, two.global_batch, two.effective_batch) == (2, 4, 4)
    resumed_alone = make_plan(recipe, 64, 8, hosts=1, global_batch=4)
    assert (resumed_alone.batch_size, resumed_alone.iterations) == (4, 16)
    assert two.val_batch_size % 2 == 0


def test_the_ring_all_reduce_sends_two_n_minus_one_over_n_of_the_gradients():
    assert hosts.allreduce_bytes_per_step(1_000_000, 1) == 0
    assert hosts.allreduce_bytes_per_step(1_000_000, 2) == 4_000_000
    assert hosts.allreduce_bytes_per_step(1_000_000, 4) == 6_000_000


def test_a_host_check_says_what_is_wrong_on_which_host():
    reports = [
        hosts.HostReport("studio", True, versions={"mlx": "0.32.1"}, usable_gb=60, free_disk_gb=100),
        hosts.HostReport("laptop", True, versions={"mlx": "0.31.0"}, usable_gb=12, free_disk_gb=0.5,
                         missing=("/data/train.jsonl",)),
        hosts.HostReport("mini", False, error="Permission denied (publickey)"),
    ]
    said = hosts.judge_hosts(reports, need_gb=20)
    assert any(s.startswith("laptop: mlx 0.31.0") for s in said)
    assert any(s.startswith("laptop: the run needs about 20.0 GB") for s in said)
    assert any(s.startswith("laptop: only 0.5 GB") for s in said)
    assert any(s.startswith("laptop: /data/train.jsonl is not there") for s in said)
    assert any(s.startswith("mini: not reachable") and "publickey" in s for s in said)
    assert not any(s.startswith("studio") for s in said)


def test_events_cross_the_process_boundary_as_lines_and_come_back_equal():
    for event in (TrainReport(3, 10, 1.5, 1e-4, 2.0, 300.0, 900, 0.1), ValReport(4, 1.2, 0.3),
                  CheckpointSaved(4, "/r/adapters/x", 1.2, True),
                  RunFailed("/r", "bad", (Problem("x", file="f", line=3),))):
        line = wire.encode(event)
        assert "\n" not in line
        assert wire.decode(line) == event
    assert wire.decode("Loading model...") is None


# --- two ranks on loopback ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def even_data(tmp_path_factory):
    """Rows of one length (the same words shuffled): each rank's share holds as many tokens as the other's,
    so averaging the ranks' gradients equals one process's gradient over the global batch."""
    words = "cat sat on a mat with red hat and big dog ran far".split()
    rng, folder = random.Random(0), tmp_path_factory.mktemp("even")
    for split, n in (("train", 64), ("valid", 8)):
        rows = []
        for _ in range(n):
            rng.shuffle(words)
            rows.append(json.dumps({"text": " ".join(["the", *words])}))
        (folder / f"{split}.jsonl").write_text("\n".join(rows) + "\n")
    return folder


SETTINGS = ["iterations=8", "report_every=1", "eval_every=4", "save_every=4", "max_seq_length=64"]


def _recipe(tiny_model, data, batch):
    return fast_recipe(tiny_model, *SETTINGS, f"batch_size={batch}", data=data)


def _losses(records):
    return {m["iteration"]: m["train_loss"] for m in records if m["event"] == "train"}


@pytest.fixture(scope="module")
def single(tiny_model, even_data, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("single") / "run"
    assert train_run(_recipe(tiny_model, even_data, 4), run_dir, lambda e: None).state == "finished"
    return run_dir


@pytest.mark.slow
def test_two_ranks_train_like_one_process_with_the_same_global_batch(tiny_model, even_data, single, tmp_path):
    events = []
    result = launch.train_on_hosts(_recipe(tiny_model, even_data, 2), tmp_path / "run", events.append, JobControl(),
                                   hosts.local_hostfile(2))
    assert result.state == "finished" and result.iteration == 8
    reports = [e for e in events if isinstance(e, TrainReport)]
    assert [r.iteration for r in reports] == list(range(1, 9))  # rank 0's events, each once
    samples = [e for e in events if isinstance(e, HostSample)]  # every rank's row for the Monitor
    for rank in (0, 1):
        mine = [s for s in samples if s.rank == rank]
        assert [s.iteration for s in mine] == list(range(1, 9)) and all(s.tokens_per_second > 0 for s in mine)
        assert all(s.peak_memory_gb > 0 and s.system_total_gb for s in mine[1:])
    two, one = runs.read_metrics(tmp_path / "run"), runs.read_metrics(single)
    assert _losses(two) == pytest.approx(_losses(one), abs=1e-4)
    assert runs.best_checkpoint(tmp_path / "run")[1] == pytest.approx(runs.best_checkpoint(single)[1], abs=1e-4)
    assert [c.iteration for c in runs.complete_checkpoints(tmp_path / "run")] == [4, 8]
    assert json.loads((tmp_path / "run" / hosts.RUN_FILE).read_text()) == {"hosts": 2, "global_batch": 4}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # rank 1 wrote nothing beside it


@pytest.mark.slow
def test_a_rank_that_dies_ends_the_run_on_every_rank_and_it_resumes_alone(tiny_model, even_data, single, tmp_path,
                                                                           monkeypatch):
    monkeypatch.setenv("MACFINETUNE_FAULT", "checkpoint-adapters.renamed:1")  # rank 1, at its first save (step 4)
    monkeypatch.setenv("MACFINETUNE_FAULT_RANK", "1")
    run_dir = tmp_path / "run"
    began = time.monotonic()
    result = launch.train_on_hosts(_recipe(tiny_model, even_data, 2), run_dir, lambda e: None, JobControl(),
                                   hosts.local_hostfile(2))
    assert time.monotonic() - began < launch._STOP_GRACE_S + 60  # nobody was left waiting for the dead peer
    assert result.state == "failed"
    assert result.message.startswith("rank 1 (127.0.0.1) was killed by signal 9")
    assert runs.read_status(run_dir).state == "failed"
    assert [c.iteration for c in runs.complete_checkpoints(run_dir)][0] == 4
    monkeypatch.delenv("MACFINETUNE_FAULT")
    resumed = resume_run(run_dir, lambda e: None, hosts=1)  # one Mac takes the whole global batch
    assert resumed.state == "finished" and resumed.iteration == 8
    after = _losses(runs.read_metrics(run_dir))
    assert after == pytest.approx(_losses(runs.read_metrics(single)), abs=1e-4)


def test_a_stop_is_agreed_by_every_rank_and_rank_0_saves(tiny_model, even_data, tmp_path):
    control = JobControl()
    seen = []

    def emit(event):
        seen.append(event)
        if isinstance(event, TrainReport) and event.iteration == 2:
            control.request_stop()

    result = launch.train_on_hosts(_recipe(tiny_model, even_data, 2), tmp_path / "run", emit, control,
                                   hosts.local_hostfile(2))
    assert result.state == "stopped" and 2 <= result.iteration < 8
    assert runs.complete_checkpoints(tmp_path / "run")[-1].iteration == result.iteration


def test_train_with_ranks_on_the_command_line_refuses_an_uneven_resume(tiny_model, even_data, tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    hosts.write_run_layout(run_dir, 2, 4)
    assert main(["train", "--resume", str(run_dir), "--ranks", "3"]) == 2
    assert "global batch is 4; it can continue on 1, 2, 4 host(s), not 3" in capsys.readouterr().err
    assert main(["train", "--resume", str(run_dir), "--ranks", "2", "--hosts", "h.json"]) == 2
    assert "--hosts or --ranks, not both" in capsys.readouterr().err


def test_a_pause_wanted_by_any_host_pauses_every_host_until_none_wants_it():
    """controlled_batches with a stand-in for the all-reduce: this host is not paused, another host votes
    pause for three rounds; this host pauses too (told why), votes about once a second, then goes on."""
    from macfinetune.backend import loop

    loop.PAUSE_VOTE_S, saved = 0.01, loop.PAUSE_VOTE_S
    try:
        control, calls, votes = JobControl(), [], iter([(False, True)] * 3 + [(False, False)] * 10)

        def agree(stop, pause):
            calls.append(("vote", stop, pause))
            return next(votes)

        batches = loop.controlled_batches(control, lambda: calls.append("pause"), lambda: calls.append("unpause"),
                                          agree=agree, source=lambda **kw: iter(range(4)),
                                          on_remote_pause=lambda: calls.append("remote"))
        assert list(batches()) == [0, 1, 2, 3]
        assert calls[:7] == [("vote", False, False), "remote", "pause", ("vote", False, False),
                             ("vote", False, False), ("vote", False, False), "unpause"]
        # this host paused itself (memory pressure, or the app's pause): it waits in the votes until resumed
        control, calls = JobControl(), []
        control.pause()
        seen = []

        def agree_local(stop, pause):
            seen.append(pause)
            if len(seen) == 3:
                control.resume()  # "resume" arrived on stdin
            return stop, pause

        batches = loop.controlled_batches(control, lambda: calls.append("pause"), lambda: calls.append("unpause"),
                                          agree=agree_local, source=lambda **kw: iter(range(2)),
                                          on_remote_pause=lambda: calls.append("remote"))
        assert list(batches()) == [0, 1]
        assert seen[:4] == [True, True, True, False] and calls == ["pause", "unpause"]  # not 'remote'
    finally:
        loop.PAUSE_VOTE_S = saved


@pytest.mark.slow
def test_a_pause_from_the_app_pauses_every_rank_and_the_run_ends_as_if_never_paused(tiny_model, even_data, single,
                                                                                    tmp_path):
    from macfinetune.core.events import RunPaused, RunResumed

    control, seen = JobControl(), []

    def emit(event):
        seen.append(event)
        if isinstance(event, TrainReport) and event.iteration == 2:
            control.pause()  # the app's Pause: the launcher sends "pause" to every rank
        if isinstance(event, RunPaused):
            threading.Timer(1.5, control.resume).start()

    result = launch.train_on_hosts(_recipe(tiny_model, even_data, 2), tmp_path / "run", emit, control,
                                   hosts.local_hostfile(2))
    assert result.state == "finished" and result.iteration == 8
    kinds = [type(e).__name__ for e in seen if isinstance(e, (RunPaused, RunResumed))]
    assert kinds == ["RunPaused", "RunResumed"]
    paused_at = next(e.iteration for e in seen if isinstance(e, RunPaused))
    after = [e.iteration for e in seen if isinstance(e, HostSample) and e.time > next(
        x.time for x in seen if isinstance(x, RunResumed))]
    assert 2 <= paused_at < 8 and after and min(after) > paused_at  # both ranks went on after the resume
    assert _losses(runs.read_metrics(tmp_path / "run")) == pytest.approx(_losses(runs.read_metrics(single)), abs=1e-4)


# --- what the other Macs get: nothing that only the first Mac has ---------------------------------------


def test_every_rank_gets_the_recipe_in_its_command_not_a_file_of_the_first_mac(tiny_model, even_data, tmp_path,
                                                                                monkeypatch):
    from macfinetune.backend import rank

    launched = []
    monkeypatch.setattr(launch, "_launch", lambda args, *rest: launched.append(args))
    recipe = _recipe(tiny_model, even_data, 2)
    launch.train_on_hosts(recipe, tmp_path / "run", lambda e: None, JobControl(), hosts.local_hostfile(2))
    args = launched[0]
    assert "--recipe" not in args and args[args.index("--run-dir") + 1] == str((tmp_path / "run").resolve())
    parsed = rank._parser().parse_args(args)  # what a rank on another Mac reads: no file needed
    assert rank._recipe(parsed) == rank._recipe(rank._parser().parse_args(
        ["--run-dir", "x", "--recipe-b64", launch.recipe_argument(recipe)]))
    assert rank._recipe(parsed).training.batch_size == 2 and rank._recipe(parsed).model.path == recipe.model.path


def test_a_resume_on_other_macs_sends_them_the_run_folder_first(fake_ssh, tmp_path, monkeypatch):
    log = fake_ssh
    run_dir = tmp_path / "my run"
    run_dir.mkdir()
    hosts.write_run_layout(run_dir, 2, 4)
    launched, events = [], []
    monkeypatch.setattr(launch, "_launch", lambda args, *rest: launched.append(log.read_text()))
    macs = hosts.Hostfile((hosts.Host("127.0.0.1"), hosts.Host("studio")), "ring")
    launch.resume_on_hosts(run_dir, events.append, JobControl(), macs)
    sent = launched[0]  # all of it before the ranks start
    assert "studio mkdir -p '.cache/macfinetune/resume/my run'" in sent and "127.0.0.1" not in sent
    assert f"--delete --exclude metrics.jsonl {run_dir}/ studio:.cache/macfinetune/resume/my run/" in sent
    assert any(getattr(e, "message", "").startswith("sending the run folder to studio") for e in events)


def test_a_rank_on_another_mac_resumes_from_the_copy_it_was_sent(tmp_path):
    from macfinetune.backend import rank

    here = tmp_path / "runs" / "r1"
    with pytest.raises(ProblemError) as e:
        rank.resume_source(here, tmp_path / "home")  # neither the path nor a copy: said, with both places
    assert str(here) in str(e.value) and ".cache/macfinetune/resume/r1" in str(e.value)
    staged = hosts.resume_staging(tmp_path / "home", here)
    staged.mkdir(parents=True)
    assert rank.resume_source(here, tmp_path / "home") == staged
    here.mkdir(parents=True)
    assert rank.resume_source(here, tmp_path / "home") == here  # a shared disk, or rank 0's Mac


def test_a_run_folder_that_cannot_be_sent_stops_the_resume_with_the_hosts_words(fake_ssh, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_RSYNC_FAIL", "1")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    hosts.write_run_layout(run_dir, 2, 4)
    monkeypatch.setattr(launch, "_launch", lambda *a: pytest.fail("no rank may start without the run folder"))
    macs = hosts.Hostfile((hosts.Host("127.0.0.1"), hosts.Host("studio")), "ring")
    with pytest.raises(ProblemError) as e:
        launch.resume_on_hosts(run_dir, lambda e: None, JobControl(), macs)
    assert "studio: copying" in str(e.value) and "connection unexpectedly closed" in str(e.value)
    assert "nothing was trained" in str(e.value)
