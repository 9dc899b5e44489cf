"""Words for people, shared by the command line and the demo.

One rule for absent values everywhere a person reads them: an absent user,
provider or model (the ledger stores an absent user as ``""`` and an absent
provider or model as null) is ``-`` in tables and text, ``null`` in JSON and
an empty cell in CSV.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ledger.measures import MEASURES

if TYPE_CHECKING:
    from ledger.compaction import CompactionResult
    from projections import Conservation

#: How an absent user, provider or model is shown in tables and text.
ABSENT = "-"
#: The order of the figures in a compact ``a/b/c/...`` rendering.
FIGURES_LEGEND = "charges/prompt/completion/total/cost micros/unpriced"


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """``1 line``, ``2 lines``, ``1,000 account-days``: the count with its noun agreeing."""
    word = noun if count == 1 else (nouns or noun + "s")
    return f"{count:,} {word}"


def shown(value: Any) -> str:
    """A key value for a table or text: absent (None or empty) is ``-``."""
    return ABSENT if value is None or value == "" else str(value)


def json_value(value: Any) -> Any:
    """A key value for JSON: absent (None or empty) is null."""
    return None if value == "" else value


def duration(seconds: float) -> str:
    """A period in the largest whole unit that fits: ``2 days``, ``36 hours``, ``90 seconds``."""
    for unit, size in (("day", 86_400), ("hour", 3_600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            return plural(int(seconds // size), unit)
    return plural(int(seconds), "second")


def held_back(result: CompactionResult) -> str:
    """Why compaction left closed account-days alone, each reason with its count."""
    grace = duration(result.grace_seconds)
    words = {
        "grace_period": f"within the grace period (an event recorded less than {grace} ago, "
        "however old the charge)",
        "not_projected": "not yet projected",
        "raw_before_rollup": "with raw events stored before the day's rollup (see the log's warnings)",
    }
    parts = [f"{count:,} {words.get(reason, reason)}" for reason, count in result.skipped_by_reason.items()]
    return f"{plural(result.skipped, 'account-day')} left for later: {', '.join(parts)}"


def figures(values: Mapping[str, int] | None) -> str:
    """Figures as ``charges/prompt/completion/total/cost micros/unpriced``."""
    if values is None:
        return "(none)"
    return "/".join(str(values.get(name, 0)) for name in MEASURES)


def conservation_lines(conservation: Conservation) -> list[str]:
    """The conservation check as a person reads it: what was compared with what, and why.

    Records and log cover every account; the account comparison covers only compacted
    accounts (their running totals still count the charges compaction pruned,
    so they can be checked against the rollups), hence its smaller figures.
    """
    c = conservation
    verdict = "balanced" if c.balanced else "UNBALANCED"
    same = "=" if c.records == c.log else "!="
    lines = [f"  conservation: {verdict} (figures are {FIGURES_LEGEND})",
             f"    every account: records {figures(c.records)} {same} log {figures(c.log)}"]
    if not c.accounts_checked:
        lines.append("    compacted accounts: none yet (running totals are compared with the log only "
                     "for accounts with rollups)")
        return lines
    same = "=" if c.accounts == c.accounts_log else "!="
    lines.append(f"    {plural(c.accounts_checked, 'compacted account')} (running totals against the log, "
                 f"rollups included): {figures(c.accounts)} {same} {figures(c.accounts_log)}")
    return lines
