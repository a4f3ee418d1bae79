"""Problems are data: each names the file, line, field and value at fault."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the user's input, precise enough to show beside the field."""

    message: str
    file: str | None = None
    line: int | None = None
    field: str | None = None
    value: object = None

    def __str__(self) -> str:
        where = self.file or ""
        if self.line is not None:
            where += f" line {self.line}"
        if self.field:
            where += f" ({self.field})" if where else self.field
        return f"{where}: {self.message}" if where else self.message


class ProblemError(Exception):
    """Raised with one or more problems; the CLI prints them and exits 2."""

    def __init__(self, problems: Problem | list[Problem] | tuple[Problem, ...]):
        if isinstance(problems, Problem):
            problems = [problems]
        self.problems: tuple[Problem, ...] = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def fail(message: str, **where) -> ProblemError:
    """A ProblemError with a single problem; ``raise fail("...", file=..., value=...)``."""
    return ProblemError(Problem(message, **where))
