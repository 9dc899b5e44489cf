"""Group commit coordination: every caller gets its own results, after its commit."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from ledger.group_commit import GroupCommit


class SlowStore:
    """An append function that takes a while, so callers pile up behind it."""

    def __init__(self, fail_on=None):
        self.committed: list = []
        self.batches: list[int] = []
        self.fail_on = fail_on
        self.lock = threading.Lock()

    def __call__(self, items, recorded_at):
        time.sleep(0.002)
        if self.fail_on is not None and self.fail_on in items:
            raise ValueError(f"bad item {self.fail_on}")
        with self.lock:
            self.committed.extend(items)
            self.batches.append(len(items))
        return [f"ok-{item}" for item in items]


def test_lone_caller_commits_its_own_batch():
    store = SlowStore()
    group = GroupCommit(store)
    results, recorded_at = group.submit([1, 2])
    assert results == ["ok-1", "ok-2"] and recorded_at.tzinfo is not None
    assert store.batches == [2] and group.transactions == 1


def test_concurrent_callers_share_transactions_and_get_their_own_results():
    store = SlowStore()
    group = GroupCommit(store)
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda i: group.submit([i])[0], range(400)))
    assert results == [[f"ok-{i}"] for i in range(400)]
    assert sorted(store.committed) == list(range(400))
    assert group.transactions < 400 and max(store.batches) > 1


def test_a_failing_item_fails_only_its_caller():
    store = SlowStore(fail_on=13)
    group = GroupCommit(store)

    def submit(i):
        try:
            return group.submit([i])[0]
        except ValueError as exc:
            return str(exc)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(submit, range(40)))
    assert results[13] == "bad item 13"
    assert all(results[i] == [f"ok-{i}"] for i in range(40) if i != 13)
    assert sorted(store.committed) == [i for i in range(40) if i != 13]


def test_batches_respect_the_item_limit():
    store = SlowStore()
    group = GroupCommit(store, max_items=10)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: group.submit([i, -i]), range(100)))
    assert max(store.batches) <= 10 and sum(store.batches) == 200


def test_single_failure_is_raised():
    group = GroupCommit(SlowStore(fail_on=1))
    with pytest.raises(ValueError):
        group.submit([1])


def test_without_a_window_callers_queued_behind_a_commit_still_share_the_next():
    store = SlowStore()
    group = GroupCommit(store, window=0)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: group.submit([i])[0], range(200)))
    assert results == [[f"ok-{i}"] for i in range(200)]
    assert max(store.batches) > 1 and sum(store.batches) == 200


def test_leadership_passes_on_after_a_failed_batch():
    store = SlowStore(fail_on=0)
    group = GroupCommit(store)
    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(lambda i: _outcome(group, i), range(64)))
    assert outcomes[0] == "bad item 0" and outcomes[1:] == [[f"ok-{i}"] for i in range(1, 64)]
    assert group.submit([99])[0] == ["ok-99"]  # nobody is left holding the lead


def _outcome(group: GroupCommit, i: int):
    try:
        return group.submit([i])[0]
    except ValueError as exc:
        return str(exc)
