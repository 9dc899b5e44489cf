"""What every scenario gets: its store, its sizes, and the rows measured so far."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence, TypeVar

from bench.rows import Row
from bench.sizes import Sizes
from bench.stores import Store

T = TypeVar("T")


@dataclass
class Context:
    store: Store
    sizes: Sizes
    quick: bool = False
    measured: dict[str, Row] = field(default_factory=dict)
    log: Callable[[str], None] = lambda message: None

    @property
    def kind(self) -> str:
        return self.store.kind

    def baseline(self, key: str) -> Row | None:
        """A row measured earlier in this run on this store."""
        return self.measured.get(key)

    def turns(self, kinds: Sequence[T]) -> list[list[T]]:
        """The kinds in mirrored turns (ABC, CBA): one with ``--quick`` or ``turns=1``, else ``sizes.turns``."""
        count = 1 if self.quick else max(1, self.sizes.turns)
        return [list(kinds) if turn % 2 == 0 else list(kinds)[::-1] for turn in range(count)]

    def remember(self, row: Row) -> Row:
        if row.key:
            self.measured[row.key] = row
        return row

    @contextmanager
    def fresh(self, name: str) -> Iterator[str]:
        with self.store.fresh(name) as url:
            yield url
