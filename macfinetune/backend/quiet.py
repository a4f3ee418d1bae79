"""Keep mlx-lm from drawing on stdout while it trains: its progress UI becomes a null object."""

from __future__ import annotations

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
