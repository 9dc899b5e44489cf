"""Upgrade in place: a ledger made by an earlier release keeps working, on both stores.

Earlier releases (the commits below, taken from this repository's own
history) kept charge ids in one global table. An earlier release records
charges, projects, compacts closed days and leaves some charges unprojected,
in a process of its own. This release then opens the same store: it moves
the index to (account, charge id) at start, records more, and every id
recorded before keeps its duplicate detection within its account, while
another account may now use the same id. A process of an earlier release,
started after the upgrade or still running through it, is refused with a
message naming the upgrade and stores nothing (docs/UPGRADING.md). Nothing
is lost or counted twice, and the audit is clean.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest
import sqlalchemy as sa

from ledger import Ledger, Settings, Totals
from projections import Projector, audit

#: The release before per-account ids (the durable intake), and the one
#: before it (PostgreSQL writers appending under the events table's lock).
PREVIOUS_RELEASES = {
    "intake": "878d20ef3253e11628f9c73e0d65ac4c456c399b",
    "locked": "fd4090cc9597eafc61016dab510c19b503615e29",
}
ROOT = Path(__file__).resolve().parents[2]

#: What a refused write of an earlier release says, per store.
REFUSAL = {
    "postgres": "this ledger keeps charge ids per account",
    "sqlite": "charge_ids_are_per_account_now_upgrade_this_ledger_process",
}

PRELUDE = """
import ledger, projections, sys
assert ledger.__file__.startswith({release!r}), ledger.__file__
from datetime import date, timedelta
from ledger import Ledger, Settings
from ledger.compaction import compact
from projections import Projector
url = {url!r}
def charge(n, account):
    return dict(charge_id=f"c-{{n}}", account_id=account, user_id="u", charge_type="completion",
                prompt_tokens=n % 50, completion_tokens=n % 7,
                occurred_at=f"2026-01-0{{1 + n % 4}}T12:00:00+00:00")
def account_of(n):
    return ("big", "small")[n % 3 == 0]
"""


@pytest.fixture(scope="module", params=sorted(PREVIOUS_RELEASES))
def previous_release(request, tmp_path_factory) -> Path:
    """An earlier release's packages, exported from git history (never skipped)."""
    target = tmp_path_factory.mktemp(f"release-{request.param}")
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", PREVIOUS_RELEASES[request.param],
         "ledger", "projections"],
        check=True, capture_output=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(target)
    return target


def old_process(release: Path, url: str, script: str, **popen: object) -> subprocess.Popen:
    """Start ``script`` with the earlier release's ``ledger`` and ``projections`` imported."""
    source = PRELUDE.format(release=str(release), url=url) + textwrap.dedent(script)
    env = {**os.environ, "PYTHONPATH": str(release)}
    return subprocess.Popen([sys.executable, "-c", source], env=env, cwd=release, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)


def run_old(release: Path, url: str, script: str) -> str:
    process = old_process(release, url, script)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-4000:]
    return out


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


def store_of(url: str) -> str:
    return "postgres" if url.startswith("postgresql") else "sqlite"


def index_rows(ledger: Ledger) -> int:
    engine = ledger.recorder.datastore.engine
    with engine.connect() as connection:
        return connection.execute(sa.text("SELECT count(*) FROM ledger_charge_index")).scalar_one()


OLD_HISTORY = """
    ledger = Ledger(Settings(database_url=url))
    for n in range(300):
        ledger.record_charge(**charge(n, account_of(n)))
    projector = Projector(ledger)
    projector.run()
    result = compact(ledger, before=date(2026, 1, 4), projected_position=projector.position(),
                     grace=timedelta(0))
    assert result.days > 0 and result.events_pruned > 0, result
    for n in range(300, 350):
        ledger.record_charge(**charge(n, account_of(n)))
    ledger.close()
    print("days", result.days)
"""

#: An earlier-release process that records, says so, then waits to record once more.
RUNNING_THROUGH = """
    ledger = Ledger(Settings(database_url=url))
    ledger.record_charge(**charge(350, account_of(350)))
    print("ready", flush=True)
    sys.stdin.readline()
    try:
        ledger.record_charge(**charge(351, account_of(351)))
        print("recorded")
    except Exception as exc:
        print("refused:", exc)
    try:
        ledger.record_charges([charge(n, account_of(n)) for n in range(352, 355)])
        print("recorded batch")
    except Exception as exc:
        print("refused batch:", exc)
    ledger.close()
"""

STARTED_AFTER = """
    ledger = Ledger(Settings(database_url=url))
    for n in (900, 901):
        try:
            ledger.record_charge(**charge(n, account_of(n)))
            print("recorded")
        except Exception as exc:
            print("refused:", exc)
    ledger.close()
"""


@pytest.mark.slow
def test_a_ledger_of_an_earlier_release_upgrades_in_place(store_url, previous_release):
    store = store_of(store_url)
    assert run_old(previous_release, store_url, OLD_HISTORY).startswith("days")
    running = old_process(previous_release, store_url, RUNNING_THROUGH, stdin=subprocess.PIPE)
    assert running.stdout.readline().strip() == "ready"  # charge 350, then it waits

    ledger = Ledger(Settings(database_url=store_url))  # this release: moves the index at start
    try:
        assert index_rows(ledger) == 351
        out, err = running.communicate("go\n", timeout=120)
        assert "refused: " in out and REFUSAL[store] in out, out + err
        lines = out.splitlines()
        assert "refused batch:" in out and "recorded" not in lines and "recorded batch" not in lines, out + err

        for n in range(340, 400):  # 340-350 repeat old ids: duplicates within their account
            receipt = ledger.record_charge(**charge(n, account_of(n)))
            assert receipt.duplicate == (n <= 350), n
        outcomes = ledger.record_charges([charge(n, account_of(n)) for n in range(400, 450)])
        assert all(o.ok and not o.receipt.duplicate for o in outcomes)
        # Old ids are now per account: another account's "c-5" is another charge.
        other = ledger.record_charges([charge(n, "other") for n in range(0, 10)])
        assert all(o.ok and not o.receipt.duplicate for o in other)

        # An earlier-release process started after the upgrade is refused too.
        out = run_old(previous_release, store_url, STARTED_AFTER)
        assert out.count("refused:") == 2 and "recorded" not in out.splitlines() and REFUSAL[store] in out, out

        projector = Projector(ledger)
        projector.run()
        totals = expected(range(450), account_of)
        totals["other"] = expected(range(10), lambda n: "other")["other"]
        for account, figures in totals.items():
            assert ledger.account_totals(account) == figures, account
        assert index_rows(ledger) == 460
        # Charges of the earlier release count in budgets: their index rows got the typed columns at upgrade.
        ledger.set_budget("big-total", account_id="big", limit_tokens=10**9, period="total")
        assert ledger.budget_status("big-total").spent_tokens == totals["big"].total_tokens > 0
        result = audit(ledger, catch_up=True)
        assert result.clean, result.to_dict()
        assert [p.spent_log for p in result.budgets] == [totals["big"].total_tokens]
        assert result.conservation.records["charges"] == 460
        reversal = ledger.reverse_charge("c-5", "refund", account_id="other")  # an id kept from before, per account
        assert reversal.account_id == "other"
    finally:
        ledger.close()
    # A fresh process of this release agrees, and opening again changes nothing.
    fresh = Ledger(Settings(database_url=store_url))
    try:
        assert fresh.account_totals("big") == expected(range(450), account_of)["big"]
        assert fresh.record_charge(**charge(5, account_of(5))).duplicate
        assert index_rows(fresh) == 460
    finally:
        fresh.close()
