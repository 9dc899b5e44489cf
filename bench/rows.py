"""One line of the benchmark's table, its target, and how a target is judged.

Every figure is a ratio against a baseline measured in the same run, so a
table copied from a slower or faster machine still says the same thing.
Speed never fails a run; an inconsistent count does (see :class:`Inconsistent`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

POSTGRESQL = "postgresql"
SQLITE = "sqlite"


class Inconsistent(AssertionError):
    """A scenario's numbers disagree (e.g. charges recorded != charges counted)."""


class BenchmarkFailed(RuntimeError):
    """Some scenarios were inconsistent or crashed; the table still printed."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("benchmark failed:\n  " + "\n  ".join(problems))


@dataclass(frozen=True)
class Target:
    """A yardstick from the issue: its wording, its test, and which stores it binds."""

    text: str
    check: Callable[["Row"], bool]
    stores: tuple[str, ...] = (POSTGRESQL, SQLITE)

    def judge(self, row: "Row") -> bool | None:
        """True/False where the target applies and the figures exist, else None."""
        if row.store not in self.stores or row.error:
            return None
        try:
            return bool(self.check(row))
        except (TypeError, ZeroDivisionError):
            return None  # a figure it needs is missing (baseline not run)


@dataclass(frozen=True)
class Row:
    """A measured scenario: what, where, how many, how long, compared with what."""

    scenario: str
    store: str
    n: int | None = None
    seconds: float | None = None
    unit: str = "charges"
    baseline: str | None = None
    ratio: float | None = None
    target: Target | None = None
    note: str = ""
    error: str = ""
    extra: dict[str, float] = field(default_factory=dict, compare=False)
    #: Stable name other rows use to pick this one as their baseline.
    key: str = ""

    @property
    def rate(self) -> float | None:
        """Items per second (None if not timed)."""
        if self.n is None or not self.seconds:
            return None
        return self.n / self.seconds

    @property
    def met(self) -> bool | None:
        return None if self.target is None else self.target.judge(self)

    def against(self, baseline: "Row | None") -> "Row":
        """This row with its ratio to ``baseline``'s rate (higher is better)."""
        if baseline is None or baseline.rate is None or self.rate is None:
            return replace(self, baseline=baseline.scenario if baseline else self.baseline)
        return replace(self, baseline=baseline.scenario, ratio=self.rate / baseline.rate)


def missing(scenario: str, store: str, module: str, key: str = "") -> Row:
    """A scenario whose module has not landed yet."""
    return Row(scenario, store, note=f"n/a (module missing: {module})", key=key)


def at_least(ratio: float, text: str, stores: tuple[str, ...] = (POSTGRESQL,)) -> Target:
    """The row's ratio to its baseline must reach ``ratio``."""
    return Target(text, lambda row: row.ratio >= ratio, stores)  # type: ignore[operator]


def summed(parts: Sequence[tuple[int, float]]) -> tuple[int, float]:
    """(items, seconds) of a scenario's turns added up: a row's count and seconds."""
    return sum(p[0] for p in parts), sum(p[1] for p in parts)
