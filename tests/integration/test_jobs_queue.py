"""The queue from its URL, tasks made with a fixed charge id, and an in-process consumer on memory://."""

from __future__ import annotations

from datetime import datetime

import pytest
from huey import MemoryHuey, RedisHuey, SqliteHuey

from jobs import aggregate_daily_billing_records, create_charge, huey
from jobs.queue import default_queue_url, describe, make_huey, queue_url, storage_for, use_queue
from jobs.rejected import list_rejected
from jobs.tasks import close_ledger, get_ledger
from ledger import InvalidCharge, Settings
from ledger.settings import JobsSettings


def test_queue_urls_map_to_huey_storages(tmp_path):
    huey_class, kwargs = storage_for(f"sqlite:///{tmp_path}/q.db")
    assert issubclass(huey_class, SqliteHuey) and kwargs == {"filename": f"{tmp_path}/q.db"}
    huey_class, kwargs = storage_for("redis://127.0.0.1:6379/14")
    assert issubclass(huey_class, RedisHuey) and kwargs == {"url": "redis://127.0.0.1:6379/14"}
    huey_class, kwargs = storage_for("memory://")
    assert issubclass(huey_class, MemoryHuey) and kwargs == {}
    for bad in ("sqlite://", "sqlite:///:memory:", "amqp://broker", "q.db"):
        with pytest.raises(ValueError):
            storage_for(bad)


def test_the_default_queue_sits_beside_a_sqlite_ledger_or_in_the_working_directory(tmp_path, monkeypatch):
    beside = Settings(database_url=f"sqlite:///{tmp_path / 'data' / 'ledger.db'}")
    assert default_queue_url(beside) == f"sqlite:///{tmp_path / 'data' / 'ledger-queue.db'}"
    monkeypatch.chdir(tmp_path)
    on_postgres = Settings(database_url="postgresql+psycopg2://postgres@127.0.0.1/x")
    assert default_queue_url(on_postgres) == f"sqlite:///{tmp_path / 'ledger-queue.db'}"
    assert queue_url(Settings(database_url="sqlite:///x.db"), JobsSettings(huey_url="memory://")) == "memory://"


def test_make_huey_creates_no_file_until_used_and_describes_where_it_lives(tmp_path):
    path = tmp_path / "queue.db"
    instance = make_huey(f"sqlite:///{path}")
    assert not path.exists() and describe(instance) == f"SQLite file {path} (queue 'ledger')"
    assert instance.pending_count() == 0 and path.exists()
    assert describe(make_huey("redis://127.0.0.1:6379/14")) == \
        "Redis 127.0.0.1:6379 db 14 (key 'huey.redis.ledger')"
    assert describe(make_huey("memory://")).startswith("memory")


def test_a_charge_task_has_its_id_and_time_fixed_when_made():
    made = create_charge.s(user_profile_id=123, charge_type="usage", prompt_tokens=100)
    assert made.kwargs["charge_id"] == made.id
    assert datetime.fromisoformat(made.kwargs["occurred_at"]).tzinfo is not None
    given = create_charge.s(charge_id="call-9", occurred_at="2026-05-01T00:00:00Z",
                            retries=3, retry_delay=0.5)
    assert given.kwargs["charge_id"] == "call-9" and given.kwargs["occurred_at"] == "2026-05-01T00:00:00Z"
    assert (given.retries, given.retry_delay) == (3, 0.5)
    # What a consumer reads back from the queue is the same task.
    again = huey.deserialize_task(huey.serialize_task(made))
    assert (again.id, again.kwargs) == (made.id, made.kwargs)


@pytest.fixture
def in_process(tmp_path, monkeypatch):
    """jobs.huey on memory://, a ledger on a temp SQLite file, consumer threads in this process."""
    monkeypatch.setenv("LEDGER_DATABASE_URL", f"sqlite:///{tmp_path / 'ledger.db'}")
    close_ledger()
    use_queue(huey, "memory://")
    consumer = huey.create_consumer(workers=2, periodic=False, max_delay=0.1)
    consumer.scheduler.start()  # not consumer.start(): that would take over pytest's signals
    for _, thread in consumer.worker_threads:
        thread.start()
    try:
        yield consumer
    finally:
        consumer.stop(graceful=True)
        close_ledger()
        use_queue(huey, queue_url())


def test_an_in_process_consumer_on_memory_records_and_aggregates(in_process):
    result = create_charge.delay(user_profile_id=5, charge_type="tool", prompt_tokens=2, completion_tokens=1)
    summary = aggregate_daily_billing_records.schedule(delay=0.5).get(blocking=True, timeout=30)
    ledger = get_ledger()
    assert ledger.store.find_charge("profile-5", result.id) is not None
    assert summary["position"] == ledger.recorder.max_notification_id()
    assert ledger.account_totals("profile-5").total_tokens == 3


def test_call_local_records_synchronously_and_raises_instead_of_keeping(tmp_path, monkeypatch):
    monkeypatch.setenv("LEDGER_DATABASE_URL", f"sqlite:///{tmp_path / 'ledger.db'}")
    close_ledger()
    try:
        create_charge.call_local(account_id="acme", charge_id="sync-1", charge_type="usage", prompt_tokens=4)
        assert get_ledger().account_totals("acme").prompt_tokens == 4
        with pytest.raises(InvalidCharge) as caught:
            create_charge.call_local(account_id="acme", charge_type="usage", colour="blue")
        assert caught.value.errors == {"colour": "unknown field"}
        assert list_rejected(get_ledger()) == []  # the caller got the error: nothing to keep
    finally:
        close_ledger()
