"""Deterministic fault injection: SIGKILL at every write point of a run, then check the disk and resume.

``core/atomic.FAULT_POINTS`` lists every point; ``MACFINETUNE_FAULT=<point>:<n>`` makes the
training process kill itself the n-th time it reaches one. One uninterrupted in-process run
records the order in which the points are reached and the losses; each case then kills a
``macfinetune train`` subprocess at its point (the first time it is reached after the first
checkpoint is committed), checks that every file left is whole or absent and that only
committed checkpoints count, resumes, and compares the losses with the uninterrupted run.
"""

import json
import signal

import pytest
from conftest import fast_recipe

from macfinetune.backend.training import resume_run, train_run
from macfinetune.core import atomic, runs
from macfinetune.core.events import RunContinued

from .test_resume import losses, train_killed_at

RECIPE = ["iterations=8", "report_every=1", "save_every=2", "eval_every=2", "keep_checkpoints=1", "dropout=0.1",
          "lr_schedule=cosine", "warmup_steps=1"]
SAVE_EVERY = 2
COMMIT = "commit-marker.renamed"


@pytest.fixture(scope="module")
def reference(tiny_model, tmp_path_factory):
    """The uninterrupted run: its losses and the write points in the order it reached them."""
    reached, events = [], []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(atomic, "fault_point", lambda point, before_kill=None: reached.append(point))
        result = train_run(fast_recipe(tiny_model, *RECIPE), tmp_path_factory.mktemp("ref") / "run", events.append)
    assert result.state == "finished"
    return losses(events), reached


def test_a_run_reaches_every_fault_point(reference):
    """A write point added to the code but not to FAULT_POINTS (so never killed at) fails here."""
    _, reached = reference
    assert set(reached) == set(atomic.FAULT_POINTS)


def test_an_unknown_fault_point_is_refused(monkeypatch):
    monkeypatch.setenv(atomic.FAULT_ENV, "nowhere:1")
    monkeypatch.setattr(atomic, "_parsed", False)
    with pytest.raises(ValueError, match="nowhere"):
        atomic.fault_point("status.renamed")


def _plan(reached, point):
    """(n, commits): kill at the n-th time ``point`` is reached after the first commit; the
    checkpoints committed by then."""
    first_commit = reached.index(COMMIT)
    at = next(i for i, p in enumerate(reached) if p == point and i > first_commit)
    return reached[: at + 1].count(point), reached[: at + 1].count(COMMIT)


@pytest.mark.slow
@pytest.mark.parametrize("point", atomic.FAULT_POINTS)
def test_sigkill_at_every_write_point_leaves_whole_files_and_resumes_exactly(point, reference, tiny_model,
                                                                          tmp_path):
    full, reached = reference
    n, commits = _plan(reached, point)
    run = tmp_path / "run"
    killed = train_killed_at(point, n, fast_recipe(tiny_model, *RECIPE), run)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    _assert_whole_or_absent(run, torn_metrics=point == "metrics.partial-line")
    last = commits * SAVE_EVERY  # a half-written checkpoint never counts, a committed one always does
    assert runs.complete_checkpoints(run)[-1].iteration == last
    assert runs.resolve_checkpoint(run, "last")[1] == last
    assert runs.read_status(run).state == "interrupted"

    events = []
    assert resume_run(run, events.append).state == "finished"
    assert next(e for e in events if isinstance(e, RunContinued)).iteration == last
    resumed = losses(events)
    assert sorted(resumed) == list(range(last + 1, 9))
    for it, loss in resumed.items():
        assert loss == pytest.approx(full[it], rel=1e-4, abs=1e-5), it
    assert not [p for p in run.rglob(".*") if p.is_file() and p.name != runs.LOCK]  # temp files were cleaned up


def _assert_whole_or_absent(run, torn_metrics: bool) -> None:
    """Every file under its real name reads completely; only metrics.jsonl's last line may be torn."""
    import mlx.core as mx

    json.loads((run / runs.STATUS).read_text())
    for path in [*(run / runs.ADAPTERS).iterdir(), *(run / runs.CHECKPOINTS).iterdir()]:
        if path.name.startswith("."):
            continue  # a temporary file: never under a real name, removed on resume
        if path.suffix == ".json":
            json.loads(path.read_text())
        else:
            assert mx.load(str(path))
    lines = (run / runs.METRICS).read_text().splitlines()
    for line in lines[:-1]:
        json.loads(line)
    if torn_metrics:
        with pytest.raises(json.JSONDecodeError):
            json.loads(lines[-1])
    else:
        json.loads(lines[-1])


@pytest.mark.parametrize("platform", ["linux", "darwin"])
def test_the_final_adapters_are_a_copy_never_a_link(platform, tmp_path, monkeypatch):
    """copy_atomically (a clone on APFS, else a copy): writing into one file leaves the other as it was."""
    monkeypatch.setattr(atomic.sys, "platform", platform)  # "darwin" here: clonefile is absent, the copy is used
    source, copy = tmp_path / "0000004_adapters.safetensors", tmp_path / "adapters.safetensors"
    source.write_bytes(b"checkpoint 4")
    copy.write_bytes(b"an older final file")
    atomic.copy_atomically(source, copy, "final-adapters")
    assert copy.read_bytes() == b"checkpoint 4" and not copy.samefile(source)
    with open(copy, "r+b") as f:  # mlx-lm's own trainer rewrites adapters.safetensors in place
        f.write(b"X")
    assert source.read_bytes() == b"checkpoint 4"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left


def test_atomic_writes_get_the_mode_any_new_file_gets(tmp_path):
    """mkstemp makes 0600 files; a recipe, a status or a prepared dataset must be as readable as any file the user
    makes (the umask decides), e.g. to share a run folder."""
    import os

    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    atomic.write_text(tmp_path / "atomic.txt", "x")
    assert os.stat(tmp_path / "atomic.txt").st_mode & 0o777 == os.stat(plain).st_mode & 0o777
