"""Ids as operators type them, pure parts: what counts as whole, the requests, DLQ matching."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from devtools.ops.dlq import DeadLetter, read_letter
from devtools.ops.ids import (
    MAX_MATCHES,
    AmbiguousId,
    Match,
    UnknownId,
    is_full_id,
    matches_request,
    matching_letters,
    names_request,
    resolve_letter,
)
from infra.store.items import INDEX_BY_ID, task_key
from tests.unit.celery_messages import publish

DLQ = "http://127.0.0.1:5000/123456789012/work-dlq"


def letter(task_id: str | None, message_id: str | None = None) -> DeadLetter:
    """A received dead letter: a Celery message of ``task_id``, or junk when None."""
    body = publish((1, 2), task_id=task_id) if task_id else "not a task"
    message: dict[str, Any] = {
        "MessageId": message_id or str(uuid.uuid4()),
        "ReceiptHandle": "r",
        "Body": body,
    }
    return read_letter(message, DLQ, ["json"])


# One fixed id: pytest-xdist's processes must collect the same parameters.
SOME_ID = "6f082939-1c2d-4e5f-8a9b-0c1d2e3f4a5b"


@pytest.mark.parametrize(
    ("text", "full"),
    [
        (SOME_ID, True),
        (SOME_ID.upper(), True),
        (SOME_ID[:8], False),
        (SOME_ID.replace("-", ""), False),  # 32 hex digits without dashes: a custom id, looked up
        ("no-such-task", False),
        (f"{SOME_ID}x", False),
    ],
)
def test_only_a_whole_uuid_is_taken_as_given(text: str, full: bool) -> None:
    assert is_full_id(text) is full


def test_a_prefix_is_one_query_of_the_id_index_that_reads_one_more_than_it_lists() -> None:
    request = matches_request("results", "6f08")

    assert request["IndexName"] == INDEX_BY_ID and request["Limit"] == MAX_MATCHES + 1
    assert request["KeyConditionExpression"] == "#kind = :kind AND begins_with(#task_id, :prefix)"
    assert request["ExpressionAttributeValues"] == {
        ":kind": {"S": "task"},
        ":prefix": {"S": "6f08"},
    }


def test_the_matches_names_and_states_are_one_batch_read_of_three_attributes() -> None:
    request = names_request("results", ["a", "b"])["RequestItems"]["results"]

    assert request["Keys"] == [{"id": {"S": task_key("a")}}, {"id": {"S": task_key("b")}}]
    assert request["ProjectionExpression"] == "task_id, task_name, #status"


def test_an_ambiguous_id_lists_its_matches_and_says_when_there_are_more() -> None:
    error = AmbiguousId(
        "ab", "t", [Match("ab1", "t.add", "SUCCESS"), Match("ab2", None, None)], True
    )

    assert str(error).splitlines() == [
        "ab is ambiguous: more than 2 ids in t start with it (type more of the id):",
        "  ab1  t.add  SUCCESS",
        "  ab2  ?",
        "  …",
    ]


def test_dead_letters_match_by_message_or_task_id_prefix_and_exact_ids_win() -> None:
    a, b = letter("abc-1", "m-1"), letter("abd-2", "m-2")
    junk = letter(None, "abc-junk")

    assert matching_letters([a, b, junk], "ab") == [a, b, junk]
    assert matching_letters([a, b, junk], "abc") == [a, junk]
    assert matching_letters([a, b, junk], "abc-1") == [a]  # a whole task id, though a prefix too
    assert resolve_letter([a, b, junk], "m-2") is b
    assert resolve_letter([a, b, junk], "abd") is b
    with pytest.raises(AmbiguousId) as ambiguous:
        resolve_letter([a, b, junk], "abc")
    assert [(m.id, m.task_name, m.detail) for m in ambiguous.value.matches] == [
        ("m-1", "t.add", "abc-1"),
        ("abc-junk", None, None),
    ]
    with pytest.raises(UnknownId, match="no message zz in the dead-letter queues"):
        resolve_letter([a, b, junk], "zz")


def test_an_undecodable_letter_keeps_its_problem_out_of_its_arguments() -> None:
    junk = letter(None)

    assert junk.summary == ""
    data = junk.as_json(full=True)
    assert (data["task_name"], data["args"], data["task"]) == (None, None, None)
    assert data["problem"] == "SQS body is neither a JSON object nor base64"
