"""How a batch of charges travels to PostgreSQL's append functions: the SQL of each call and its arrays.

Both functions (``ledger_intake_account_charges`` in ``intake.sql``,
``ledger_append_account_charges`` in ``append.sql``) take the same
arguments: seven arrays (charge ids, account ids, stream ids, payload
hashes, payloads, states, Opened states), then the recorded-at time, the two
topics, and the price catalogue's id and version, then four arrays of the
typed facts budgets sum (user ids, occurred-at times, costs, total tokens).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ledger.store.base import ChargeBatch

#: The usual transport: each array as one string of its elements joined by the
#: record separator (U+001E), split on the server. Validated ids never hold a
#: control character and JSON escapes them, so it cannot occur inside an
#: element (each call checks; if it does, or a state is not UTF-8 text, array
#: literals are used). States go as their UTF-8 text: half the bytes of hex,
#: and ``convert_to`` gives back exactly the same bytes.
_JOINED_ARGUMENTS = (
    "string_to_array({0}, chr(30)), string_to_array({1}, chr(30)), string_to_array({2}, chr(30))::uuid[], "
    "string_to_array({3}, chr(30)), string_to_array({4}, chr(30)), "
    "(SELECT array_agg(convert_to(u.x, 'UTF8') ORDER BY u.o) "
    "FROM unnest(string_to_array({5}, chr(30))) WITH ORDINALITY AS u(x, o)), "
    "(SELECT array_agg(convert_to(u.x, 'UTF8') ORDER BY u.o) "
    "FROM unnest(string_to_array({6}, chr(30))) WITH ORDINALITY AS u(x, o)), "
    "{7}, {8}, {9}, {10}::uuid, {11}, "
    "string_to_array({12}, chr(30)), string_to_array({13}, chr(30))::timestamptz[], "
    "string_to_array({14}, chr(30), '')::bigint[], string_to_array({15}, chr(30))::bigint[]"
)
_SEPARATOR = "\x1e"
#: After the seven arrays: recorded_at, the two topics, the catalogue's id and version.
_SCALAR_TYPES = "timestamptz, text, text, uuid, bigint"

_PARAMETERS = ", ".join(["%s"] * 16)


@dataclass(frozen=True, slots=True)
class Statements:
    """The SQL that calls one append function (both take the same arguments), built once.

    Inside a caller's transaction the call goes as plain SQL: the arrays as
    array literals (``call``: one string each, which the server parses in one
    go), or joined (``call_joined``). On the store's own connection the
    calls are prepared statements (the server neither parses nor plans them
    each time), prepared once per connection (see ``PostgresStore._connection``):
    one for a single charge, of scalar parameters (the common call), one for
    several, of joined arrays.
    """

    call: str
    call_joined: str
    prepare: tuple[str, str]
    execute_one: str
    execute_many: str

    @classmethod
    def of(cls, function: str) -> Statements:
        def select(arguments: str) -> str:
            return f"SELECT idx, known_payload, known_recorded_at, notification_id FROM {function}({arguments})"

        return cls(
            call=select(
                "%s::text[], %s::text[], %s::uuid[], %s::text[], %s::text[], %s::bytea[], %s::bytea[], "
                "%s, %s, %s, %s::uuid, %s, %s::text[], %s::timestamptz[], %s::bigint[], %s::bigint[]"
            ),
            call_joined=select(_JOINED_ARGUMENTS.format(*["%s"] * 16)),
            prepare=(
                f"PREPARE {function}_one (text, text, uuid, text, text, text, text, {_SCALAR_TYPES}, "
                "text, timestamptz, bigint, bigint) AS "
                + select(
                    "ARRAY[$1], ARRAY[$2], ARRAY[$3], ARRAY[$4], ARRAY[$5], "
                    "ARRAY[convert_to($6, 'UTF8')], ARRAY[convert_to($7, 'UTF8')], $8, $9, $10, $11, $12, "
                    "ARRAY[$13], ARRAY[$14], ARRAY[$15], ARRAY[$16]"
                ),
                f"PREPARE {function}_many (text, text, text, text, text, text, text, {_SCALAR_TYPES}, "
                "text, text, text, text) AS "
                + select(_JOINED_ARGUMENTS.format(*(f"${n}" for n in range(1, 17)))),
            ),
            execute_one=f"EXECUTE {function}_one ({_PARAMETERS})",
            execute_many=f"EXECUTE {function}_many ({_PARAMETERS})",
        )


#: Writers take charges in through the intake, or append directly under the
#: events table's lock as the previous release did (big batches: no second write).
INTAKE = Statements.of("ledger_intake_account_charges")
LOCKED = Statements.of("ledger_append_account_charges")


def arrays_of(
    batch: ChargeBatch, statements: Statements, *, own_connection: bool
) -> tuple[str, tuple[Any, ...], tuple[Any, ...]]:
    """The SQL for ``batch``, its seven leading array arguments and its four trailing ones (the typed facts).

    Joined if they can be, else array literals; a lone charge on the store's
    own connection goes as scalars.
    """
    originator_ids = [str(o) for o in batch.originators]
    count = len(batch)
    if count == 1 and own_connection:
        facts: tuple[Any, ...] = (batch.user_ids[0], batch.occurred_ats[0], batch.costs[0], batch.tokens[0])
    else:
        facts = ()
    try:
        texts = [state.decode() for state in batch.states], [state.decode() for state in batch.opened_states]
    except UnicodeDecodeError:
        joined = None
    else:
        joined = _joined(
            [batch.charge_ids, batch.account_ids, originator_ids, batch.hashes, batch.payloads, *texts], count
        )
    if joined is not None and count == 1 and own_connection:
        return statements.execute_one, tuple(joined), facts  # one element each: nothing was joined
    occurred = [moment.isoformat() for moment in batch.occurred_ats]
    joined_facts = _joined([
        batch.user_ids, occurred, ["" if c is None else str(c) for c in batch.costs], [str(t) for t in batch.tokens]
    ], count)
    if joined is not None and joined_facts is not None and own_connection:
        return statements.execute_many, tuple(joined), tuple(joined_facts)
    if joined is not None and joined_facts is not None:
        return statements.call_joined, tuple(joined), tuple(joined_facts)
    return statements.call, (
        _text_array(batch.charge_ids),
        _text_array(batch.account_ids),
        "{%s}" % ",".join(originator_ids),  # noqa: UP031 - braces are the literal's own
        _text_array(batch.hashes),
        _text_array(batch.payloads),
        _bytea_array(batch.states),
        _bytea_array(batch.opened_states),
    ), (
        _text_array(batch.user_ids),
        _text_array(occurred),
        "{%s}" % ",".join("NULL" if c is None else str(c) for c in batch.costs),  # noqa: UP031
        "{%s}" % ",".join(str(t) for t in batch.tokens),  # noqa: UP031
    )


def _joined(columns: Sequence[Sequence[str]], count: int) -> list[str] | None:
    """Each column joined by the separator, or None if an element holds one (or is lost)."""
    joined = [_SEPARATOR.join(column) for column in columns]
    for text in joined:
        if text.count(_SEPARATOR) != count - 1 or not text:
            return None
    return joined


def _text_array(values: Sequence[str]) -> str:
    """A PostgreSQL array literal of (non-null) strings: each quoted, backslash-escaped."""
    quoted = ('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values)
    return "{" + ",".join(quoted) + "}"


def _bytea_array(values: Sequence[bytes]) -> str:
    """A PostgreSQL bytea[] literal: each element in hex form (its backslash escaped)."""
    return "{" + ",".join('"\\\\x' + v.hex() + '"' for v in values) + "}"
