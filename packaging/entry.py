"""The frozen app's entry point: the same ``main`` as the ``macfinetune`` command."""

import multiprocessing
import sys

from macfinetune.cli import main

if __name__ == "__main__":
    multiprocessing.freeze_support()  # tokenizers/datasets may spawn helpers; a frozen child must not rerun main
    sys.exit(main())
