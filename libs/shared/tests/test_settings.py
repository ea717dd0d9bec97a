"""The inbox pruning settings: validated where every service reads them, and turned into runners' policy."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from shared.messaging import InboxPruning
from shared.settings import BaseServiceSettings


@pytest.mark.parametrize("days", ["0", "-1", "nan", "inf", "36501", "soon"])
def test_a_retention_that_is_not_a_positive_number_of_days_is_refused(monkeypatch, days):
    monkeypatch.setenv("BATON_INBOX_RETENTION_DAYS", days)
    with pytest.raises(ValidationError, match="inbox_retention_days"):
        BaseServiceSettings()


@pytest.mark.parametrize("seconds", ["-1", "nan", "inf"])
def test_a_negative_prune_interval_is_refused(monkeypatch, seconds):
    monkeypatch.setenv("BATON_INBOX_PRUNE_INTERVAL_SECONDS", seconds)
    with pytest.raises(ValidationError, match="inbox_prune_interval_seconds"):
        BaseServiceSettings()


def test_defaults_prune_hourly_what_is_two_weeks_old(monkeypatch):
    monkeypatch.delenv("BATON_INBOX_RETENTION_DAYS", raising=False)
    monkeypatch.delenv("BATON_INBOX_PRUNE_INTERVAL_SECONDS", raising=False)
    policy = InboxPruning.from_settings(BaseServiceSettings())
    assert policy == InboxPruning()  # a runner given no policy prunes as the default settings say
    assert policy.retention == timedelta(days=14)
    assert policy.interval == 3600
    assert policy.margin == timedelta(minutes=10)
    assert policy.enabled


def test_the_policy_follows_the_variables(monkeypatch):
    monkeypatch.setenv("BATON_INBOX_RETENTION_DAYS", "2.5")
    monkeypatch.setenv("BATON_INBOX_PRUNE_INTERVAL_SECONDS", "0")
    policy = InboxPruning.from_settings(BaseServiceSettings())
    assert policy.retention == timedelta(days=2, hours=12)
    assert not policy.enabled  # 0 turns pruning off
