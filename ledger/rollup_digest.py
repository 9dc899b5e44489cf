"""A rollup's digest: which charges and reversals it stands for, in a form an audit can recompute.

A rollup's ``digest`` is the SHA-256 hex digest of UTF-8 text built as:

* if it supersedes an earlier rollup of the day: the line
  ``previous:<that rollup's digest>``;
* then one line per covered raw event, sorted as strings, each the compact
  JSON array ``[charge_id, sign, prompt_tokens, completion_tokens,
  total_tokens]`` (``sign`` is 1 for a charge, -1 for a reversal; tokens are
  the event's positive figures; ``json.dumps(..., separators=(",", ":"),
  ensure_ascii=False)``), extended by ``cost_micros, price_version`` for a
  priced event (so digests of unpriced events are what they always were);

every line ending in ``\\n``. :func:`digest_of` computes it and
:func:`digest_item` turns a stored event's state into its item, so an audit
can recompute a digest wherever the raw events are still present.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from ledger.domain import CHARGE_RECORDED_TOPIC, CHARGE_REVERSED_TOPIC

#: The raw events a rollup stands for: charges and their reversals.
RAW_TOPICS = (CHARGE_RECORDED_TOPIC, CHARGE_REVERSED_TOPIC)

#: (charge_id, sign, prompt_tokens, completion_tokens, total_tokens[, cost_micros, price_version])
DigestItem = tuple[Any, ...]


def digest_item(topic: str, state: Mapping[str, Any]) -> DigestItem:
    """The digest item of a stored charge or reversal (its decoded state)."""
    if topic not in RAW_TOPICS:
        raise ValueError(f"not a charge or reversal topic: {topic!r}")
    sign = 1 if topic == CHARGE_RECORDED_TOPIC else -1
    item: DigestItem = (
        str(state["charge_id"]),
        sign,
        int(state["prompt_tokens"]),
        int(state["completion_tokens"]),
        int(state["total_tokens"]),
    )
    if state.get("price_version") is not None:
        item += (int(state["cost_micros"]), int(state["price_version"]))
    return item


def digest_of(items: Iterable[DigestItem], previous: str | None = None) -> str:
    """SHA-256 of the covered events (and a superseded rollup's digest); see the module doc."""
    lines = sorted(
        json.dumps(list(item), separators=(",", ":"), ensure_ascii=False) for item in items
    )
    hasher = hashlib.sha256()
    if previous is not None:
        hasher.update(f"previous:{previous}\n".encode())
    for line in lines:
        hasher.update(line.encode("utf-8") + b"\n")
    return hasher.hexdigest()
