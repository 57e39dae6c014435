"""A failed step's chain, as Celery puts it in the request, with each group's members added
(:mod:`infra.store.failed_chains`)."""

from __future__ import annotations

from typing import Any

from celery import Celery, chain, chord, group

from infra.store.failed_chains import expand_groups

app = Celery("failed-chains", set_as_current=False)


@app.task(name="t.add", shared=False)
def add(x: int, y: int) -> int:
    return x + y


def request_chain(*steps: Any) -> list[dict[str, Any]]:
    """The ``chain`` of the first step's request, frozen as Celery's canvas sends it."""
    first, *rest = chain(*steps).unchain_tasks()
    for step in rest:
        step.freeze()
    return [dict(step) for step in reversed(rest)]


def ids(signatures: list[Any]) -> list[str | None]:
    return [s["options"].get("task_id") for s in signatures]


def test_a_group_is_followed_by_its_members_and_the_steps_of_its_chains() -> None:
    tail = group(add.si(1, 1), chain(add.si(2, 2), add.s(3)), group(add.si(4, 4)))
    steps = request_chain(add.si(0, 0), add.si(0, 1), tail)
    [grouped, second] = steps
    nested_chain = grouped["kwargs"]["tasks"][1]

    expanded = expand_groups(steps)

    members = grouped["kwargs"]["tasks"]
    inner = nested_chain["kwargs"]["tasks"]
    assert ids(expanded) == ids([grouped, members[0], nested_chain, *inner, *members[2:], second])
    assert all(task_id for task_id in ids(expanded))


def test_a_chain_without_groups_is_left_as_it_was() -> None:
    steps = request_chain(add.si(0, 0), add.si(1, 1), chord([add.si(2, 2)], add.s(3)))
    assert expand_groups(steps) is steps
    assert expand_groups(None) is None
