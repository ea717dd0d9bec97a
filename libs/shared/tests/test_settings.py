"""The inbox pruning settings: validated where every service reads them, and read the same way by runners."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from shared.messaging import InboxPruning
from shared.settings import BaseServiceSettings, InboxSettings, settings_env_vars


@pytest.mark.parametrize("days", ["0", "-1", "nan", "inf", "36501", "soon"])
@pytest.mark.parametrize("cls", [BaseServiceSettings, InboxSettings])
def test_a_retention_that_is_not_a_positive_number_of_days_is_refused(monkeypatch, cls, days):
    monkeypatch.setenv("BATON_INBOX_RETENTION_DAYS", days)
    with pytest.raises(ValidationError, match="inbox_retention_days"):
        cls()


@pytest.mark.parametrize("seconds", ["-1", "nan", "inf"])
@pytest.mark.parametrize("cls", [BaseServiceSettings, InboxSettings])
def test_a_negative_prune_interval_is_refused(monkeypatch, cls, seconds):
    monkeypatch.setenv("BATON_INBOX_PRUNE_INTERVAL_SECONDS", seconds)
    with pytest.raises(ValidationError, match="inbox_prune_interval_seconds"):
        cls()


def test_defaults_prune_hourly_what_is_two_weeks_old(monkeypatch):
    monkeypatch.delenv("BATON_INBOX_RETENTION_DAYS", raising=False)
    monkeypatch.delenv("BATON_INBOX_PRUNE_INTERVAL_SECONDS", raising=False)
    policy = InboxPruning.from_env()
    assert policy == InboxPruning.from_settings(BaseServiceSettings())
    assert policy.retention == timedelta(days=14)
    assert policy.interval == 3600
    assert policy.margin == timedelta(minutes=10)
    assert policy.enabled


def test_runners_read_the_variables_the_services_document(monkeypatch):
    monkeypatch.setenv("BATON_INBOX_RETENTION_DAYS", "2.5")
    monkeypatch.setenv("BATON_INBOX_PRUNE_INTERVAL_SECONDS", "0")
    policy = InboxPruning.from_env()
    assert policy.retention == timedelta(days=2, hours=12)
    assert not policy.enabled  # 0 turns pruning off
    assert policy == InboxPruning.from_settings(BaseServiceSettings())
    documented = settings_env_vars(BaseServiceSettings)
    assert set(settings_env_vars(InboxSettings)) <= set(documented)
    assert (
        documented["BATON_INBOX_RETENTION_DAYS"][1:]
        == settings_env_vars(InboxSettings)["BATON_INBOX_RETENTION_DAYS"][1:]
    )
