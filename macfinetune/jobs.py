"""Every long operation as a plain job function ``fn(emit, control, **args) -> result``.

The CLI calls these directly; the engine runs the same functions on its thread, so the two paths
cannot drift. No Qt here. Backend modules (and so MLX) are imported inside the functions.
Every job starts with MLX's peak-memory counter reset and ends with MLX's cache cleared
(``backend.runtime``), so a job reports its own peak, not that of an earlier, bigger job.
A job stopped through ``control`` before it produced its result raises ``Cancelled``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from pathlib import Path

from macfinetune.core.control import JobControl
from macfinetune.core.events import Progress, Stage
from macfinetune.core.recipe import Recipe
from macfinetune.core.sampling import Sampling

Emit = Callable[[object], None]

INSPECT_CHUNK = 1000  # rows tokenized between progress events and cancel checks


class Cancelled(Exception):
    """The job was stopped before it produced its result (nothing half-written is left)."""


def mlx_job(fn):
    """Reset MLX's peak memory before ``fn`` and clear MLX's cache after it (whatever happens)."""

    @functools.wraps(fn)
    def job(emit: Emit, control: JobControl, **args):
        from macfinetune.backend import runtime

        runtime.begin_job()
        try:
            return fn(emit, control, **args)
        finally:
            runtime.end_job()

    return job


def _check_stop(control: JobControl) -> None:
    if control.stop_requested:
        raise Cancelled()


@mlx_job
def train(emit: Emit, control: JobControl, *, recipe: Recipe, run_dir: Path, allow_over_budget: bool = False,
          confirm=None):
    """A new run (``backend.training.train_run``); nothing is loaded or written when already stopped."""
    from macfinetune.backend import training

    _check_stop(control)
    release_models(emit, "training")
    return training.train_run(recipe, Path(run_dir), emit, control, allow_over_budget=allow_over_budget,
                              confirm=confirm)


@mlx_job
def resume(emit: Emit, control: JobControl, *, run_dir: Path):
    """Continue an interrupted or stopped run from its newest complete checkpoint."""
    from macfinetune.backend import training

    _check_stop(control)
    release_models(emit, "training")
    return training.resume_run(Path(run_dir), emit, control)


def train_hosts(emit: Emit, control: JobControl, *, recipe: Recipe, run_dir: Path, hostfile, allow_over_budget=False,
                confirm=None):
    """A new run on several hosts (``backend.launch``): the ranks run MLX, this process only follows them."""
    from macfinetune.backend import launch

    _check_stop(control)
    return launch.train_on_hosts(recipe, Path(run_dir), emit, control, hostfile, allow_over_budget, confirm)


def check_hosts(emit: Emit, control: JobControl, *, hostfile, recipe: Recipe | None = None, model: str | None = None,
                data: str | None = None, copy: bool = False, python: str | None = None):
    """Is every Mac of ``hostfile`` ready for ``recipe``? Each host asked over SSH (``backend.hostcheck``):
    reachable, the same versions, memory for the recipe (the estimator on a Mac, against that host's
    budget), free disk, the model and data at the same path. With ``copy`` what a host lacks is copied
    there (rsync, progress as Stage events; Stop ends it, and the copy goes on where it was next time)
    and the hosts asked again. Returns a ``core.hosts.HostCheck``; judged in ``core.hosts``."""
    from macfinetune.backend import hostcheck
    from macfinetune.core import hosts as hosts_mod

    model, data, need_gb = hosts_mod.recipe_needs(recipe, model, data)
    needs, models = hosts_mod.needed_paths(model, data), hosts_mod.needed_models(model)
    if need_gb is not None:
        emit(Stage("check_hosts", f"the run needs about {hosts_mod.gb_text(need_gb)} on each Mac (estimate, Metal)"))

    def answered(report) -> None:
        _check_stop(control)
        state = "answered" if report.reachable and not report.error else "did not answer"
        emit(Stage("check_hosts", f"{report.host}: {state}"))

    reports = hostcheck.probe_hosts(hostfile, needs, python, answered, models)
    copied: list[str] = []
    failed: list[str] = []
    if copy and any(r.missing for r in reports):
        for host, report in zip(hostfile.hosts, reports, strict=True):
            for path in report.missing:
                _check_stop(control)
                try:
                    done = hostcheck.copy_to(host, path, lambda m: emit(Stage("check_hosts", m)),
                                             lambda m: emit(Stage("check_hosts", f"copying: {m}")),
                                             lambda: control.stop_requested)
                except RuntimeError as e:  # rsync's own words, naming the host; the next path is still tried
                    failed.append(str(e))
                    continue
                if not done:
                    _check_stop(control)
                copied.append(f"{report.host}: {path}")
        reports = hostcheck.probe_hosts(hostfile, needs, python, answered, models)
    problems = tuple(failed) + tuple(hosts_mod.judge_hosts(reports, need_gb))
    return hosts_mod.HostCheck(tuple(reports), problems, need_gb, tuple(copied))


def resume_hosts(emit: Emit, control: JobControl, *, run_dir: Path, hostfile):
    """Continue a run on these hosts (as many as started it, fewer, or one)."""
    from macfinetune.backend import launch

    _check_stop(control)
    return launch.resume_on_hosts(Path(run_dir), emit, control, hostfile)


@mlx_job
def demo(emit: Emit, control: JobControl, *, out_dir: Path, overrides: list[str] | None = None):
    """The offline demo: build the tiny model, train it, fuse, answer with base and tuned."""
    from macfinetune.backend import demo as demo_run

    release_models(emit, "training")
    return demo_run.run_demo(Path(out_dir), emit, control, overrides)


@mlx_job
def fuse(emit: Emit, control: JobControl, *, path: Path, which: str = "best", out_dir: Path | None = None,
         **options):
    """Fuse a checkpoint into its base model. Stop is honoured between stages (load, fuse),
    before anything is written; once saving began it finishes (the save is atomic)."""
    from macfinetune.backend import fusing

    def checked(event):
        _check_stop(control)
        emit(event)

    _check_stop(control)
    release_models(emit, "fusing")
    return fusing.fuse(Path(path), str(which), Path(out_dir) if out_dir else None, emit=checked, **options)


@mlx_job
def generate(emit: Emit, control: JobControl, *, model: str | None, adapter: tuple[Path, str] | None,
             prompt: str, sampling: Sampling, compare: bool = False, system: str | None = None) -> list:
    """Generate (streamed as TokenChunk events, then a GenerationFinished event per model); returns those."""
    from macfinetune.backend import generation

    results = generation.run_generate(model, adapter, prompt, sampling, compare=compare, system=system, emit=emit,
                                      control=control)
    for result in results:
        emit(result)
    return results


@mlx_job
def download(emit: Emit, control: JobControl, *, repo_id: str, revision: str | None = None,
             offline: bool | None = None, cache_dir: Path | None = None, endpoint: str | None = None) -> Path:
    """Download a model from the hub (progress as DownloadProgress events); its local folder."""
    from macfinetune.backend import hub

    try:
        return hub.download_model(repo_id, emit, control, revision=revision, offline=offline,
                                  cache_dir=Path(cache_dir) if cache_dir else None, endpoint=endpoint)
    except hub.DownloadCancelled as e:
        raise Cancelled() from e


@mlx_job
def convert(emit: Emit, control: JobControl, *, source: str, out_dir: Path | None = None, bits: int | None = None,
            group_size: int = 64, dtype: str | None = None) -> Path:
    """Convert (and optionally quantize) a model folder or hub repo to MLX; the output folder."""
    from macfinetune.backend.convert import convert_model

    _check_stop(control)
    return convert_model(source, bits=bits, group_size=group_size, out=out_dir, dtype=dtype, emit=emit,
                         control=control)


@mlx_job
def inspect_dataset(emit: Emit, control: JobControl, *, path, model: str | None = None, mapping=None,
                    chunk_chars: int | None = None, max_seq_length: int = 2048, mask_prompt: bool = False,
                    valid_fraction: float = 0.1, seed: int = 0, chunk_overlap: int = 0):
    """The dataset doctor's report; tokenizing emits Progress every INSPECT_CHUNK rows and honours stop."""
    from macfinetune.core import doctor

    data = load_data(path, mapping=mapping, chunk_chars=chunk_chars,
                     token_chunks=_document_chunks(model, emit, max_seq_length, chunk_overlap) if model else None)
    _check_stop(control)
    counter = _chunked(_token_counter(model, emit), emit, control) if model else None
    return doctor.inspect(data, count_tokens=counter, max_seq_length=max_seq_length, mask_prompt=mask_prompt,
                          valid_fraction=valid_fraction, seed=seed)


def load_data(path, mapping=None, chunk_chars: int | None = None, token_chunks=None):
    """Any supported dataset (a file, a folder, a hub dataset) as ``formats.LoadedData``; text
    documents are cut into ``token_chunks`` (``formats.TokenChunks``) when given."""
    from macfinetune.backend.hfdata import load_hf_dataset
    from macfinetune.core import formats

    return formats.load_any(path, mapping=mapping, load_hf=load_hf_dataset, chunk_chars=chunk_chars or None,
                            token_chunks=token_chunks)


def _document_chunks(model: str, emit: Emit, max_seq_length: int, overlap: int):
    """Text documents cut by the model's tokens, exactly as training will cut them."""
    from macfinetune.backend.tokens import document_encoder
    from macfinetune.core import formats

    return formats.TokenChunks(document_encoder(model, emit=emit), max_seq_length, overlap)


def _token_counter(model: str, emit: Emit):
    from macfinetune.backend.tokens import token_counter

    return token_counter(model, emit=emit)


def _chunked(count, emit: Emit, control: JobControl):
    """``count(rows)`` in chunks, with a Progress event and a stop check between chunks."""

    def counted(rows):
        out = []
        for start in range(0, len(rows), INSPECT_CHUNK):
            _check_stop(control)
            out += count(rows[start:start + INSPECT_CHUNK])
            emit(Progress("inspect", len(out), len(rows), "tokenizing rows"))
        return out

    return counted


@mlx_job
def probe_machine(emit: Emit, control: JobControl):
    """This machine's chip and memory (``core.hardware.Machine``)."""
    from macfinetune.backend.machine_probe import probe_machine as probe

    return probe()


@mlx_job
def estimate(emit: Emit, control: JobControl, *, recipe: Recipe, machine=None):
    """The memory gate's view of ``recipe`` on this machine (``core.gate.Gate``, never raising for
    'will not fit'), with max_seq_length judged from the real longest rows of the recipe's data."""
    from macfinetune.backend import models, training
    from macfinetune.backend.hfdata import load_hf_dataset
    from macfinetune.core import formats, gate
    from macfinetune.core.modelshape import read_shape

    folder = models.resolve_model_path(recipe.model.path)
    shape = read_shape(folder)
    longest = None
    if recipe.data.path:
        emit(Stage("estimate", f"Finding the longest rows of {recipe.data.path}"))
        train_rows, valid_rows, *_ = formats.load_dataset_files(recipe.data.path, recipe.data.mask_prompt,
                                                                load_hf=load_hf_dataset,
                                                                token_chunks=training.document_chunks(recipe))
        longest = training.longest_row_tokens(train_rows + valid_rows, folder)
    machine = machine or probe_machine(emit, control)
    from macfinetune.core import calibration, paths

    rows = calibration.this_mac_rows(paths.runs_home(), paths.calibration_home())
    verdict = gate.check(recipe, shape, machine, longest, allow_over_budget=True, mac_rows=rows)
    return dataclasses.replace(verdict, overridden=False)  # asked, not overridden


@mlx_job
def measure_mac(emit: Emit, control: JobControl, *, recipe: Recipe):
    """'Measure this Mac': a few real steps of the recipe's model and settings at two sequence lengths that
    fit (``backend.probe``), recorded as calibration rows for this Mac's correction; returns the rows."""
    from macfinetune.backend import models, probe
    from macfinetune.core.estimator import estimate as estimate_of
    from macfinetune.core.estimator import judge, settings_from_recipe
    from macfinetune.core.modelshape import read_shape

    _check_stop(control)
    release_models(emit, "measuring")
    folder = models.resolve_model_path(recipe.model.path)
    shape, machine = read_shape(folder), probe_machine(emit, control)
    settings = dataclasses.replace(settings_from_recipe(recipe), device=machine.device)

    def fits(length: int) -> bool:
        return judge(estimate_of(shape, dataclasses.replace(settings, max_seq_length=length)), machine).fits

    lengths = probe.probe_lengths(settings.max_seq_length, fits)
    return probe.measure(str(folder), probe.overrides_for(settings), lengths, emit)


@mlx_job
def chat(emit: Emit, control: JobControl, *, pane: str, model: str | None, adapter: tuple[Path, str] | None,
         messages, sampling: Sampling):
    """One Playground answer for ``pane``: ``messages`` are (role, text) pairs (``core.chat.Conversation``), sent
    through the chat template to the model (a base, or a run's checkpoint with ``adapter`` = (run, which)),
    which stays loaded for the next prompt. Emits ModelLoaded, TokenChunk(pane, ...) and GenerationFinished
    (returned too); a stop ends the answer where it is."""
    from macfinetune.backend import generation

    _check_stop(control)
    return generation.run_chat(pane, model, adapter, messages, sampling, emit=emit, control=control)


def release_models(emit: Emit, reason: str) -> None:
    """Before a job that needs the memory: the Playground's models go (a no-op when MLX was never loaded)."""
    import sys

    generation = sys.modules.get("macfinetune.backend.generation")
    if generation is not None:
        generation.release_models(reason, emit)


@mlx_job
def export_model(emit: Emit, control: JobControl, *, run_dir: Path, checkpoint: str = "best", target: str,
                 dest: str | Path | None = None, **options):
    """Export a checkpoint (``core.exports``: gguf, ollama, lmstudio, hub or mlx); an ExportFinished.
    Everything is checked before anything is loaded; stop is honoured between steps and between
    tensors or uploaded files, and leaves nothing behind."""
    from macfinetune.backend import exporting
    from macfinetune.core.exports import plan_export

    plan = plan_export(Path(run_dir), checkpoint, target, dest, **options)

    def checked(event):
        _check_stop(control)
        emit(event)

    _check_stop(control)
    result = exporting.run_export(plan, checked, lambda: _check_stop(control))
    emit(result)
    return result
