"""OpenTelemetry GenAI spans, as charges (docs/integrations/otlp.md).

Pure mapping, no HTTP and no import of OpenTelemetry: it reads decoded
OTLP messages (``ExportTraceServiceRequest`` from ``opentelemetry-proto``,
or anything shaped like one) and returns the charge fields of each GenAI
client span, and a reason for each GenAI span that cannot be a charge.

Which spans count:

- a span with any of ``gen_ai.provider.name``, ``gen_ai.system``,
  ``gen_ai.request.model``, ``gen_ai.response.model`` or a
  ``gen_ai.usage.*`` token count is a GenAI span;
- it is charged when it is a client call: kind CLIENT, INTERNAL or
  UNSPECIFIED (SERVER, PRODUCER and CONSUMER spans are the other side of a
  call, or a queue, and would count the call twice), and its
  ``gen_ai.operation.name``, when given, is not an agent or tool operation
  (``invoke_agent``, ``create_agent``, ``execute_tool``,
  ``invoke_workflow``: their usage is the sum of their child calls'), and it
  did not fail without usage (status ERROR and no token count: nothing was
  billed);
- every other span is ignored: neither charged nor rejected.

Fields (the first attribute present wins; span attributes before resource ones):

- provider: ``gen_ai.provider.name``, else ``gen_ai.system``;
- model: ``gen_ai.response.model``, else ``gen_ai.request.model``;
- prompt tokens: ``gen_ai.usage.input_tokens``, else ``gen_ai.usage.prompt_tokens``;
  completion tokens: ``gen_ai.usage.output_tokens``, else
  ``gen_ai.usage.completion_tokens``; at least one is required;
- charge id: ``gen_ai.response.id``, else ``otel:{trace id}:{span id}`` in
  hex, so a resent export counts once;
- occurred at: the span's end time, else its start time (UTC);
- account: a scoped key's account; else ``ledger.account_id`` on the span,
  else on the resource. A scoped key's span naming another account is rejected;
- user: ``ledger.user_id``, else ``enduser.id``, else ``user.id`` (span, then resource);
- charge type: ``ledger.charge_type``, else ``completion``;
- session key: ``gen_ai.conversation.id``; reference: ``trace:{hex} span:{hex}``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

#: Charge field -> the attributes it is read from, in order of precedence.
PROVIDER = ("gen_ai.provider.name", "gen_ai.system")
MODEL = ("gen_ai.response.model", "gen_ai.request.model")
INPUT_TOKENS = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens")
OUTPUT_TOKENS = ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens")
RESPONSE_ID = "gen_ai.response.id"
OPERATION = "gen_ai.operation.name"
CONVERSATION = "gen_ai.conversation.id"
ACCOUNT = ("ledger.account_id",)
USER = ("ledger.user_id", "enduser.id", "user.id")
CHARGE_TYPE = ("ledger.charge_type",)
DEFAULT_CHARGE_TYPE = "completion"

#: Attributes that make a span a GenAI span.
MARKERS = frozenset(PROVIDER + MODEL + INPUT_TOKENS + OUTPUT_TOKENS)
#: Operations whose spans wrap model calls that have spans of their own.
NOT_CALLS = frozenset({"invoke_agent", "create_agent", "execute_tool", "invoke_workflow"})
#: Every attribute the mapping reads; the others are skipped without decoding.
READ = MARKERS | {RESPONSE_ID, OPERATION, CONVERSATION} | set(ACCOUNT + USER + CHARGE_TYPE)

#: Span kinds (OTLP's enum): the ones that are the calling side of a model call.
CALLING_KINDS = frozenset({0, 1, 3})  # UNSPECIFIED, INTERNAL, CLIENT
STATUS_ERROR = 2
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Rejection:
    """A GenAI span that is not a charge, and why (naming the attribute)."""

    span: str
    reason: str

    def __str__(self) -> str:
        return f"span {self.span}: {self.reason}"


@dataclass
class SpanCharges:
    """The charges of an export's GenAI spans, in order, and the spans rejected before recording.

    ``origins[i]`` names, for ``charges[i]``, the span (``spans[i]``) and the
    attribute each charge field came from, so that a refusal by the ledger
    can name the attribute.
    """

    charges: list[dict[str, Any]] = field(default_factory=list)
    spans: list[str] = field(default_factory=list)
    origins: list[dict[str, str]] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)


def attributes(pairs: Iterable[Any], wanted: frozenset[str] | set[str] = READ) -> dict[str, Any]:
    """The ``wanted`` attributes of an OTLP ``KeyValue`` list as Python values."""
    found: dict[str, Any] = {}
    for pair in pairs:
        if pair.key in wanted:
            found[pair.key] = any_value(pair.value)
    return found


def any_value(value: Any) -> Any:
    """An OTLP ``AnyValue`` as Python: str, bool, int, float, bytes, list or dict (None when unset)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind)


def span_label(trace_id: bytes, span_id: bytes) -> str:
    """How errors name a span: its trace and span ids in hex."""
    return f"{trace_id.hex() or '-'}/{span_id.hex() or '-'}"


@dataclass(frozen=True, slots=True)
class SpanFacts:
    """What the mapping reads of a span, whichever encoding it came in: ids, kind, status, times,
    and the attributes it reads (:data:`READ`)."""

    trace_id: bytes
    span_id: bytes
    kind: int
    status_code: int
    start_time_unix_nano: int
    end_time_unix_nano: int
    attributes: dict[str, Any]


#: A span with its resource's attributes, as :func:`charges_of_spans` takes them.
ResourceSpan = tuple[dict[str, Any], SpanFacts]


def proto_spans(request: Any) -> Iterator[ResourceSpan]:
    """Each span of a protobuf ``ExportTraceServiceRequest`` with its resource's attributes."""
    for resource_spans in request.resource_spans:
        resource = attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                yield resource, SpanFacts(span.trace_id, span.span_id, span.kind, span.status.code,
                                          span.start_time_unix_nano, span.end_time_unix_nano,
                                          attributes(span.attributes))


def charges_of(request: Any, *, scope: str | None = None) -> SpanCharges:
    """The charges of a protobuf export's GenAI client spans; ``scope``: the account a scoped key acts for."""
    return charges_of_spans(proto_spans(request), scope=scope)


def charges_of_spans(spans: Iterable[ResourceSpan], *, scope: str | None = None) -> SpanCharges:
    """The charges of the GenAI client spans among ``spans``, and the GenAI spans rejected."""
    out = SpanCharges()
    for resource, span in spans:
        if not is_charged(span):
            continue
        mapped = span_charge(resource, span, scope=scope)
        if isinstance(mapped, Rejection):
            out.rejected.append(mapped)
        else:
            fields, origin = mapped
            out.charges.append(fields)
            out.spans.append(span_label(span.trace_id, span.span_id))
            out.origins.append(origin)
    return out


def is_charged(span: SpanFacts) -> bool:
    """Whether a span is a GenAI call that was, or may have been, billed."""
    own = span.attributes
    if not MARKERS.intersection(own) or span.kind not in CALLING_KINDS:
        return False
    if own.get(OPERATION) in NOT_CALLS:
        return False
    failed = span.status_code == STATUS_ERROR
    return not (failed and not any(name in own for name in INPUT_TOKENS + OUTPUT_TOKENS))


def span_charge(resource: Mapping[str, Any], span: SpanFacts, *,
                scope: str | None = None) -> tuple[dict[str, Any], dict[str, str]] | Rejection:
    """One GenAI span's charge fields and where each came from, or why it cannot be a charge."""
    own = span.attributes
    label = span_label(span.trace_id, span.span_id)
    errors: dict[str, str] = {}
    fields: dict[str, Any] = {}
    origin: dict[str, str] = {}

    def take(name: str, keys: tuple[str, ...], *, sources: tuple[Mapping[str, Any], ...] = (own,)) -> Any:
        for source in sources:
            for key in keys:
                value = source.get(key)
                if value is not None:
                    origin[name] = key
                    return value
        return None

    for name, keys in (("provider", PROVIDER), ("model", MODEL)):
        value = take(name, keys)
        if value is not None:
            text_or_error(name, value, origin, fields, errors)
    tokens(own, fields, origin, errors)
    account = take("account_id", ACCOUNT, sources=(own, resource))
    resolve_account(account, scope, fields, origin, errors)
    for name, keys in (("user_id", USER), ("charge_type", CHARGE_TYPE)):
        value = take(name, keys, sources=(own, resource))
        if value is not None:
            text_or_error(name, value, origin, fields, errors)
    fields.setdefault("charge_type", DEFAULT_CHARGE_TYPE)
    conversation = take("session_key", (CONVERSATION,))
    if conversation is not None:
        text_or_error("session_key", conversation, origin, fields, errors)
    identify(own, span, fields, origin, errors)
    when = span.end_time_unix_nano or span.start_time_unix_nano
    if when:
        fields["occurred_at"] = instant(when)
        origin["occurred_at"] = "end_time_unix_nano" if span.end_time_unix_nano else "start_time_unix_nano"
    else:
        errors["end_time_unix_nano"] = "the span has no end or start time"
    if errors:
        return Rejection(label, "; ".join(f"{name}: {why}" for name, why in sorted(errors.items())))
    return fields, origin


def text_or_error(name: str, value: Any, origin: dict[str, str], fields: dict[str, Any],
                  errors: dict[str, str]) -> None:
    """A text attribute as a charge field; any other type is an error naming the attribute."""
    if isinstance(value, str):
        fields[name] = value
    else:
        errors[origin[name]] = f"must be a string, got {type(value).__name__}"


def tokens(own: Mapping[str, Any], fields: dict[str, Any], origin: dict[str, str], errors: dict[str, str]) -> None:
    """Input and output tokens (new names first); at least one must be given, each a whole number."""
    found = False
    for name, keys in (("prompt_tokens", INPUT_TOKENS), ("completion_tokens", OUTPUT_TOKENS)):
        key = next((k for k in keys if own.get(k) is not None), None)
        if key is None:
            continue
        found = True
        origin[name] = key
        count = whole(own[key])
        if count is None:
            errors[key] = f"must be an integer, got {own[key]!r}"
        else:
            fields[name] = count
    if not found:
        errors[INPUT_TOKENS[0]] = (f"no token counts: give {INPUT_TOKENS[0]} or {OUTPUT_TOKENS[0]} "
                                   f"(or {INPUT_TOKENS[1]} / {OUTPUT_TOKENS[1]})")


def whole(value: Any) -> int | None:
    """An integer attribute; a float holding a whole number (as some SDKs send numbers) too."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def resolve_account(account: Any, scope: str | None, fields: dict[str, Any], origin: dict[str, str],
                    errors: dict[str, str]) -> None:
    """The span's account: a scoped key's own (a span naming another is refused), else the attribute."""
    if account is not None and not isinstance(account, str):
        errors[origin["account_id"]] = f"must be a string, got {type(account).__name__}"
        return
    if scope is not None:
        if account is not None and account != scope:
            errors[origin["account_id"]] = f"outside this key's account ({scope!r})"
            return
        fields["account_id"] = scope
        origin.setdefault("account_id", "the key's account")
        return
    if account is None:
        errors[ACCOUNT[0]] = ("no account: set the resource or span attribute ledger.account_id, "
                              "or send with a key scoped to one account")
        return
    fields["account_id"] = account


def identify(own: Mapping[str, Any], span: SpanFacts, fields: dict[str, Any], origin: dict[str, str],
             errors: dict[str, str]) -> None:
    """The charge id (the response's id, else the span's ids) and the reference (the span's ids)."""
    trace_id, span_id = bytes(span.trace_id), bytes(span.span_id)
    valid_ids = len(trace_id) == 16 and len(span_id) == 8 and any(trace_id) and any(span_id)
    response_id = own.get(RESPONSE_ID)
    if response_id is not None:
        origin["charge_id"] = RESPONSE_ID
        text_or_error("charge_id", response_id, origin, fields, errors)
        if response_id == "":
            errors[RESPONSE_ID] = "must not be empty"
    elif valid_ids:
        fields["charge_id"] = f"otel:{trace_id.hex()}:{span_id.hex()}"
        origin["charge_id"] = "trace_id/span_id"
    else:
        errors["span_id"] = ("without gen_ai.response.id the charge id is the span's: it needs a 16-byte "
                             "trace id and an 8-byte span id, not all zero")
    if valid_ids:
        fields["reference"] = f"trace:{trace_id.hex()} span:{span_id.hex()}"
        origin["reference"] = "trace_id/span_id"


def instant(unix_nano: int) -> datetime:
    """Nanoseconds since the epoch as a UTC datetime (to the microsecond, by integer arithmetic)."""
    return EPOCH + timedelta(microseconds=unix_nano // 1000)
