"""The inbox pruning settings: validated where every service reads them, and turned into runners' policy."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import SecretStr, ValidationError

from shared.messaging import InboxPruning
from shared.settings import DEV_SECRET, BaseServiceSettings


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


class _WithProviderKey(BaseServiceSettings):
    provider_key: SecretStr = SecretStr("")


REAL = "a-real-secret-of-32-characters!!"


@pytest.mark.parametrize("secret", [DEV_SECRET, "short-secret-15"])
def test_production_refuses_the_placeholder_or_a_short_secret(secret):
    with pytest.raises(ValidationError, match="BATON_SECRET_KEY must be set to a real secret"):
        BaseServiceSettings(environment="production", secret_key=SecretStr(secret))


def test_production_checks_a_service_s_own_secrets_too():
    with pytest.raises(ValidationError, match="BATON_PROVIDER_KEY"):
        _WithProviderKey(environment="production", secret_key=SecretStr(REAL), provider_key=SecretStr("tiny"))
    # an optional secret left empty is not in use, so it is no placeholder
    assert _WithProviderKey(environment="production", secret_key=SecretStr(REAL)).provider_key == SecretStr(
        ""
    )


def test_production_takes_a_real_secret_and_local_environments_the_placeholder():
    assert BaseServiceSettings(environment="production", secret_key=SecretStr(REAL)).secret_key == SecretStr(
        REAL
    )
    for local in ("development", "test"):
        assert BaseServiceSettings(environment=local).secret_key.get_secret_value() == DEV_SECRET
