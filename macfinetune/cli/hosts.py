"""`macfinetune hosts check|probe`: is every Mac of a hostfile ready for a multi-Mac run?

``check`` asks each host over SSH (``backend.hostcheck``) and says in words what is wrong on which
host: not reachable without a password, other macfinetune/MLX/mlx-lm versions, not enough memory
for the recipe (the estimator, per Mac, against that Mac's own budget), too little disk, the model
or data missing (``--copy`` copies them with rsync to the same path). ``probe`` is what the hosts
run: this machine's facts as one JSON line.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from macfinetune.cli.common import EXIT_BAD_INPUT, EXIT_OK


def add_parsers(sub) -> None:
    p = sub.add_parser("hosts", help="check the Macs of a hostfile before training on them (multi-Mac)")
    hs = p.add_subparsers(dest="hosts_command", metavar="ACTION", required=True)
    c = hs.add_parser("check", help="ask every host whether it is ready; exit 2 naming each problem")
    c.add_argument("hostfile", type=Path, help="MLX hostfile (JSON), as for `train --hosts`")
    c.add_argument("--recipe", help="the recipe to judge memory for (a file or a shipped recipe name)")
    c.add_argument("--model", help="model folder or repo id (default: the recipe's)")
    c.add_argument("--data", help="dataset path (default: the recipe's)")
    c.add_argument("--copy", action="store_true", help="copy a missing model folder or dataset to the hosts "
                   "that lack it (rsync, same path), then check again")
    c.add_argument("--python", help="the Python on the hosts (default: this one's path)")
    c.add_argument("--json", action="store_true", help="print the reports and problems as JSON")
    q = hs.add_parser("probe", help="this machine's versions, memory, disk and missing paths (what `check` runs "
                      "on each host)")
    q.add_argument("--need", action="append", default=[], help="a path that must exist here (repeatable)")
    q.add_argument("--json", action="store_true", help="one JSON line (what `check` reads)")


def cmd_hosts(args) -> int:
    return _probe(args) if args.hosts_command == "probe" else _check(args)


def _probe(args) -> int:
    from macfinetune.backend.hostcheck import probe_here

    facts = probe_here(args.need)
    if args.json:
        print(json.dumps(facts))
    else:
        versions = ", ".join(f"{k} {v or 'missing'}" for k, v in facts["versions"].items())
        print(f"{versions}; MLX may use {facts['usable_gb']:.1f} GB ({facts['machine']}); "
              f"{facts['free_disk_gb']:.1f} GB free disk")
        for path in facts["missing"]:
            print(f"missing: {path}")
    return EXIT_OK


def _check(args) -> int:
    from macfinetune.backend import hostcheck
    from macfinetune.core import hosts as hosts_mod

    hostfile = hosts_mod.load_hostfile(args.hostfile)
    model, data, need_gb = _needs(args)
    needs = [p for p in (model, data) if p and Path(p).expanduser().is_absolute()]

    def said(report) -> None:
        if not args.json:
            state = "answered" if report.reachable and not report.error else "did not answer"
            print(f"{report.host}: {state}", flush=True)

    reports = hostcheck.probe_hosts(hostfile, needs, args.python, said)
    problems = hosts_mod.judge_hosts(reports, need_gb)
    if args.copy and any(r.missing for r in reports):
        for host, report in zip(hostfile.hosts, reports, strict=True):
            for path in report.missing:
                hostcheck.copy_to(host, path)
        reports = hostcheck.probe_hosts(hostfile, needs, args.python, said)
        problems = hosts_mod.judge_hosts(reports, need_gb)
    if args.json:
        print(json.dumps({"hosts": [r.__dict__ for r in reports], "need_gb": need_gb, "problems": problems},
                         default=list, indent=2))
    else:
        if need_gb is not None:
            print(f"the run needs about {need_gb:.1f} GB on each Mac (estimate, Metal)")
        for problem in problems:
            print(f"problem: {problem}")
        if not problems:
            print(f"ready: {hostfile.size} hosts, {hostfile.backend} backend")
    return EXIT_OK if not problems else EXIT_BAD_INPUT


def _needs(args) -> tuple[str | None, str | None, float | None]:
    """(model, data, GB each Mac needs by the estimate, or None when there is no model to estimate)."""
    from macfinetune.core import catalog
    from macfinetune.core.estimator import estimate, settings_from_recipe
    from macfinetune.core.problems import ProblemError
    from macfinetune.core.recipe import Recipe, load_recipe

    recipe = load_recipe(catalog.recipe_path(args.recipe)) if args.recipe else Recipe()
    model = args.model or recipe.model.path or None
    data = args.data or recipe.data.path or None
    if model is None:
        return None, data, None
    try:
        shape = catalog.find_shape(model)
    except ProblemError:
        return model, data, None  # a host's probe still says whether the folder is there
    settings = replace(settings_from_recipe(recipe), device="gpu")  # the hosts are Macs
    if not args.recipe:  # the defaults, fitted to the model as `estimate` fits them
        if shape.max_positions:
            settings = replace(settings, max_seq_length=min(settings.max_seq_length, shape.max_positions))
        if settings.num_layers > shape.layers:
            settings = replace(settings, num_layers=-1)
    est = estimate(shape, settings)
    local = [str(Path(p).expanduser().resolve()) if p and Path(p).expanduser().exists() else p for p in (model, data)]
    return local[0], local[1], est.total_gb


COMMANDS = {"hosts": cmd_hosts}
