"""The memory guard's decisions, with a fake measure and exit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NoReturn

import pytest

from infra.consumer.memory import BUDGET_FRACTION, MemoryGuard, budget_bytes, resident_bytes

MIB = 1024 * 1024


@dataclass
class Context:
    memory_limit_in_mb: int


class Exited(BaseException):
    pass


def _exit() -> NoReturn:
    raise Exited


def guard(readings: list[int]) -> MemoryGuard:
    values = iter(readings)
    return MemoryGuard(measure=lambda: next(values) * MIB, exit=_exit)


def test_budget_is_a_share_of_the_function_memory() -> None:
    assert budget_bytes(Context(1000)) == int(1000 * MIB * BUDGET_FRACTION)
    assert budget_bytes(Context(0)) is None
    assert budget_bytes(object()) is None


def test_resident_memory_is_measured() -> None:
    assert 10 * MIB < resident_bytes() < 100_000 * MIB


def test_over_budget_after_growth_trips_and_a_later_invocation_recycles() -> None:
    memory = guard([100, 900, 900])  # budget 850 MiB of 1000

    assert memory.over_budget(Context(1000)) is None  # first check: the baseline
    assert memory.over_budget(Context(1000)) == 900 * MIB
    with pytest.raises(Exited):
        memory.recycle_if_still_over(Context(1000))


def test_memory_that_came_down_is_not_recycled() -> None:
    memory = guard([100, 900, 300])
    memory.over_budget(Context(1000))
    memory.over_budget(Context(1000))

    memory.recycle_if_still_over(Context(1000))

    assert memory.tripped is False


def test_an_app_alone_over_the_budget_of_a_tiny_function_is_not_recycled_forever() -> None:
    memory = guard([115, 120, 120])  # 128 MB function: budget 108 MiB, the app needs 115

    assert memory.over_budget(Context(128)) is None
    assert memory.over_budget(Context(128)) is None  # over budget, but grew only 5 MiB
    memory.recycle_if_still_over(Context(128))  # not tripped: no exit


def test_the_task_that_grew_memory_most_is_named() -> None:
    memory = guard([150, 400, 420])

    memory.observe("small", 100 * MIB)
    memory.observe("big", 100 * MIB)
    memory.observe("smaller", 400 * MIB)

    assert memory.grown_most == ("big", 300 * MIB)
