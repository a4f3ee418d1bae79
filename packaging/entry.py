"""The frozen app's entry point: the same ``run`` as the ``macfinetune`` command."""

import multiprocessing
import sys

from macfinetune.__main__ import run

if __name__ == "__main__":
    multiprocessing.freeze_support()  # tokenizers/datasets may spawn helpers; a frozen child must not rerun main
    sys.exit(run())
