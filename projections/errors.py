"""What a projection refuses to do, and why."""

from __future__ import annotations


class ProjectionError(Exception):
    """The log holds something this projection cannot apply as configured."""


class PositionMoved(ProjectionError):
    """Another projector committed this position first; the batch was rolled back."""


class RebuildSuperseded(ProjectionError):
    """Another rebuild took over the scratch table; this one stopped."""


class ZoneMismatch(ProjectionError):
    """A run would add billing dates of one zone to a table that holds another's."""

    def __init__(self, name: str, recorded: str, requested: str) -> None:
        super().__init__(
            f"{name} holds billing dates in time zone {recorded!r}, but this run bills in "
            f"{requested!r}: the two would mix in one table. Run in {recorded!r} "
            f"(--billing-tz or LEDGER_BILLING_TZ), or rebuild the table in the new zone: "
            f"ledger --billing-tz {requested} rebuild"
        )
        self.recorded = recorded
        self.requested = requested
