"""Budget alerts delivered as signed webhooks, at least once.

Firing an alert (:func:`ledger.alerts.check`) queues one pending delivery per
endpoint in the same transaction (the outbox, ``ledger_webhook_deliveries``).
:func:`deliver_due` empties what is due: it claims deliveries
(:mod:`ledger.store.webhook_deliveries`), POSTs each alert's stored body,
signed with the endpoint's secret, and records the outcome. A 2xx is
delivered; any other answer, a timeout or a refused connection is retried
after a backoff that starts within seconds and doubles up to a cap, with
jitter, until the delivery is given up as failed after its last attempt.

At least once: a process that dies between a POST and its record leaves the
delivery claimed, and it is posted again once the claim lapses. Every POST
of one alert carries the alert id (body ``id``, ``Idempotency-Key`` and
``Ledger-Alert-Id``), so the receiver deduplicates.

The worker runs :func:`check_and_deliver` every ``budget_check_seconds``
(``jobs.tasks.check_budgets``), so a threshold crossed by plain charges is
noticed and announced within that time; ``ledger webhooks deliver`` does the
same once, in its own process.
"""

from __future__ import annotations

import http.client
import logging
import random
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from jobs import runtime
from jobs.schedule import ConfiguredInterval
from ledger.budget_rules import utc_now
from ledger.store import budgets as budget_store
from ledger.store import webhook_deliveries as store
from ledger.webhooks import SIGNATURE_HEADER, sign

if TYPE_CHECKING:
    from ledger.application import Ledger
    from ledger.settings import JobsSettings

log = logging.getLogger("jobs.webhooks")

ALERT_ID_HEADER = "Ledger-Alert-Id"
IDEMPOTENCY_HEADER = "Idempotency-Key"
USER_AGENT = "llm-usage-ledger-webhooks/1"
#: Deliveries claimed and posted together (each POST in a thread of its own).
CONCURRENCY = 8
#: Bytes of a refusing receiver's answer kept in the log.
ERROR_SNIPPET_BYTES = 200


def _check_seconds() -> float:
    return runtime.settings().jobs.budget_check_seconds


#: When the worker checks budgets and delivers: every ``budget_check_seconds``, read on first use.
BUDGET_CHECK_SCHEDULE = ConfiguredInterval(_check_seconds)


@dataclass(frozen=True)
class DeliveryResult:
    """One attempt and where it left its delivery.

    ``state`` is ``delivered``, ``pending`` (retried at ``next_attempt_at``) or
    ``failed`` (given up). ``recorded`` is False when the delivery had moved
    on while it was posted (its endpoint was removed): nothing was changed.
    """

    alert_id: str
    endpoint_id: str
    url: str
    attempt: int
    state: str
    status: int | None
    error: str | None
    next_attempt_at: datetime | None
    recorded: bool = True

    @property
    def delivered(self) -> bool:
        return self.state == store.DELIVERED

    def to_dict(self) -> dict[str, Any]:
        return {
            "alert_id": self.alert_id, "endpoint_id": self.endpoint_id, "url": self.url,
            "attempt": self.attempt, "state": self.state, "status": self.status, "error": self.error,
            "next_attempt_at": None if self.next_attempt_at is None else self.next_attempt_at.isoformat(),
            "recorded": self.recorded,
        }


@dataclass(frozen=True)
class Answer:
    """What one POST got: an HTTP status, or the error that stopped it (status None)."""

    status: int | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is a failed attempt: the signed body goes to the registered URL only."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirects)


def post(url: str, body: bytes, *, secret: str, alert_id: str, timeout: float) -> Answer:
    """POST ``body`` signed with ``secret``; never raises for what the network or receiver does."""
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        SIGNATURE_HEADER: sign(secret, body),
        IDEMPOTENCY_HEADER: alert_id,
        ALERT_ID_HEADER: alert_id,
    })
    try:
        with _opener.open(request, timeout=timeout) as response:
            return Answer(response.status)
    except urllib.error.HTTPError as exc:
        return Answer(exc.code, _refusal(exc))
    except urllib.error.URLError as exc:
        reason = exc.reason
        text = f"{type(reason).__name__}: {reason}" if isinstance(reason, BaseException) else str(reason)
        return Answer(None, text)
    except (OSError, http.client.HTTPException, ValueError) as exc:  # timeout on read, reset, bad answer
        return Answer(None, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)


def _refusal(exc: urllib.error.HTTPError) -> str:
    """``HTTP 503: <the start of the answer>``, for the delivery log."""
    try:
        snippet = exc.read(ERROR_SNIPPET_BYTES).decode("utf-8", "replace").strip()
    except Exception:  # noqa: BLE001 - the status is what matters; the text is a courtesy
        snippet = ""
    finally:
        exc.close()
    return f"HTTP {exc.code}: {snippet}" if snippet else f"HTTP {exc.code}"


def retry_delay(attempt: int, jobs: JobsSettings, rng: random.Random | None = None) -> float:
    """Seconds before the attempt after failed attempt ``attempt`` (1-based).

    ``webhook_retry_first_seconds`` doubled per attempt, capped at
    ``webhook_retry_max_seconds``, less up to 20% at random so deliveries
    that failed together (a receiver's outage) do not all return together.
    """
    delay = min(jobs.webhook_retry_max_seconds, jobs.webhook_retry_first_seconds * 2.0 ** min(attempt - 1, 64))
    return delay * (rng or random).uniform(0.8, 1.0)


def deliver_due(
    ledger: Ledger, *, now: datetime | None = None, limit: int = 100, settings: JobsSettings | None = None
) -> list[DeliveryResult]:
    """Deliver the pending webhooks due at ``now`` (default: the clock); at most ``limit`` attempts.

    Only what is due when the call starts is attempted, so a delivery that
    fails is retried by a later call, after its backoff. ``now`` also
    serves as the clock for the claims and retries it sets (a test's
    fast-forward). ``settings`` is the jobs section (default: this process's).
    """
    jobs = settings or runtime.settings().jobs
    cutoff = now if now is not None else utc_now()
    results: list[DeliveryResult] = []
    with ledger.store.transaction(commit=False) as session:
        if not store.any_due(session, cutoff):
            return results  # the usual case, found without SQLite's write lock
    while len(results) < limit:
        clock = now if now is not None else utc_now()
        with ledger.store.transaction(commit=True) as session:
            claims = store.claim_due(session, ledger.store.dialect, cutoff,
                                     clock + timedelta(seconds=jobs.webhook_claim_seconds),
                                     min(CONCURRENCY, limit - len(results)))
        if not claims:
            break
        answers = _post_all(claims, jobs.webhook_timeout_seconds)
        results.extend(_record(ledger, claims, answers, jobs, now))
    return results


def _post_all(claims: list[store.Claim], timeout: float) -> list[Answer]:
    """POST the claimed deliveries side by side (a slow receiver holds up none of the others)."""
    def one(claim: store.Claim) -> Answer:
        return post(claim.url, claim.body, secret=claim.secret, alert_id=claim.alert_id, timeout=timeout)

    if len(claims) == 1:
        return [one(claims[0])]
    with ThreadPoolExecutor(max_workers=len(claims), thread_name_prefix="webhook") as pool:
        return list(pool.map(one, claims))


def _record(
    ledger: Ledger, claims: list[store.Claim], answers: list[Answer], jobs: JobsSettings, now: datetime | None
) -> list[DeliveryResult]:
    """Record each attempt's outcome in one transaction; the results."""
    at = now if now is not None else utc_now()
    results: list[DeliveryResult] = []
    with ledger.store.transaction(commit=True) as session:
        for claim, answer in zip(claims, answers):
            if answer.ok:
                assert answer.status is not None
                recorded = store.record_delivered(session, claim, answer.status, at)
                state, retry_at = store.DELIVERED, None
            else:
                give_up = claim.attempt >= jobs.webhook_max_attempts
                retry_at = None if give_up else at + timedelta(seconds=retry_delay(claim.attempt, jobs))
                recorded = store.record_failed(session, claim, answer.status, answer.error or "", retry_at)
                state = store.FAILED if give_up else store.PENDING
            results.append(DeliveryResult(claim.alert_id, claim.endpoint_id, claim.url, claim.attempt, state,
                                          answer.status, answer.error, retry_at, recorded))
    for result in results:
        _log_result(result)
    return results


def _log_result(result: DeliveryResult) -> None:
    where = f"alert {result.alert_id} to {result.endpoint_id} ({result.url}), attempt {result.attempt}"
    if not result.recorded:
        log.info("%s: its endpoint was removed meanwhile; nothing recorded", where)
    elif result.delivered:
        log.info("%s: delivered (HTTP %s)", where, result.status)
    elif result.state == store.FAILED:
        log.error("%s failed (%s); gave up after the last attempt", where, result.error)
    else:
        assert result.next_attempt_at is not None
        log.warning("%s failed (%s); retrying at %s", where, result.error,
                    result.next_attempt_at.isoformat(timespec="seconds"))


@dataclass(frozen=True)
class CheckSummary:
    """What one check-and-deliver run did."""

    fired: int
    results: list[DeliveryResult]

    @property
    def soonest_retry(self) -> datetime | None:
        """When the earliest delivery this run retries is due again, if any."""
        due = [r.next_attempt_at for r in self.results if r.recorded and r.next_attempt_at is not None]
        return min(due) if due else None

    def retry_in(self) -> float | None:
        """Seconds until :attr:`soonest_retry` (0 if past), or None."""
        soonest = self.soonest_retry
        return None if soonest is None else max((soonest - utc_now()).total_seconds(), 0.0)

    def to_dict(self) -> dict[str, Any]:
        counts = {state: sum(r.state == state and r.recorded for r in self.results)
                  for state in (store.DELIVERED, store.PENDING, store.FAILED)}
        return {"fired": self.fired, "attempts": len(self.results), **counts}


def watching(ledger: Ledger) -> bool:
    """Whether any budget has thresholds to fire: the check's runs between two minutes are worth it.

    A ledger without such budgets gets the periodic check once a minute
    only, and leaves nothing on the schedule.
    """
    with ledger.store.transaction(commit=False) as session:
        return any(row["thresholds"] for row in budget_store.budget_rows(session))


def check_and_deliver(
    ledger: Ledger, *, check: bool = True, settings: JobsSettings | None = None, limit: int = 100
) -> CheckSummary:
    """Fold budget spend and fire the thresholds every budget crossed (when ``check``), then deliver what is due.

    Both steps first look (reading only) whether there is anything to do, so
    a ledger without budgets or due deliveries never waits for SQLite's
    write lock here.
    """
    fired = []
    if check and watching(ledger):
        ledger.fold_spend()  # keeps budget reads short on accounts that record without reserving
        fired = ledger.check_budget_alerts()
    return CheckSummary(len(fired), deliver_due(ledger, limit=limit, settings=settings))


def delivery_log(
    ledger: Ledger, *, account_id: str | None = None, state: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    """The delivery log: each alert per endpoint, its state, attempts and last outcome; newest first."""
    with ledger.store.transaction(commit=False) as session:
        return store.delivery_log(session, account_id=account_id, state=state, limit=limit)
