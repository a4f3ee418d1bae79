"""`macfinetune hosts check|probe`: is every Mac of a hostfile ready for a multi-Mac run?

``check`` asks each host over SSH (``backend.hostcheck``) and says in words what is wrong on which
host: not reachable without a password, other macfinetune/MLX/mlx-lm versions, not enough memory
for the recipe (the estimator, per Mac, against that Mac's own budget), too little disk, the model
or data missing (``--copy`` copies them with rsync to the same path). ``probe`` is what the hosts
run: this machine's facts as one JSON line.
"""

from __future__ import annotations

import json
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
    q.add_argument("--need-model", action="append", default=[], help="a hub model (org/name) that must be in "
                   "this machine's Hugging Face cache (repeatable)")
    q.add_argument("--json", action="store_true", help="one JSON line (what `check` reads)")


def cmd_hosts(args) -> int:
    return _probe(args) if args.hosts_command == "probe" else _check(args)


def _probe(args) -> int:
    from macfinetune.backend.hostcheck import probe_here

    facts = probe_here(args.need, args.need_model)
    if args.json:
        print(json.dumps(facts))
    else:
        versions = ", ".join(f"{k} {v or 'missing'}" for k, v in facts["versions"].items())
        print(f"{versions}; MLX may use {facts['usable_gb']:.1f} GB ({facts['machine']}); "
              f"{facts['free_disk_gb']:.1f} GB free disk")
        for path in facts["missing"] + facts["missing_models"]:
            print(f"missing: {path}")
    return EXIT_OK


def _check(args) -> int:
    from macfinetune import jobs
    from macfinetune.core import catalog
    from macfinetune.core import hosts as hosts_mod
    from macfinetune.core.control import JobControl
    from macfinetune.core.events import Stage
    from macfinetune.core.recipe import load_recipe

    hostfile = hosts_mod.load_hostfile(args.hostfile)
    recipe = load_recipe(catalog.recipe_path(args.recipe)) if args.recipe else None

    def said(event) -> None:
        if isinstance(event, Stage) and not args.json and not event.message.startswith("the run needs"):
            print(event.message, flush=True)

    found = jobs.check_hosts(said, JobControl(), hostfile=hostfile, recipe=recipe, model=args.model, data=args.data,
                             copy=args.copy, python=args.python)
    if args.json:
        print(json.dumps({"hosts": [r.__dict__ for r in found.reports], "need_gb": found.need_gb,
                          "problems": list(found.problems), "copied": list(found.copied)}, default=list, indent=2))
    else:
        if found.need_gb is not None:
            print(f"the run needs about {hosts_mod.gb_text(found.need_gb)} on each Mac (estimate, Metal)")
        for problem in found.problems:
            print(f"problem: {problem}")
        if not found.problems:
            print(f"ready: {hostfile.size} hosts, {hostfile.backend} backend")
    return EXIT_OK if not found.problems else EXIT_BAD_INPUT


COMMANDS = {"hosts": cmd_hosts}
