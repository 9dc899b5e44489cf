"""The ledger's repository: cached accounts that survive compaction in other processes."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from uuid import UUID

from eventsourcing.application import Repository
from eventsourcing.domain import OriginatorVersionError


def mutate_all(aggregate: Any, events: Iterable[Any]) -> Any:
    """Apply events in order: ``project_aggregate`` minus its ``isinstance`` assertion."""
    for event in events:
        aggregate = event.mutate(aggregate)
    return aggregate


def evict(repository: Repository[Any], aggregate_id: UUID) -> None:
    """Drop an aggregate from the repository's cache, if it is there."""
    if repository.cache is not None:
        try:
            repository.cache.get(aggregate_id, evict=True)
        except KeyError:
            pass


class CompactedRepository(Repository[UUID]):
    """A repository whose cached aggregates survive compaction in other processes.

    A cached account fast-forwards with the events after its version; when
    another process pruned some of those, the first one it reads skips versions
    and the library raises ``OriginatorVersionError``. The cached copy is then
    dropped and the account reloaded from its latest snapshot, which compaction
    took at the rollup's version, so it covers the gap.

    Replays use :func:`mutate_all`, the library's projector function without
    its per-event runtime-protocol assertion (most of a long replay's time).
    """

    def get(self, aggregate_id: UUID, *, version: int | None = None, **kwargs: Any) -> Any:
        kwargs.setdefault("projector_func", mutate_all)
        try:
            return super().get(aggregate_id, version=version, **kwargs)
        except OriginatorVersionError:
            if version is not None or self.cache is None:
                raise
            evict(self, aggregate_id)
            return super().get(aggregate_id, version=version, **kwargs)

    @classmethod
    def like(cls, repository: Repository[Any]) -> CompactedRepository:
        """The same stores, cache and options as ``repository``."""
        compacted = cls(
            event_store=repository.event_store,
            snapshot_store=repository.snapshot_store,
            fastforward=repository.fastforward,
            fastforward_skipping=repository.fastforward_skipping,
            deepcopy_from_cache=repository.deepcopy_from_cache,
        )
        compacted.cache = repository.cache
        return compacted
