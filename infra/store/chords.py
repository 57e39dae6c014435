"""Chord joins: a chord fires when as many parts reported as its header really has, and its
join waits for the members of nested groups within its own timeout (:func:`iter_nested`).

Celery's key-value backends (``BaseKeyValueStoreBackend.on_chord_part_return``) fire a chord's
body when its counter (Celery's ``chord_count`` item) reaches the body's ``chord_size``, which
nothing in Celery 5.7 sets, or else the number of results in the header's ``GroupResult``. A
header member that is a group, or a chain ending in one, is one result there but several parts
(each task of that group reports to the chord), so that count fires the join early: Celery's
``test_canvas::test_nested_group_chain`` counts 2 parts and gets 3.

Canvas computes the real size (``_chord._descend``) and hands it to ``backend.set_chord_size``
before the header's last task is published (with batched group publishing, before any is sent);
Celery's Redis backend records it, and so does ours: as ``chord_size`` on the chord's counter
item, which the chord's ``apply_chord`` has just created.

Each part is counted by one UpdateItem that returns the counter item (:func:`count_part`): the
new count and the recorded size together. Celery's own ``on_chord_part_return`` reads the whole
header ``GroupResult`` (every member's id) for every part before it counts, a chord of n tasks
reading n² ids (a 1,000-task header: about 1,000 reads of 40 KB each); here only the part whose
count reaches the size goes on to Celery's code, which joins the header, sends the body and
cleans up, with the body's ``chord_size`` set and the count already made. A part that finds no
size (a chord applied by a backend that does not record it) also goes on to Celery's code, which
compares the count with its header length, as Celery counts it.

Pure builders; :class:`infra.store.results.DynamoDBBackend` sends them.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Final

from celery.result import ResultSet

__all__ = [
    "CHORD_SIZE_ATTRIBUTE",
    "iter_nested",
    "leaf_ids",
    "count_part",
    "part_count",
    "size_write",
    "sized_request",
]

CHORD_SIZE_ATTRIBUTE: Final = "chord_size"
"""On the chord's counter item, beside Celery's ``chord_count``; the key Celery reads too."""
COUNT_ATTRIBUTE: Final = "chord_count"
"""Celery's counter on that item (its DynamoDB backend's ``_count_filed``)."""


def size_write(table: str, counter_key: str, size: int) -> dict[str, Any]:
    """The UpdateItem recording ``size`` on the chord's counter item, only if the item exists.

    Canvas also calls ``set_chord_size`` for a group nested in a chord header, with that group's
    own id: no counter item has that key, and the condition keeps the write from making one.
    """
    return {
        "TableName": table,
        "Key": {"id": {"S": counter_key}},
        "UpdateExpression": "SET #size = :size",
        "ConditionExpression": "attribute_exists(#id)",
        "ExpressionAttributeNames": {"#size": CHORD_SIZE_ATTRIBUTE, "#id": "id"},
        "ExpressionAttributeValues": {":size": {"N": str(int(size))}},
    }


def count_part(table: str, counter_key: str) -> dict[str, Any]:
    """The UpdateItem counting one part on the chord's counter item, if the item still exists,
    returning the item: Celery's ``chord_count`` after the count, and the recorded size."""
    return {
        "TableName": table,
        "Key": {"id": {"S": counter_key}},
        "UpdateExpression": "SET #count = #count + :one",
        "ConditionExpression": "attribute_exists(#count)",
        "ExpressionAttributeNames": {"#count": COUNT_ATTRIBUTE},
        "ExpressionAttributeValues": {":one": {"N": "1"}},
        "ReturnValues": "ALL_NEW",
    }


def part_count(response: Mapping[str, Any]) -> tuple[int, int | None]:
    """The count a :func:`count_part` made, and the recorded size (None when none is)."""
    item = response.get("Attributes", {})
    size = item.get(CHORD_SIZE_ATTRIBUTE, {}).get("N")
    return int(item[COUNT_ATTRIBUTE]["N"]), int(size) if size is not None else None


def sized_request(request: Any, size: int) -> Any:
    """A copy of a part's request whose chord (the body signature, a dict) carries ``size``.

    A copy: the running task's own request keeps the body exactly as it was delivered.
    """
    sized = copy.copy(request)
    sized.chord = {**request.chord, CHORD_SIZE_ATTRIBUTE: size}
    return sized


def leaf_ids(results: Sequence[Any]) -> set[str]:
    """The task ids at the leaves of nested result sets (a chord join waits for all of them)."""
    ids: set[str] = set()
    for result in results:
        if isinstance(result, ResultSet):
            ids |= leaf_ids(result.results)
        else:
            ids.add(result.id)
    return ids


def iter_nested(
    get_many: Callable[..., Iterable[tuple[str, Any]]], members: Sequence[Any], **options: Any
) -> Iterator[tuple[str, Any]]:
    """Celery's native join iteration over ``members``, nested groups waited for too.

    Celery's ``iter_native`` yields a nested group at once, and ``ResultSet.join_native`` then
    calls ``get()`` on each of its members with no timeout: in a chord join that fired early,
    a worker's only pool process would wait for ever on a member queued behind it. Here every
    leaf of the tree is fetched by one bounded ``get_many`` loop first (``options`` carry its
    timeout, ``result_chord_join_timeout`` in a chord) and handed to the nested members, whose
    ``get()`` then returns at once.
    """
    direct = {r.id for r in members if not isinstance(r, ResultSet)}
    nested = [r for r in members if isinstance(r, ResultSet)]
    ready: dict[str, Any] = {}
    for task_id, meta in get_many(direct | leaf_ids(nested), **options):
        if task_id in direct:
            yield task_id, meta
        else:
            ready[task_id] = meta
    for group_result in nested:
        for member in group_result.results:
            if member.id in ready and not isinstance(member, ResultSet):
                member._maybe_set_cache(ready[member.id])  # its get() reads no item again
        yield group_result.id, group_result.results
