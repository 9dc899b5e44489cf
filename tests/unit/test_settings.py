"""The one settings object: its sections, their variables, and that nothing reads them at import."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ledger.settings import (
    DashboardSettings,
    HttpSettings,
    JobsSettings,
    ProcessSettings,
    Settings,
    load_settings,
)

ROOT = Path(__file__).resolve().parents[2]
SECTIONS = {"ledger": Settings, "jobs": JobsSettings, "http": HttpSettings, "dashboard": DashboardSettings}


def variables(section: type) -> list[str]:
    """The environment variable of each setting of a section."""
    prefix = section.model_config.get("env_prefix", "")
    names = []
    for name, field in section.model_fields.items():
        alias = field.validation_alias
        names.append(alias if isinstance(alias, str) else f"{prefix}{name}".upper())
    return names


def test_the_process_settings_have_the_four_sections():
    assert list(ProcessSettings.model_fields) == list(SECTIONS)
    settings = load_settings(Settings(database_url="sqlite:///x.db"))
    for name, section in SECTIONS.items():
        assert isinstance(getattr(settings, name), section)
    assert settings.ledger.database_url == "sqlite:///x.db"


def test_every_setting_is_documented_with_its_variable():
    documented = (ROOT / "docs" / "CONFIGURATION.md").read_text()
    missing = [v for section in SECTIONS.values() for v in variables(section) if f"`{v}`" not in documented]
    assert missing == []


def test_importing_the_entry_points_reads_no_setting():
    """A value no section accepts fails only when a process reads its settings, never at import."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    bad = {v: "not-a-value" for v in ("LEDGER_TASK_RETRIES", "LEDGER_TASK_LEASE_SECONDS", "LEDGER_BILLING_TZ",
                                      "LEDGER_HTTP_MAX_BATCH", "LEDGER_DASHBOARD_SESSION_SECONDS")}
    env.update(PYTHONPATH=str(ROOT), **bad)
    code = "import jobs, jobs.worker, ledger_service.cli, ledger_service.http, ledger_service.server"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr


def test_a_jobs_field_given_to_the_ledger_section_is_named_not_silently_dropped():
    with pytest.warns(DeprecationWarning, match=r"huey_url, task_retries=.*JobsSettings"):
        Settings(database_url="sqlite:///x.db", huey_url="memory://", task_retries=3)
