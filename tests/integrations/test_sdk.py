"""The SDK response helpers against the real OpenAI and Anthropic SDKs, with no network.

Each client gets an HTTP client whose transport answers with canned provider
JSON (or server-sent events): ``openai`` 3.x takes an ``httpx.Client`` or an
``httpx2.Client`` (both are tested), ``anthropic`` 2.x only an ``httpx2.Client``;
each client gets its library's own MockTransport. The SDKs' returned objects go through
``charge_fields`` into a real Ledger on each store.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest
import sqlalchemy as sa

from ledger import Ledger
from ledger.errors import UnknownAccount
from ledger.pricing import Price
from ledger.store.schema import charge_index
from ledger_service.integrations.sdk import UnreadableResponse, charge_fields

CREATED = int(datetime(2026, 1, 31, 12, 0, tzinfo=UTC).timestamp())
GPT = "gpt-4o-2024-08-06"
CLAUDE = "claude-sonnet-4-5-20250929"

CHAT_USAGE = {
    "prompt_tokens": 1200,
    "completion_tokens": 300,
    "total_tokens": 1500,
    "prompt_tokens_details": {"cached_tokens": 1024},
}
CHAT = {
    "id": "chatcmpl-A1b2C3",
    "object": "chat.completion",
    "created": CREATED,
    "model": GPT,
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "Hello."}, "finish_reason": "stop"}
    ],
    "usage": CHAT_USAGE,
}
RESPONSE_USAGE = {
    "input_tokens": 900,
    "input_tokens_details": {"cached_tokens": 512, "cache_write_tokens": 0},
    "output_tokens": 250,
    "output_tokens_details": {"reasoning_tokens": 64},
    "total_tokens": 1150,
}
RESPONSE = {
    "id": "resp_67ccd2bed1ec8190",
    "object": "response",
    "created_at": CREATED,
    "status": "completed",
    "model": GPT,
    "output": [
        {
            "type": "message",
            "id": "msg_67ccd2bf17f0",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Hello.", "annotations": []}],
        }
    ],
    "parallel_tool_calls": True,
    "tool_choice": "auto",
    "tools": [],
    "usage": RESPONSE_USAGE,
}
MESSAGE_USAGE = {
    "input_tokens": 21,
    "output_tokens": 180,
    "cache_read_input_tokens": 2048,
    "cache_creation_input_tokens": 256,
}
MESSAGE = {
    "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
    "type": "message",
    "role": "assistant",
    "model": CLAUDE,
    "content": [{"type": "text", "text": "Hello."}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": MESSAGE_USAGE,
}
ACCOUNT = "acme"


# -- canned provider answers --------------------------------------------------------------


def sse(events: list[tuple[str | None, Any]]) -> bytes:
    """A server-sent-events body: (event name or None, data) each."""
    lines = []
    for name, data in events:
        if name:
            lines.append(f"event: {name}")
        lines.append(f"data: {data if isinstance(data, str) else json.dumps(data)}")
        lines.append("")
    return ("\n".join(lines) + "\n").encode()


def chat_stream_body() -> bytes:
    base = {key: CHAT[key] for key in ("id", "created", "model")} | {"object": "chat.completion.chunk"}
    return sse([
        (None, base | {"choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hel"},
                                    "finish_reason": None}], "usage": None}),
        (None, base | {"choices": [{"index": 0, "delta": {"content": "lo."}, "finish_reason": "stop"}],
                       "usage": None}),
        (None, base | {"choices": [], "usage": CHAT_USAGE}),
        (None, "[DONE]"),
    ])


def responses_stream_body() -> bytes:
    started = RESPONSE | {"status": "in_progress", "output": [], "usage": None}
    return sse([
        ("response.created", {"type": "response.created", "sequence_number": 0, "response": started}),
        ("response.completed", {"type": "response.completed", "sequence_number": 1, "response": RESPONSE}),
    ])


def message_stream_body() -> bytes:
    start_usage = MESSAGE_USAGE | {"output_tokens": 1}
    started = MESSAGE | {"content": [], "stop_reason": None, "usage": start_usage}
    return sse([
        ("message_start", {"type": "message_start", "message": started}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": "Hello."}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                           "usage": {"output_tokens": MESSAGE_USAGE["output_tokens"]}}),
        ("message_stop", {"type": "message_stop"}),
    ])


Answer = tuple[int, bytes, str]


def json_answer(body: dict[str, Any]) -> Answer:
    return 200, json.dumps(body).encode(), "application/json"


def stream_answer(body: bytes) -> Answer:
    return 200, body, "text/event-stream"


def answering(answers: dict[str, Callable[[dict[str, Any]], Answer]], seen: list[str], module: Any):
    """A MockTransport handler of ``module`` (httpx or httpx2): path -> answer for the request's JSON."""

    def handle(request):
        seen.append(request.url.path)
        answer = answers.get(request.url.path)
        if answer is None:
            return module.Response(404, json={"error": {"message": f"no canned answer for {request.url.path}"}})
        status, content, content_type = answer(json.loads(request.content or b"{}"))
        return module.Response(status, content=content, headers={"content-type": content_type})

    return handle


@pytest.fixture
def requests_seen() -> list[str]:
    return []


@pytest.fixture(params=["httpx", "httpx2"])
def openai_client(request, requests_seen) -> Iterator[openai.OpenAI]:
    """The real OpenAI client over an httpx (or httpx2) Client whose transport answers from the canned JSON."""
    answers = {
        "/v1/chat/completions": lambda body: stream_answer(chat_stream_body()) if body.get("stream")
        else json_answer(CHAT),
        "/v1/responses": lambda body: stream_answer(responses_stream_body()) if body.get("stream")
        else json_answer(RESPONSE),
    }
    module = {"httpx": httpx, "httpx2": httpx2}[request.param]
    transport = module.MockTransport(answering(answers, requests_seen, module))
    with module.Client(transport=transport) as http_client:
        yield openai.OpenAI(api_key="sk-test", base_url="http://openai.test/v1",
                            http_client=http_client, max_retries=0)


@pytest.fixture
def anthropic_client(requests_seen) -> Iterator[anthropic.Anthropic]:
    """The real Anthropic client over an httpx2.Client (what anthropic 2.x takes) with canned answers."""
    answers = {
        "/v1/messages": lambda body: stream_answer(message_stream_body()) if body.get("stream")
        else json_answer(MESSAGE),
    }
    transport = httpx2.MockTransport(answering(answers, requests_seen, httpx2))
    with httpx2.Client(transport=transport) as http_client:
        yield anthropic.Anthropic(api_key="sk-ant-test", base_url="http://anthropic.test",
                                  http_client=http_client, max_retries=0)


# -- the ledger ---------------------------------------------------------------------------


@pytest.fixture
def priced(ledger: Ledger) -> dict[str, Price]:
    """Catalogue prices for both models, in effect before the canned responses."""
    return {
        GPT: ledger.set_price(provider="openai", model=GPT, prompt_micros_per_million=2_500_000,
                              completion_micros_per_million=10_000_000, effective_from="2026-01-01T00:00:00Z"),
        CLAUDE: ledger.set_price(provider="anthropic", model=CLAUDE, prompt_micros_per_million=3_000_000,
                                 completion_micros_per_million=15_000_000,
                                 effective_from="2026-01-01T00:00:00Z"),
    }


def stored(ledger: Ledger, charge_id: str) -> dict[str, Any]:
    """The charge as the ledger's charge index holds it."""
    with ledger.recorder.transaction(commit=False) as session:
        row = session.execute(
            sa.select(charge_index.c.payload).where(
                charge_index.c.account_id == ACCOUNT, charge_index.c.charge_id == charge_id
            )
        ).one()
    return json.loads(row.payload)


def record_and_check(ledger: Ledger, price: Price, fields: dict[str, Any], *, charge_id: str,
                     model: str, provider: str, prompt: int, completion: int) -> dict[str, Any]:
    """Record the helper's fields; the charge holds the response's facts and the catalogue's cost."""
    receipt = ledger.record_charge(**fields)
    charge = stored(ledger, charge_id)
    assert (receipt.charge_id, receipt.account_id, receipt.duplicate) == (charge_id, ACCOUNT, False)
    assert (charge["provider"], charge["model"]) == (provider, model)
    assert (charge["prompt_tokens"], charge["completion_tokens"], charge["total_tokens"]) == (
        prompt, completion, prompt + completion)
    assert receipt.price_version == price.version
    assert receipt.cost_micros == price.cost_micros(prompt, completion, prompt + completion) > 0
    return charge


def occurred(charge: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(charge["occurred_at"])


# -- one test per response shape ------------------------------------------------------------


def test_openai_chat_completion(ledger, priced, openai_client, requests_seen):
    completion = openai_client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Hi"}])
    fields = charge_fields(completion, account_id=ACCOUNT, user_id="ada")
    assert charge_fields(completion.model_dump(), account_id=ACCOUNT, user_id="ada") == fields

    charge = record_and_check(ledger, priced[GPT], fields, charge_id=CHAT["id"], model=GPT, provider="openai",
                              prompt=CHAT_USAGE["prompt_tokens"], completion=CHAT_USAGE["completion_tokens"])
    assert charge["user_id"] == "ada" and charge["charge_type"] == "completion"
    assert occurred(charge) == datetime.fromtimestamp(CREATED, UTC)
    cached = CHAT_USAGE["prompt_tokens_details"]["cached_tokens"]
    assert charge["reference"] == f"cache_read_tokens={cached}"
    assert requests_seen == ["/v1/chat/completions"]


def test_openai_chat_stream_final_chunk(ledger, priced, openai_client):
    stream = openai_client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Hi"}], stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    final = chunks[-1]
    assert final.choices == [] and final.usage is not None
    fields = charge_fields(final, account_id=ACCOUNT)
    assert charge_fields(chunks, account_id=ACCOUNT) == fields
    assert charge_fields(final.model_dump(), account_id=ACCOUNT) == fields
    with openai_client.chat.completions.stream(
        model="gpt-4o", messages=[{"role": "user", "content": "Hi"}], stream_options={"include_usage": True}
    ) as helper:
        assert charge_fields(helper.get_final_completion(), account_id=ACCOUNT) == fields

    with pytest.raises(UnreadableResponse, match="include_usage"):
        charge_fields(chunks[0], account_id=ACCOUNT)
    charge = record_and_check(ledger, priced[GPT], fields, charge_id=CHAT["id"], model=GPT, provider="openai",
                              prompt=CHAT_USAGE["prompt_tokens"], completion=CHAT_USAGE["completion_tokens"])
    assert occurred(charge) == datetime.fromtimestamp(CREATED, UTC)


def test_openai_responses_api(ledger, priced, openai_client):
    response = openai_client.responses.create(model="gpt-4o", input="Hi")
    fields = charge_fields(response, account_id=ACCOUNT, user_id="ada")
    assert charge_fields(response.model_dump(), account_id=ACCOUNT, user_id="ada") == fields

    charge = record_and_check(ledger, priced[GPT], fields, charge_id=RESPONSE["id"], model=GPT, provider="openai",
                              prompt=RESPONSE_USAGE["input_tokens"], completion=RESPONSE_USAGE["output_tokens"])
    assert occurred(charge) == datetime.fromtimestamp(CREATED, UTC)
    assert charge["reference"] == f"cache_read_tokens={RESPONSE_USAGE['input_tokens_details']['cached_tokens']}"


def test_openai_responses_stream_completed_event(ledger, priced, openai_client):
    events = list(openai_client.responses.create(model="gpt-4o", input="Hi", stream=True))
    completed = events[-1]
    assert completed.type == "response.completed"
    fields = charge_fields(completed, account_id=ACCOUNT)
    assert charge_fields(events, account_id=ACCOUNT) == fields
    assert charge_fields(completed.response, account_id=ACCOUNT) == fields
    with openai_client.responses.stream(model="gpt-4o", input="Hi") as helper:
        assert charge_fields(helper.get_final_response(), account_id=ACCOUNT) == fields

    with pytest.raises(UnreadableResponse, match="response.created event carries no usage"):
        charge_fields(events[0], account_id=ACCOUNT)
    record_and_check(ledger, priced[GPT], fields, charge_id=RESPONSE["id"], model=GPT, provider="openai",
                     prompt=RESPONSE_USAGE["input_tokens"], completion=RESPONSE_USAGE["output_tokens"])


def anthropic_prompt_tokens() -> int:
    """Every input token Anthropic billed: fresh, read from the cache and written to it."""
    return (MESSAGE_USAGE["input_tokens"] + MESSAGE_USAGE["cache_read_input_tokens"]
            + MESSAGE_USAGE["cache_creation_input_tokens"])


def test_anthropic_message_counts_cache_tokens_as_input(ledger, priced, anthropic_client, requests_seen):
    message = anthropic_client.messages.create(
        model="claude-sonnet-4-5", max_tokens=256, messages=[{"role": "user", "content": "Hi"}])
    fields = charge_fields(message, account_id=ACCOUNT, user_id="ada")
    assert "occurred_at" not in fields  # a message has no time: the ledger's clock, unchanged by a retry
    assert charge_fields(message.model_dump(), account_id=ACCOUNT, user_id="ada") == fields

    before = datetime.now(UTC)
    charge = record_and_check(ledger, priced[CLAUDE], fields, charge_id=MESSAGE["id"], model=CLAUDE,
                              provider="anthropic", prompt=anthropic_prompt_tokens(),
                              completion=MESSAGE_USAGE["output_tokens"])
    assert occurred(charge) >= before
    assert charge["reference"] == (
        f"cache_read_tokens={MESSAGE_USAGE['cache_read_input_tokens']} "
        f"cache_write_tokens={MESSAGE_USAGE['cache_creation_input_tokens']}"
    )
    assert requests_seen == ["/v1/messages"]


def test_anthropic_message_takes_the_time_given(ledger, priced, anthropic_client):
    message = anthropic_client.messages.create(
        model="claude-sonnet-4-5", max_tokens=256, messages=[{"role": "user", "content": "Hi"}])
    at = datetime(2026, 2, 1, 9, 30, tzinfo=UTC)
    fields = charge_fields(message, account_id=ACCOUNT, occurred_at=at, reference="req-42")
    charge = record_and_check(ledger, priced[CLAUDE], fields, charge_id=MESSAGE["id"], model=CLAUDE,
                              provider="anthropic", prompt=anthropic_prompt_tokens(),
                              completion=MESSAGE_USAGE["output_tokens"])
    assert occurred(charge) == at and charge["reference"] == "req-42"


def test_anthropic_stream_final_message_and_raw_events(ledger, priced, anthropic_client):
    request = {"model": "claude-sonnet-4-5", "max_tokens": 256, "messages": [{"role": "user", "content": "Hi"}]}
    with anthropic_client.messages.stream(**request) as stream:
        final = stream.get_final_message()
    events = list(anthropic_client.messages.create(**request, stream=True))
    fields = charge_fields(final, account_id=ACCOUNT)
    assert charge_fields(events, account_id=ACCOUNT) == fields
    assert charge_fields([event.model_dump() for event in events], account_id=ACCOUNT) == fields

    delta = next(event for event in events if event.type == "message_delta")
    with pytest.raises(UnreadableResponse, match="get_final_message"):
        charge_fields(delta, account_id=ACCOUNT)
    unfinished = [event for event in events if event.type != "message_delta"]
    with pytest.raises(UnreadableResponse, match="did not finish"):
        charge_fields(unfinished, account_id=ACCOUNT)
    record_and_check(ledger, priced[CLAUDE], fields, charge_id=MESSAGE["id"], model=CLAUDE, provider="anthropic",
                     prompt=anthropic_prompt_tokens(), completion=MESSAGE_USAGE["output_tokens"])


# -- retries and refusals -------------------------------------------------------------------


def test_a_retry_of_the_same_response_counts_once(ledger, priced, openai_client, anthropic_client):
    completion = openai_client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Hi"}])
    message = anthropic_client.messages.create(
        model="claude-sonnet-4-5", max_tokens=256, messages=[{"role": "user", "content": "Hi"}])
    firsts = [ledger.record_charge(**charge_fields(response, account_id=ACCOUNT))
              for response in (completion, message)]
    totals = ledger.account_totals(ACCOUNT)

    # The same responses again (a retried job, a replayed log): from dicts this time, later.
    again = [ledger.record_charge(**charge_fields(response.model_dump(), account_id=ACCOUNT))
             for response in (completion, message)]
    assert [receipt.duplicate for receipt in again] == [True, True]
    assert [receipt.cost_micros for receipt in again] == [receipt.cost_micros for receipt in firsts]
    assert ledger.account_totals(ACCOUNT) == totals
    assert totals.charges == 2
    assert totals.cost_micros == sum(receipt.cost_micros for receipt in firsts)


def test_missing_usage_is_refused_never_a_zero_charge(ledger, openai_client, anthropic_client):
    completion = openai_client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Hi"}])
    message = anthropic_client.messages.create(
        model="claude-sonnet-4-5", max_tokens=256, messages=[{"role": "user", "content": "Hi"}])
    without_usage = [
        completion.model_dump() | {"usage": None},
        {key: value for key, value in message.model_dump().items() if key != "usage"},
        RESPONSE | {"usage": None, "status": "failed"},
    ]
    for response in without_usage:
        with pytest.raises(UnreadableResponse) as refused:
            charge_fields(response, account_id=ACCOUNT)
        assert refused.value.errors.keys() == {"response.usage"}
        assert "carries no usage" in str(refused.value)

    partial = completion.model_dump()
    del partial["usage"]["completion_tokens"]
    with pytest.raises(UnreadableResponse, match="response.usage.completion_tokens: missing"):
        charge_fields(partial, account_id=ACCOUNT)
    with pytest.raises(UnknownAccount):  # nothing was recorded for the account
        ledger.account_totals(ACCOUNT)


@pytest.mark.parametrize("response, named", [
    ({"object": "embedding", "data": []}, "'embedding'"),
    ({"hello": "world"}, "None"),
    ("chatcmpl-1", "a str"),
    ([], "empty"),
    ([{"object": "chat.completion.chunk", "usage": None}], "include_usage"),
    (CHAT | {"id": None}, "response.id: missing"),
    (CHAT | {"usage": CHAT_USAGE | {"prompt_tokens": 1.5}}, "expected a non-negative integer, got 1.5"),
    (CHAT | {"created": "yesterday"}, "expected unix seconds"),
])
def test_unknown_or_broken_shapes_name_what_is_wrong(response, named):
    with pytest.raises(UnreadableResponse, match="invalid SDK response") as refused:
        charge_fields(response, account_id=ACCOUNT)
    assert named in str(refused.value)


def test_a_reservation_captures_the_response(ledger, priced, anthropic_client):
    """A gateway's hold is settled by the response's own fields (the charge id is the message id)."""
    ledger.set_budget("acme-monthly", account_id=ACCOUNT, limit_micros=1_000_000)
    with ledger.reservation(ACCOUNT, user_id="ada", estimate_micros=50_000) as hold:
        message = anthropic_client.messages.create(
            model="claude-sonnet-4-5", max_tokens=256, messages=[{"role": "user", "content": "Hi"}])
        receipt = hold.capture(**charge_fields(message, account_id=ACCOUNT, user_id="ada"))
    assert ledger.reservation_state(hold.reservation_id) == "captured"
    assert (receipt.charge_id, receipt.reservation_id) == (MESSAGE["id"], hold.reservation_id)
    prompt, completion = anthropic_prompt_tokens(), MESSAGE_USAGE["output_tokens"]
    assert receipt.cost_micros == priced[CLAUDE].cost_micros(prompt, completion, prompt + completion)
    assert ledger.budget_status("acme-monthly").spent_micros == receipt.cost_micros


def test_an_anthropic_stream_s_last_counts_supersede_its_first():
    """message_delta's usage is cumulative: its input and cache counts, when present, replace message_start's."""
    start_usage = {"input_tokens": 5, "output_tokens": 1, "cache_read_input_tokens": 0,
                   "cache_creation_input_tokens": 0}
    events = [
        {"type": "message_start", "message": MESSAGE | {"content": [], "usage": start_usage}},
        {"type": "message_delta", "delta": {"stop_reason": None}, "usage": {"output_tokens": 40}},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
         "usage": MESSAGE_USAGE | {"input_tokens": 7}},
    ]
    fields = charge_fields(events, account_id=ACCOUNT)
    last = events[-1]["usage"]
    assert fields["prompt_tokens"] == (last["input_tokens"] + last["cache_read_input_tokens"]
                                       + last["cache_creation_input_tokens"])
    assert fields["completion_tokens"] == last["output_tokens"]
    assert fields["charge_id"] == MESSAGE["id"]


def test_an_anthropic_beta_message_counts_its_compaction_iterations(ledger, priced, requests_seen):
    """A compaction iteration is not in the top-level usage: the charge counts every iteration."""
    iterations = [
        {"type": "compaction", "input_tokens": 150_000, "output_tokens": 3_000,
         "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0},
        {"type": "message", "input_tokens": 40, "output_tokens": 120,
         "cache_read_input_tokens": 3_000, "cache_creation_input_tokens": 0},
    ]
    last = iterations[-1]
    body = MESSAGE | {"usage": {key: last[key] for key in MESSAGE_USAGE} | {"iterations": iterations}}
    transport = httpx2.MockTransport(answering({"/v1/messages": lambda _: json_answer(body)}, requests_seen, httpx2))
    with httpx2.Client(transport=transport) as http_client:
        client = anthropic.Anthropic(api_key="sk-ant-test", base_url="http://anthropic.test",
                                     http_client=http_client, max_retries=0)
        message = client.beta.messages.create(
            model="claude-sonnet-4-5", max_tokens=256, messages=[{"role": "user", "content": "Hi"}])
    assert len(message.usage.iterations) == len(iterations)
    fields = charge_fields(message, account_id=ACCOUNT)
    assert charge_fields(message.model_dump(), account_id=ACCOUNT) == fields

    prompt = sum(it["input_tokens"] + it["cache_read_input_tokens"] + it["cache_creation_input_tokens"]
                 for it in iterations)
    completion = sum(it["output_tokens"] for it in iterations)
    record_and_check(ledger, priced[CLAUDE], fields, charge_id=MESSAGE["id"], model=CLAUDE, provider="anthropic",
                     prompt=prompt, completion=completion)
