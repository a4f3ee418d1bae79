"""Keep mlx-lm from printing into our output: its training UI becomes a null object, its prints are captured."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class _NullTrainUI:
    def __init__(self, *args, **kwargs):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def advance(self):
        pass

    def report_train(self, *args, **kwargs):
        pass

    def report_val(self, *args, **kwargs):
        pass

    def report_save(self, *args, **kwargs):
        pass

    @contextmanager
    def val_task(self, total):
        yield lambda: None


@contextmanager
def quiet_trainer(on_message: Callable[[str], None]) -> Iterator[None]:
    """Within the block, mlx-lm's trainer draws nothing and its warnings go to ``on_message``."""
    from mlx_lm.tuner import trainer

    saved = trainer.TrainUI, trainer.rprint
    trainer.TrainUI = _NullTrainUI
    trainer.rprint = lambda *args, **kwargs: on_message(" ".join(str(a) for a in args))
    try:
        yield
    finally:
        trainer.TrainUI, trainer.rprint = saved


@contextmanager
def captured_stdout() -> Iterator[io.StringIO]:
    """What mlx-lm prints inside the block (e.g. GGUF export's temporary path) goes to a buffer, not the user.

    Only for short calls on the thread that owns the output: sys.stdout is swapped for the block."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        yield buffer
