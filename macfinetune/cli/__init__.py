"""The command line: the same jobs as the app (``macfinetune.jobs``), run headless on the main thread.

One module per command group, each with ``add_parsers(subparsers)`` and ``COMMANDS``:
``train`` (train, runs, demo), ``use`` (fuse, generate), ``data`` (data, models), ``estimate``
(estimate, recommend, recipes), ``account`` (login, logout), ``export`` (export), ``hosts`` (hosts check,
hosts probe); ``common`` holds exit codes and the
stop handler. No Qt here (an import contract checks it).

Exit codes: 0 done, 1 the job failed while running, 2 bad input (nothing written), 130 stopped
(143 when the stop was a SIGTERM); ``macfinetune.__main__.run``, the console script, adds 130 for a
Ctrl-C while this package imports and 141 for a closed pipe.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from macfinetune import __version__
from macfinetune.cli import account, data, estimate, export, hosts, train, use
from macfinetune.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_STOPPED,
    print_problems,
)
from macfinetune.core.problems import ProblemError
from macfinetune.ui.pages import screenshot_pages

_GROUPS = (train, use, estimate, data, account, export, hosts)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="macfinetune",
        description="Fine-tune LLMs on your Mac with MLX: train, fuse, compare. "
        "Run without arguments (or `macfinetune app`) to open the app.",
    )
    parser.add_argument("--version", action="version", version=f"macfinetune {__version__}")
    parser.add_argument("--screenshot", metavar="OUT.png", help="render a page of the app offscreen with a demo run "
                        "loaded (fixed size) into OUT.png, then exit")
    parser.add_argument("--page", default="monitor", choices=screenshot_pages(), metavar="PAGE",
                        help=f"page for --screenshot: {', '.join(screenshot_pages())} (review: the wizard's last "
                        "step, filled) (default monitor)")
    parser.add_argument("--theme", choices=("light", "dark"), default="light", help="palette for --screenshot")
    parser.add_argument("--self-test", action="store_true", help="check that this install (or the frozen app) has "
                        "everything: imports, model modules, Qt, trains the tiny model a few steps, generates; "
                        "one line per check, exit 1 if any failed")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("app", help="open the app's main window (the same as no command)")
    for group in _GROUPS:
        group.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.screenshot:
        return _screenshot(args)
    if args.self_test:
        return _self_test()
    if args.command in (None, "app"):
        return _open_app(parser)
    # data inspect tokenizes in batches (parallel helps); nothing forks after it
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true" if args.command == "data" else "false")
    handler = _command(args.command)
    try:
        return handler(args)
    except ProblemError as e:
        print_problems(e)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("\nstopped", file=sys.stderr)
        return EXIT_STOPPED


def _command(name: str):
    return next(group.COMMANDS[name] for group in _GROUPS if name in group.COMMANDS)


def _has_display() -> bool:
    """Linux needs an X11 or Wayland display (or an explicit QT_QPA_PLATFORM); macOS and Windows always have one."""
    if not sys.platform.startswith("linux"):
        return True
    return any(os.environ.get(k) for k in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"))


def _open_app(parser: argparse.ArgumentParser) -> int:
    if not _has_display():
        print("No display found (DISPLAY, WAYLAND_DISPLAY and QT_QPA_PLATFORM are unset), so the app cannot open; "
              "the commands below work without one. Try: macfinetune demo")
        parser.print_help()
        return EXIT_OK
    from macfinetune import app  # Qt is imported only here

    return app.run()


def _screenshot(args) -> int:
    folder = Path(args.screenshot).parent
    if not folder.is_dir():
        print(f"error: {folder}: no such folder (for --screenshot)", file=sys.stderr)
        return EXIT_BAD_INPUT
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from macfinetune import app

    code = app.screenshot(args.screenshot, args.page, args.theme)
    if code:
        print(f"error: could not write {args.screenshot}", file=sys.stderr)
    return code


def _self_test() -> int:
    from macfinetune.backend.selftest import run_checks

    failed = 0
    for check in run_checks():
        print(f"{'ok  ' if check.ok else 'FAIL'}  {check.name}: {check.detail}", flush=True)
        failed += not check.ok
    print(f"self-test: {'all checks passed' if not failed else f'{failed} failed'}")
    return EXIT_OK if not failed else EXIT_FAILED
