"""Upgrade in place: a PostgreSQL ledger made by the previous release keeps working.

The previous release (the commit below, taken from this repository's own
history) records charges, projects, compacts closed days and leaves some
charges unprojected, in a process of its own. This release then opens the
same database: it migrates at start, records more, and an old-release
process keeps recording beside it (as during a rolling upgrade). Nothing is
lost or counted twice, repeats of old ids are duplicates, and the audit is
clean.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import io
import textwrap
from pathlib import Path

import pytest

from ledger import Ledger, Settings, Totals
from projections import Projector, audit

pytestmark = pytest.mark.postgres

#: The last release whose PostgreSQL writers appended under the events table's lock.
PREVIOUS_RELEASE = "fd4090cc9597eafc61016dab510c19b503615e29"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def previous_release(tmp_path_factory) -> Path:
    """The previous release's packages, exported from git history (never skipped)."""
    target = tmp_path_factory.mktemp("previous-release")
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", PREVIOUS_RELEASE, "ledger", "projections"],
        check=True, capture_output=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(target)
    return target


def run_old(release: Path, url: str, script: str) -> str:
    """Run ``script`` with the previous release's ``ledger`` and ``projections`` imported."""
    prelude = textwrap.dedent(
        f"""
        import ledger, projections
        assert ledger.__file__.startswith({str(release)!r}), ledger.__file__
        from datetime import date, timedelta
        from ledger import Ledger, Settings
        from ledger.compaction import compact
        from projections import Projector
        url = {url!r}
        def charge(n, account):
            return dict(charge_id=f"c-{{n}}", account_id=account, user_id="u", charge_type="completion",
                        prompt_tokens=n % 50, completion_tokens=n % 7,
                        occurred_at=f"2026-01-0{{1 + n % 4}}T12:00:00+00:00")
        """
    )
    env = {**os.environ, "PYTHONPATH": str(release)}
    result = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(script)],
        env=env, cwd=release, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


def charge(n: int, account: str) -> dict:
    return dict(charge_id=f"c-{n}", account_id=account, user_id="u", charge_type="completion",
                prompt_tokens=n % 50, completion_tokens=n % 7, occurred_at=f"2026-01-0{1 + n % 4}T12:00:00+00:00")


def expected(numbers: range, account_of) -> dict[str, Totals]:
    totals: dict[str, Totals] = {}
    for n in numbers:
        p, q = n % 50, n % 7
        a = account_of(n)
        totals[a] = totals.get(a, Totals()) + Totals.of_unpriced(1, p, q, p + q)
    return totals


def account_of(n: int) -> str:
    return ("big", "small")[n % 3 == 0]


def test_a_ledger_of_the_previous_release_upgrades_in_place(postgres_url, previous_release):
    # The previous release: 300 charges, projected, closed days compacted, 50 more unprojected.
    out = run_old(previous_release, postgres_url, """
        ledger = Ledger(Settings(database_url=url))
        for n in range(300):
            ledger.record_charge(**charge(n, ("big", "small")[n % 3 == 0]))
        projector = Projector(ledger)
        projector.run()
        result = compact(ledger, before=date(2026, 1, 4), projected_position=projector.position(),
                         grace=timedelta(0))
        assert result.days > 0 and result.events_pruned > 0, result
        for n in range(300, 350):
            ledger.record_charge(**charge(n, ("big", "small")[n % 3 == 0]))
        ledger.close()
        print("days", result.days)
    """)
    assert out.startswith("days")

    ledger = Ledger(Settings(database_url=postgres_url))  # this release: migrates at start
    try:
        for n in range(340, 400):  # 340-349 repeat old ids: duplicates, not new charges
            receipt = ledger.record_charge(**charge(n, account_of(n)))
            assert receipt.duplicate == (n < 350)
        outcomes = ledger.record_charges([charge(n, account_of(n)) for n in range(400, 450)])
        assert all(o.ok and not o.receipt.duplicate for o in outcomes)
        # A process of the previous release still running during the upgrade.
        run_old(previous_release, postgres_url, """
            ledger = Ledger(Settings(database_url=url))
            for n in range(440, 500):
                ledger.record_charge(**charge(n, ("big", "small")[n % 3 == 0]))
            ledger.close()
        """)
        for n in range(500, 520):
            ledger.record_charge(**charge(n, account_of(n)))
        projector = Projector(ledger)
        projector.run()
        for account, totals in expected(range(520), account_of).items():
            assert ledger.account_totals(account) == totals, account
        result = audit(ledger, catch_up=True)
        assert result.clean, result.to_dict()
        assert result.conservation.records["charges"] == 520
    finally:
        ledger.close()
    # A fresh process of this release agrees.
    fresh = Ledger(Settings(database_url=postgres_url))
    try:
        assert fresh.account_totals("big") == expected(range(520), account_of)["big"]
    finally:
        fresh.close()
