"""Keep mlx-lm from printing into our output: its training UI becomes a null object, its prints are captured."""

from __future__ import annotations

import contextlib
import io
import re
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


_LONGER = re.compile(r"longer than (\d+) tokens\. The longest sentence (\d+)")


class _Once:
    """Passes on each kind of mlx-lm message once (kinds differ by more than their numbers), in our words."""

    def __init__(self, on_message: Callable[[str], None]):
        self.on_message, self.seen = on_message, set()

    def __call__(self, text: str) -> None:
        kind = re.sub(r"\d+", "#", text)
        if kind not in self.seen:
            self.seen.add(kind)
            self.on_message(_our_words(text))


def once(on_message: Callable[[str], None]) -> _Once:
    """A message sink that several ``quiet_trainer`` blocks of one run share, so a warning shows once per run."""
    return _Once(on_message)


def _our_words(text: str) -> str:
    found = _LONGER.search(text)
    if not found:
        return text
    limit, longest = found.groups()
    return (f"warning: some rows are longer than max_seq_length ({limit} tokens; the longest seen has {longest}) "
            "and are cut to it; split long rows, or raise data.max_seq_length (`macfinetune data inspect` lists them)")


@contextmanager
def quiet_trainer(on_message: Callable[[str], None]) -> Iterator[None]:
    """Within the block, mlx-lm's trainer draws nothing and its warnings go to ``on_message``."""
    from mlx_lm.tuner import trainer

    say = on_message if isinstance(on_message, _Once) else _Once(on_message)
    saved = trainer.TrainUI, trainer.rprint
    trainer.TrainUI = _NullTrainUI
    trainer.rprint = lambda *args, **kwargs: say(" ".join(str(a) for a in args))
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
