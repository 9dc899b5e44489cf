"""The key cache: a verified key is trusted for its time only, then looked up again."""

from __future__ import annotations

from datetime import datetime, timezone

from ledger_service.keys import ApiKey, KeyCache

KEY = ApiKey(id="0123456789abcdef", role="admin", account_id=None, name="", created_at=datetime.now(timezone.utc))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_key_is_held_for_its_time_only():
    clock = Clock()
    cache = KeyCache(1.5, clock=clock)
    assert cache.get("secret") is None
    cache.put("secret", KEY)
    clock.now += 1.4
    assert cache.get("secret") == KEY
    assert cache.get("other") is None
    clock.now += 0.1
    assert cache.get("secret") is None


def test_zero_seconds_holds_nothing():
    cache = KeyCache(0)
    cache.put("secret", KEY)
    assert cache.get("secret") is None


def test_a_full_cache_drops_expired_keys_first_and_stays_bounded():
    clock = Clock()
    cache = KeyCache(1.0, size=2, clock=clock)
    cache.put("a", KEY)
    clock.now += 2
    cache.put("b", KEY)
    cache.put("c", KEY)  # full: "a" has expired and goes
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (None, KEY, KEY)
    cache.put("d", KEY)  # full of live keys: all go, the new one stays
    assert (cache.get("b"), cache.get("c"), cache.get("d")) == (None, None, KEY)
