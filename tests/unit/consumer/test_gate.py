"""The gate's pure decisions over an injected clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from infra.consumer.gate import Delay, Expired, Run, decide
from infra.wire.protocol import decode
from tests.unit.celery_messages import publish

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def message(**options: object):
    return decode(publish((1, 2), **options), message_id="m-1")


def test_no_eta_no_expiry_runs() -> None:
    assert decide(message(), NOW) == Run()


def test_expired_message_is_revoked() -> None:
    msg = message(expires=NOW - timedelta(seconds=1))
    assert decide(msg, NOW) == Expired()
    assert decide(msg, NOW - timedelta(seconds=2)) == Run()


@pytest.mark.parametrize(
    ("ahead", "delay"),
    [(timedelta(seconds=30), 30), (timedelta(seconds=0.2), 1), (timedelta(days=3), 900)],
)
def test_future_eta_is_delayed_natively_never_early(ahead: timedelta, delay: int) -> None:
    assert decide(message(eta=NOW + ahead), NOW) == Delay(delay)


def test_eta_days_away_hops_until_due_then_runs() -> None:
    msg = message(eta=NOW + timedelta(hours=2, seconds=5))
    now, hops = NOW, 0
    while isinstance(verdict := decide(msg, now), Delay):
        now += timedelta(seconds=verdict.seconds)
        hops += 1
    assert verdict == Run()
    assert hops == 9  # 8 x 900 s + 5 s
    assert msg.eta is not None and now >= msg.eta
    assert now - msg.eta < timedelta(seconds=1)


def test_expiry_wins_over_eta() -> None:
    msg = message(eta=NOW + timedelta(minutes=5), expires=NOW - timedelta(seconds=1))
    assert decide(msg, NOW) == Expired()


def test_naive_times_are_read_in_the_apps_timezone() -> None:
    from zoneinfo import ZoneInfo

    from infra.wire.timing import aware

    oslo = ZoneInfo("Europe/Oslo")
    naive = datetime(2026, 11, 26, 13, 0)  # 12:00 UTC in Oslo (UTC+1 in November)
    assert aware(naive, oslo) == NOW
    assert aware(NOW, oslo) is NOW
    assert aware(None, oslo) is None
