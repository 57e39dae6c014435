"""A failure propagated down a chain reaches the tasks of the groups in it (Celery issue #6437).

When a chain step fails, Celery's ``Backend._fail_chain`` stores the failure for every later
step that has a task id of its own, so ``get()`` on the chain raises instead of waiting. A group
among those steps has an id too, but the chain's result is the group's ``GroupResult``, whose
``get()`` waits for the group's *members*; Celery skips them, so
``(add.s(1, 1) | fail.s() | group(add.s(1), add.s(1))).delay().get()`` waits out its timeout on
every backend (Celery's own ``test_chord::test_error_propagates_from_chord``, xfailed there on
Redis for that issue). :func:`expand_groups` puts the members, and the steps of chains inside a
group, into the chain handed to Celery's loop, so each gets the failure (and, in a chord, returns
its part) exactly as a plain chain step does.

Pure; :meth:`infra.store.results.DynamoDBBackend._fail_chain` calls it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["expand_groups"]


def expand_groups(chain: Any) -> Any:
    """``chain`` (a request's ``chain``: signatures as dicts) with each group followed by its
    members, recursively; anything else, and a chain without groups, as it was."""
    try:
        steps = list(chain)
    except TypeError:  # a request's chain may be None or a placeholder
        return chain
    expanded = [s for step in steps for s in _with_members(step)]
    return expanded if len(expanded) != len(steps) else chain


def _with_members(step: Any) -> Iterator[Any]:
    yield step
    if isinstance(step, Mapping) and step.get("subtask_type") == "group":
        yield from _members(step)


def _members(signature: Mapping[str, Any]) -> Iterator[Any]:
    """The signatures inside a group or chain, depth first (a chord stays whole: Celery's loop
    descends into its body)."""
    for member in (signature.get("kwargs") or {}).get("tasks") or ():
        yield member
        if isinstance(member, Mapping) and member.get("subtask_type") in ("group", "chain"):
            yield from _members(member)
