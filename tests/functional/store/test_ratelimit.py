"""The shared rate limiter against moto: grants, refusals with the wait, sleeping through short
waits, and handing long ones back; plus how a rate limit is read from Celery's notation."""

from __future__ import annotations

import uuid

import pytest

from devtools.cloud.deploy import Deployment
from infra.core import aws
from infra.core.errors import StoreError
from infra.core.settings import Settings
from infra.store.ratelimit import MAX_SLEEP_SECONDS, SPACING, RateLimiter, interval_of


class Clock:
    """A clock the test moves; ``sleep`` moves it too."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def limiter(cloud: Deployment, clock: Clock) -> RateLimiter:
    return RateLimiter(
        aws.client("dynamodb"), Settings.from_env().results_table, clock=clock, sleep=clock.sleep
    )


@pytest.mark.parametrize(
    ("limit", "interval"),
    [("10/s", 0.1), ("120/m", 0.5), ("1/h", 3600.0), (4, 0.25), ("0", None), (None, None)],
)
def test_interval_from_celery_notation(limit: object, interval: float | None) -> None:
    assert interval_of(limit) == interval


def test_first_start_is_granted_and_the_next_waits_one_interval(
    limiter: RateLimiter, clock: Clock
) -> None:
    task = f"t-{uuid.uuid4().hex}"

    assert limiter.try_start(task, 0.5) == 0.0
    clock.now += 0.2
    assert limiter.try_start(task, 0.5) == pytest.approx(0.5 * SPACING - 0.2)
    clock.now += 0.5 * SPACING - 0.2
    assert limiter.try_start(task, 0.5) == 0.0


def test_tasks_are_paced_independently(limiter: RateLimiter) -> None:
    a, b = f"a-{uuid.uuid4().hex}", f"b-{uuid.uuid4().hex}"

    assert limiter.try_start(a, 10) == 0.0
    assert limiter.try_start(b, 10) == 0.0


def test_short_waits_are_slept_through(limiter: RateLimiter, clock: Clock) -> None:
    task = f"t-{uuid.uuid4().hex}"
    limiter.try_start(task, 0.5)

    assert limiter.wait_turn(task, 0.5, budget=10) == 0.0

    assert clock.slept and sum(clock.slept) >= 0.5


def test_long_waits_are_handed_back_not_slept(limiter: RateLimiter, clock: Clock) -> None:
    task = f"t-{uuid.uuid4().hex}"
    limiter.try_start(task, 60)

    wait = limiter.wait_turn(task, 60, budget=600)

    assert wait == pytest.approx(60 * SPACING) and wait > MAX_SLEEP_SECONDS
    assert clock.slept == []


def test_no_sleep_beyond_the_budget(limiter: RateLimiter, clock: Clock) -> None:
    task = f"t-{uuid.uuid4().hex}"
    limiter.try_start(task, 1.0)

    assert limiter.wait_turn(task, 1.0, budget=0.5) == pytest.approx(SPACING)
    assert clock.slept == []


def test_an_unreachable_table_is_a_store_error(clock: Clock, cloud: Deployment) -> None:
    missing = RateLimiter(aws.client("dynamodb"), "no-such-table", clock=clock, sleep=clock.sleep)

    with pytest.raises(StoreError, match="rate limit of t"):
        missing.try_start("t", 1.0)
