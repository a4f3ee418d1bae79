"""The ``macfinetune`` command (and ``python -m macfinetune``): the CLI, with the two ways a shell ends
a command handled quietly, wherever they land (imports included): Ctrl-C exits 130 and a reader that
went away (``| head``) exits 141 (128 + SIGPIPE, as shell tools do)."""

import os
import sys


def run(argv: list[str] | None = None) -> int:
    try:
        from macfinetune.cli import main  # inside the try: Ctrl-C may come while the CLI imports

        code = main(argv)
        sys.stdout.flush()  # a closed pipe shows here rather than at exit
        return code
    except KeyboardInterrupt:
        print("\nstopped", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's final flush must not fail again
        return 141


if __name__ == "__main__":
    raise SystemExit(run())
