"""`macfinetune estimate` (will it fit, how long), `recommend` (a recipe with reasons) and `recipes`.

``add_parsers(subparsers)`` adds the commands; ``cmd_estimate``, ``cmd_recommend`` and
``cmd_recipes`` run them and return 0. Bad input raises ``ProblemError`` (``cli.main`` prints it and exits 2).
"""

from __future__ import annotations

import json
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

from macfinetune.cli.common import EXIT_OK, run_folder, shell_command
from macfinetune.core import catalog, timing
from macfinetune.core.autofit import auto_fit, prequantized
from macfinetune.core.calibration import collect_rows, machine_rate
from macfinetune.core.estimator import (
    Settings,
    estimate,
    fitted_to,
    format_params,
    judge,
    settings_from_recipe,
)
from macfinetune.core.hardware import GB, Machine, machine_from_memory
from macfinetune.core.paths import calibration_home, runs_home
from macfinetune.core.problems import Problem, ProblemError
from macfinetune.core.recipe import Recipe, load_recipe, save_recipe
from macfinetune.core.recommend import recommend

_BAR = 40
_WIDTH = 100


# --- parsers ------------------------------------------------------------------------------


def add_parsers(sub) -> None:
    """Add the ``estimate`` and ``recipes`` commands to ``cli.build_parser``'s subparsers."""
    p = sub.add_parser("estimate", help="peak memory, verdict, auto-fit and duration of a run, before training")
    p.add_argument("--model", help="model folder (config.json is enough), downloaded repo id or known name "
                                   "(default: the --recipe's model.path)")
    p.add_argument("--recipe", help="start from a recipe (a file or a shipped recipe name)")
    p.add_argument("--method", choices=("lora", "dora", "full"))
    p.add_argument("--quantize", type=int, choices=(4, 8), help="quantize a full-precision base on the fly (QLoRA)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--max-seq-length", type=int)
    p.add_argument("--num-layers", type=int, help="adapted blocks, counted from the last; -1 for all")
    p.add_argument("--rank", type=int)
    p.add_argument("--keys", help="'all' or module names, comma-separated (e.g. q_proj,v_proj)")
    p.add_argument("--optimizer", choices=("adam", "adamw", "sgd", "adafactor"))
    p.add_argument("--grad-checkpoint", action="store_true", default=None)
    p.add_argument("--memory-gb", type=float, help="estimate for a Mac with this much memory (default: this machine)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--measure", action="store_true",
                   help="measure this Mac first: a few training steps of the model at two sequence lengths within "
                        "the budget, recorded as calibration rows that correct later estimates")
    c = sub.add_parser("recommend", help="a recipe for a model on this Mac, with the reason for every choice")
    c.add_argument("--model", required=True, help="model folder (config.json is enough), downloaded repo id or known name")
    c.add_argument("--data", default="", help="dataset the recipe will train on: read for its training rows and, "
                                              "with a model folder's tokenizer, its longest row (written into the recipe)")
    c.add_argument("--rows", type=int, help="training rows in your data (sets the number of passes; default: --data's)")
    c.add_argument("--longest-row", type=int, help="tokens in your longest row (caps the sequence length; default: "
                                                   "--data's, counted with the model's tokenizer)")
    c.add_argument("--memory-gb", type=float, help="recommend for a Mac with this much memory (default: this machine)")
    c.add_argument("--out", type=Path, help="write the recipe to this YAML file")
    c.add_argument("--json", action="store_true", help="print one JSON object")
    r = sub.add_parser("recipes", help="the recipe catalog with its feasibility on this machine")
    r.add_argument("--memory-gb", type=float, help="judge for a Mac with this much memory (default: this machine)")
    r.add_argument("--json", action="store_true", help="print a JSON list")
    r.add_argument("--save-from", type=run_folder, metavar="RUN_DIR",
                   help="save a run's settings as one of your recipes (needs --name)")
    r.add_argument("--name", help="name of the recipe --save-from writes")
    r.add_argument("--description", default="", help="what the saved recipe is for")


# --- estimate -----------------------------------------------------------------------------


def cmd_estimate(args) -> int:
    recipe = _read_recipe(args.recipe) if args.recipe else None
    args.model = args.model or (recipe.model.path if recipe else "")
    if not args.model:
        raise ProblemError(Problem("pass --model, or a --recipe whose model.path names the model", field="model"))
    shape = catalog.find_shape(args.model)
    machine = _machine(args.memory_gb)
    settings = replace(_settings(args, recipe), device=machine.device)
    settings = fitted_to(shape, settings, length=args.max_seq_length is None and recipe is None,
                         layers=args.num_layers is None and recipe is None)
    measured = _measure(args, shape, settings, machine) if getattr(args, "measure", False) else None
    est, correction = _corrected(estimate(shape, settings))
    verdict = judge(est, machine)
    fit = (auto_fit(shape, settings, machine, factor=correction.factor if correction else 1.0)
           if verdict.status != "fits" else None)
    pre = prequantized(args.model, shape, settings, machine) if verdict.status != "fits" else None
    iterations = recipe.training.iterations if recipe else None
    time = timing.estimate_time(shape, settings, _rate(machine, timing.flops_per_token(shape, settings),
                                                        this_machine=args.memory_gb is None), iterations=iterations)
    report = _report(args.model, shape, est, verdict, fit, time, machine)
    report.update(_mode_report(est, correction))
    if measured is not None:
        report["measured"] = measured
    if pre is not None:
        report["prequantized"] = {"repo": pre.repo, "bits": pre.bits, "download_gb": round(pre.download_gb, 2),
                                  "convert_gb": round(pre.convert_gb, 2), "full_download_gb": round(pre.full_gb, 2),
                                  "total_gb": round(pre.estimate.total_gb, 3), "verdict": pre.verdict.status,
                                  "summary": pre.summary()}
    print(json.dumps(report, indent=2) if args.json else _text(report))
    return EXIT_OK


def _corrected(est):
    """The estimate corrected by this Mac's finished runs and probes of the same family and method."""
    from macfinetune.core.calibration import correct_with_rows, this_mac_rows

    return correct_with_rows(est, this_mac_rows(runs_home(), calibration_home()))


def _measure(args, shape, settings, machine) -> list[dict]:
    """Run the probe (backend/probe.py) at two lengths that fit; print one line per probe unless --json."""
    from macfinetune.backend import probe

    def fits(length):
        return judge(estimate(shape, replace(settings, max_seq_length=length)), machine).fits

    lengths = probe.probe_lengths(settings.max_seq_length, fits)
    rows = probe.measure(args.model, probe.overrides_for(settings), lengths)
    out = [{"sequence_length": r.sequence_length, "estimate_gb": round(r.estimate_gb, 4),
            "measured_gb": round(r.measured_gb, 4), "error": round(r.error, 4), "run": r.run} for r in rows]
    if not args.json:
        for r in out:
            print(f"measured at {r['sequence_length']} tokens: {r['measured_gb']:.3f} GB, estimated "
                  f"{r['estimate_gb']:.3f} GB ({r['error']:+.1%}); recorded in {calibration_home()}")
    return out


_MODE_TEXT = {"metal": "Metal (MLX on this Mac's GPU)", "cpu": "CPU (MLX's CPU backend: this machine is not a Mac)"}


def _mode_report(est, correction) -> dict:
    out = {"mode": est.mode, "mode_text": _MODE_TEXT[est.mode], "correction": None}
    if correction is not None:
        out["correction"] = {"factor": round(correction.factor, 4), "percent": round(correction.percent, 1),
                             "runs": correction.runs, "confidence": correction.confidence,
                             "uncorrected_gb": round((est.uncorrected_bytes or est.total_bytes) / GB, 3),
                             "label": correction.label}
    return out


def _read_recipe(name: str):
    return load_recipe(catalog.recipe_path(name))


def _settings(args, recipe) -> Settings:
    s = settings_from_recipe(recipe) if recipe else settings_from_recipe(Recipe())  # a recipe's defaults
    given = {
        "method": args.method, "quantize": args.quantize, "batch_size": args.batch_size,
        "max_seq_length": args.max_seq_length, "num_layers": args.num_layers, "rank": args.rank,
        "optimizer": args.optimizer, "grad_checkpoint": args.grad_checkpoint,
        "target_modules": _keys(args.keys) if args.keys is not None else None,
    }
    return replace(s, **{k: v for k, v in given.items() if v is not None})


def _keys(text: str) -> tuple[str, ...]:
    names = tuple(k.strip() for k in text.split(",") if k.strip())
    if not names:
        raise ProblemError(Problem("--keys needs 'all' or module names", field="keys", value=text))
    return () if names == ("all",) else names


def _machine(memory_gb: float | None) -> Machine:
    if memory_gb is not None:
        return machine_from_memory(memory_gb, source=f"a Mac with {memory_gb:g} GB (--memory-gb)")
    from macfinetune import jobs
    from macfinetune.core.control import JobControl

    return jobs.probe_machine(lambda event: None, JobControl())


def _rate(machine: Machine, flops_per_token: float, this_machine: bool = True) -> timing.Rate:
    """This machine's rate from its past runs of a similar size; the seeds' for the chip otherwise (and for a Mac
    described by --memory-gb, which is not this one)."""
    rate = machine_rate(collect_rows(runs_home()), flops_per_token) if this_machine else None
    return rate or timing.seed_rate(machine.chip)


def _report(model, shape, est, verdict, fit, time, machine) -> dict:
    out = {
        "model": model,
        "total_gb": round(est.total_gb, 3),
        "verdict": verdict.status,
        "breakdown_gb": est.breakdown_gb(),
        "phase": est.phase,
        "usable_gb": round(verdict.usable_bytes / GB, 3),
        "message": verdict.message,
        "machine": machine.source,
        "system_reserve_gb": round(machine.reserve_bytes / GB, 1),
        "parameters": est.total_params,
        "trainable_parameters": est.trainable_params,
        "adapted_layers": est.adapted_layers,
        "uncertain": list(est.uncertain),
        "time": _time_report(time),
    }
    if fit is not None:
        out["auto_fit"] = {"found": fit.found, "total_gb": round(fit.estimate.total_gb, 3), "verdict": fit.verdict.status,
                           "changes": [{"key": c.key, "from": c.old, "to": c.new, "what": c.what, "cost": c.cost}
                                       for c in fit.changes], "summary": fit.summary()}
    return out


def _time_report(t: timing.TimeEstimate) -> dict:
    return {"tokens_per_iteration": t.tokens_per_iteration, "iterations": t.iterations,
            "tokens_per_second": [round(x, 1) for x in t.tokens_per_second],
            "seconds_per_iteration": [round(x, 2) for x in t.seconds_per_iteration],
            "seconds": [round(x) for x in t.seconds] if t.seconds else None, "source": t.source}


def _text(r: dict) -> str:
    lines = [f"{r['model']}: {format_params(r['parameters'])} parameters, {r['trainable_parameters']:,} trainable "
             f"({r['adapted_layers']} adapted blocks)", f"peak memory {r['total_gb']:.2f} GB (set by the {r['phase']}):"]
    total = max(r["total_gb"], 1e-9)
    for key, gb in r["breakdown_gb"].items():
        bar = "#" * round(_BAR * gb / total)
        lines.append(f"  {key:<12} {gb:9.3f} GB  {bar}")
    lines += _wrapped(f"verdict: {r['verdict'].upper()}: {r['message']}")
    lines.append(f"machine: {r['machine']}")
    if "mode" in r:
        lines.append(f"estimator mode: {r['mode_text']}")
        correction = r.get("correction")
        lines += _wrapped(f"this Mac: {correction['label']} (model alone {correction['uncorrected_gb']:.2f} GB)"
                          if correction else "this Mac: no finished runs of this model family and method to correct from")
    lines += [f"uncertain: {u}" for u in r["uncertain"]]
    if "auto_fit" in r:
        lines += _wrapped(f"auto-fit: {r['auto_fit']['summary']}")
    if "prequantized" in r:
        lines += _wrapped(f"or: {r['prequantized']['summary']}")
    lines += _wrapped(_time_text(r["time"]))
    return "\n".join(lines)


def _wrapped(text: str) -> list[str]:
    return textwrap.wrap(text, width=_WIDTH, subsequent_indent="  ", break_on_hyphens=False)


def _time_text(t: dict) -> str:
    low, high = t["seconds_per_iteration"]
    where = "time" if sys.platform == "darwin" else "time on a Mac (this machine is not a Mac: not its time)"
    text = (f"{where}: {t['tokens_per_iteration']:,} tokens per iteration, {low:.1f}-{high:.1f} s each "
            f"({t['tokens_per_second'][0]:,.0f}-{t['tokens_per_second'][1]:,.0f} tokens/s, from {t['source']})")
    if t["seconds"]:
        text += (f"; {t['iterations']} iterations: {timing.format_duration(t['seconds'][0])} to "
                 f"{timing.format_duration(t['seconds'][1])}")
    return text


# --- recommend ----------------------------------------------------------------------------


def cmd_recommend(args) -> int:
    for name in ("rows", "longest_row"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ProblemError(Problem(f"--{name.replace('_', '-')} must be 1 or more", field=name, value=value))
    shape = catalog.find_shape(args.model)
    machine = _machine(args.memory_gb)
    rows, longest = args.rows, args.longest_row
    if args.data:
        rows, longest = _data_numbers(args.data, args.model, rows, longest)
    rec = recommend(shape, machine, model_path=args.model, data_path=args.data, train_rows=rows,
                    longest_row_tokens=longest)
    if args.out:
        if args.out.exists():
            raise ProblemError(Problem("the file exists; choose a new name (nothing you made is overwritten)",
                                       file=str(args.out), field="out", value=str(args.out)))
        save_recipe(args.out, rec.recipe, header=f"Recommended by macfinetune for {args.model} on {machine.source}.")
    report = {"model": args.model, "machine": machine.source, "verdict": rec.fit.verdict.status,
              "total_gb": round(rec.fit.estimate.total_gb, 3), "message": rec.fit.verdict.message,
              "choices": [{"key": c.key, "value": c.value, "reason": c.reason} for c in rec.choices],
              "recipe": str(args.out) if args.out else None}
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return EXIT_OK
    lines = [f"recommended for {args.model} on {machine.source}:"]
    lines += [f"  {c.key:<28} {_show(c.value):<12} {c.reason}" for c in rec.choices]
    lines.append(f"estimate: {report['total_gb']:.1f} GB, {report['verdict'].upper()}: {report['message']}")
    lines.append(f"recipe written to {args.out}" if args.out else "write it as a recipe with --out FILE.yaml")
    print("\n".join(lines))
    return EXIT_OK


def _data_numbers(data: str, model: str, rows: int | None, longest: int | None) -> tuple[int | None, int | None]:
    """Training rows and the longest row's tokens of ``data`` (the doctor's numbers), where not given; tokens
    only when ``model`` is a folder with a tokenizer (a known name is its config alone)."""
    from macfinetune import jobs
    from macfinetune.core.control import JobControl
    from macfinetune.core.modelinfo import has_tokenizer

    folder = Path(model).expanduser()
    counted = longest is None and folder.is_dir() and has_tokenizer(folder)
    report = jobs.inspect_dataset(lambda event: None, JobControl(), path=data, model=str(folder) if counted else None)
    train = next(s.rows for s in report.splits if s.name == "train")
    return rows or train, longest or (report.lengths.max if report.lengths else None)


def _show(value) -> str:
    if value is None:
        return "none"
    return f"{value:g}" if isinstance(value, float) else str(value)


# --- recipes ------------------------------------------------------------------------------


def cmd_recipes(args) -> int:
    if args.save_from or args.name:
        if not (args.save_from and args.name):
            raise ProblemError(Problem("--save-from RUN_DIR and --name NAME go together", field="name",
                                       value=args.name or str(args.save_from)))
        path = catalog.save_run_as_recipe(args.save_from, args.name, args.description)
        print(f"saved {path}\ntrain with it: {shell_command('macfinetune', 'train', args.name, '--data', 'DATA')}")
        return EXIT_OK
    machine = _machine(args.memory_gb)
    rows = [_recipe_row(entry, machine) for entry in catalog.list_recipes()]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(_recipes_text(rows, machine))
    return EXIT_OK


def _recipe_row(entry, machine: Machine) -> dict:
    row = {"name": entry.name, "method": entry.recipe.method.type, "user": entry.user,
           "model": entry.meta.get("model") or entry.recipe.model.path or "-",
           "source": entry.meta.get("source", "your recipe" if entry.user else ""),
           "seed_machine": entry.meta.get("machine"), "seed_memory_gb": entry.meta.get("memory_gb"),
           "seed_feasibility": entry.meta.get("feasibility")}
    shape = catalog.entry_shape(entry)
    if shape is None:
        return {**row, "estimate_gb": None, "verdict": "unknown model"}
    try:
        est = estimate(shape, replace(settings_from_recipe(entry.recipe), device=machine.device))
    except ProblemError as e:
        return {**row, "estimate_gb": None, "verdict": f"invalid: {e.problems[0].message}"}
    return {**row, "estimate_gb": round(est.total_gb, 2), "verdict": judge(est, machine).status}


def _recipes_text(rows: list[dict], machine: Machine) -> str:
    head = f"feasibility on {machine.source} ({machine.usable_bytes / GB:.1f} GB usable):"
    table = [("RECIPE", "METHOD", "ESTIMATE", "HERE", "SEED SAYS", "MODEL")]
    for r in rows:
        gb = f"{r['estimate_gb']:.1f} GB" if r["estimate_gb"] is not None else "-"
        table.append((r["name"], r["method"], gb, r["verdict"], _seed_text(r), r["model"]))
    return "\n".join([head, *_aligned(table, right=(2,))])


def _aligned(table: list[tuple], right: tuple = ()) -> list[str]:
    """Columns as wide as their widest cell, two spaces apart (the last one unpadded)."""
    widths = [max(len(str(row[i])) for row in table) for i in range(len(table[0]))]
    def cell(i, text):
        return str(text).rjust(widths[i]) if i in right else str(text).ljust(widths[i])
    return ["  ".join(cell(i, text) for i, text in enumerate(row)).rstrip() for row in table]


def _seed_text(r: dict) -> str:
    memory = r.get("seed_memory_gb")
    if isinstance(memory, list):
        memory = f"{memory[0]:g}-{memory[1]:g} GB"
    elif memory is not None:
        memory = f"{memory:g} GB"
    parts = [p for p in (memory, r.get("seed_feasibility")) if p]
    return ", ".join(parts) if parts else ("your recipe" if r["user"] else "-")


COMMANDS = {"estimate": cmd_estimate, "recommend": cmd_recommend, "recipes": cmd_recipes}
