"""The operator's CLI, pure parts: request builders, parsers, decoding and summaries (no AWS)."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from rich.console import Console

from devtools.ops.detail import ChildRef, TaskNode, build_tree, child_refs, task_detail
from devtools.ops.dlq import read_letter, visibility_entries
from devtools.ops.queues import QueueDepth, age_request, latest_maximum, pair_from_attributes
from devtools.ops.redrive import destination, send_batches, send_entry, sources_by_dlq
from devtools.ops.render import (
    age,
    dead_letters_table,
    queues_table,
    stats_tables,
    task_panel,
    task_tree,
    tasks_table,
)
from devtools.ops.stats import duration_request, percentiles, summarize
from devtools.ops.target import STACK_OUTPUTS, stack_environment
from devtools.ops.tasks import TaskQuery, TaskRow, parse_duration, query_request, task_row
from infra.core.errors import ConfigurationError
from infra.core.limits import SQS_MAX_BATCH_PAYLOAD_BYTES
from infra.core.settings import Settings
from infra.store.items import INDEX_BY_STATUS, INDEX_BY_TASK, INDEX_BY_TIME
from tests.unit.celery_messages import publish

SETTINGS = Settings.from_env({"AWS_ENDPOINT_URL": "http://127.0.0.1:5000"})
DLQ = "http://127.0.0.1:5000/123456789012/work-dlq"


def row(task_id: str, name: str | None = "t.add", state: str = "SUCCESS", **kw: Any) -> TaskRow:
    values: dict[str, Any] = {
        "queue": "celery",
        "retries": 0,
        "consumer": None,
        "date_done": None,
        "updated_at": 0.0,
        "root_id": None,
        "parent_id": None,
        "group_id": None,
    }
    return TaskRow(task_id=task_id, task_name=name, state=state, **{**values, **kw})


# ---------------------------------------------------------------- inspect


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("15m", 900), ("1h30m", 5400), ("2d", 172800), ("1w", 604800), (" 1H ", 3600)],
)
def test_durations_parse(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "1x", "h", "1h 30m", "-1h"])
def test_anything_else_is_not_a_duration(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_each_filter_queries_the_index_that_answers_it() -> None:
    by_task = query_request("t", TaskQuery(task_name="t.add", limit=5))
    by_status = query_request("t", TaskQuery(state="FAILURE"))
    by_time = query_request("t", TaskQuery(since=100.0), {"id": {"S": "k"}})

    assert (by_task["IndexName"], by_task["Limit"]) == (INDEX_BY_TASK, 5)
    assert by_task["ExpressionAttributeValues"][":pk"] == {"S": "t.add"}
    assert by_status["IndexName"] == INDEX_BY_STATUS
    assert by_time["IndexName"] == INDEX_BY_TIME
    assert by_time["ExpressionAttributeValues"][":pk"] == {"S": "task"}
    assert by_time["KeyConditionExpression"] == "#pk = :pk AND #ts >= :since"
    assert by_time["ExclusiveStartKey"] == {"id": {"S": "k"}}
    assert all(r["ScanIndexForward"] is False for r in (by_task, by_status, by_time))
    assert "FilterExpression" not in by_task


def test_a_task_name_and_a_state_filter_the_task_index() -> None:
    request = query_request("t", TaskQuery(state="FAILURE", task_name="t.add", limit=3))

    assert request["IndexName"] == INDEX_BY_TASK
    assert request["FilterExpression"] == "#status = :status"
    assert request["Limit"] >= 100  # DynamoDB limits before it filters


def test_a_row_from_an_index_entry() -> None:
    entry = {
        "task_id": {"S": "abc"},
        "task_name": {"S": "t.add"},
        "status": {"S": "RETRY"},
        "retries": {"N": "2"},
        "timestamp": {"N": "1700000000.5"},
        "worker": {"S": "celery@host"},
    }
    got = task_row(entry)
    assert (got.task_id, got.state, got.retries, got.consumer) == ("abc", "RETRY", 2, "celery@host")
    assert got.updated_at == 1700000000.5 and got.queue is None


def test_children_of_a_meta_as_celery_writes_them() -> None:
    meta = {
        "children": [
            [["a", None], None],
            [["g", None], [[["b", ["g", None]], None], [["c", None], None]]],
            "junk",
            [["not", "a"], "group"],
        ]
    }
    assert child_refs(meta) == (
        ChildRef("a"),
        ChildRef("g", (ChildRef("b"), ChildRef("c"))),
    )
    assert child_refs({"children": None}) == () and child_refs({}) == ()


def test_a_tree_follows_children_and_stops_at_its_budget() -> None:
    metas = {
        "root": {"children": [[["a", None], None], [["g", None], [[["b", None], None]]]]},
        "a": {"children": [[["gone", None], None]]},
        "b": {},
    }

    def read(task_id: str) -> tuple[TaskRow, dict[str, Any]] | None:
        return (row(task_id), metas[task_id]) if task_id in metas else None

    tree = build_tree("root", read)
    [a, group] = tree.children
    assert [c.id for c in a.children] == ["gone"] and a.children[0].row is None
    assert group.group and [m.id for m in group.children] == ["b"]

    small = build_tree("root", read, max_nodes=2)
    assert small.truncated and [c.id for c in small.children] == ["a"]
    assert small.children[0] == TaskNode("a", row("a"), (), truncated=True)


def test_a_failure_shows_its_exception() -> None:
    meta = {"result": ValueError("boom"), "traceback": "Traceback ...", "status": "FAILURE"}
    detail = task_detail(row("x", state="FAILURE"), meta, {"ttl": 1700000000.0})
    assert (detail.exception, detail.result) == ("ValueError: boom", None)
    assert detail.as_json()["expires_at"] == "2023-11-14T22:13:20+00:00"


# ---------------------------------------------------------------- queues


def test_a_queue_is_paired_with_the_dlq_its_redrive_policy_names() -> None:
    policy = {"deadLetterTargetArn": "arn:aws:sqs:us-east-1:123456789012:work-dlq"}
    attributes = {"RedrivePolicy": json.dumps({**policy, "maxReceiveCount": 5})}

    pair = pair_from_attributes("work", "http://q/work", attributes, SETTINGS)

    assert (pair.dlq_url, pair.max_receive_count) == (DLQ, 5)
    assert pair_from_attributes("work", "http://q/work", {}, SETTINGS).dlq_url is None


def test_the_age_of_the_oldest_message_is_cloudwatchs_latest_maximum() -> None:
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    request = age_request("work", now)
    assert request["Dimensions"] == [{"Name": "QueueName", "Value": "work"}]
    assert request["StartTime"] < request["EndTime"] == now
    points = [{"Timestamp": now - timedelta(minutes=m), "Maximum": 10.0 * m} for m in (3, 1, 2)]
    assert latest_maximum({"Datapoints": points}) == 10.0
    assert latest_maximum({"Datapoints": []}) is None


@pytest.mark.parametrize(
    ("seconds", "shown"), [(None, "n/a"), (40, "40s"), (725, "12m5s"), (0, "0s")]
)
def test_ages_read_at_a_glance(seconds: float | None, shown: str) -> None:
    assert age(seconds) == shown
    assert age(3 * 86400 + 4 * 3600 + 5) == "3d4h"


# ---------------------------------------------------------------- stack


def test_a_stacks_outputs_name_the_queues_table_and_bucket() -> None:
    outputs = {name: f"value-{name}" for name in STACK_OUTPUTS} | {"Other": "x"}
    assert stack_environment("s", outputs) == {
        "CELERY_QUEUE_URLS": "value-CeleryQueueUrls",
        "RESULTS_TABLE": "value-ResultsTableName",
        "RESULTS_BUCKET": "value-ResultsBucketName",
    }
    with pytest.raises(ConfigurationError, match="stack 's' has no output ResultsTableName"):
        stack_environment("s", {"CeleryQueueUrls": "{}", "ResultsBucketName": "b"})


# ---------------------------------------------------------------- stats


def test_stats_count_by_state_and_task_and_ask_for_known_pairs_only() -> None:
    rows = [row("1"), row("2"), row("3", state="FAILURE"), row("4", name=None, state="PENDING")]
    asked: list[tuple[str, str]] = []

    def durations(task_name: str, queue: str) -> tuple[float, float]:
        asked.append((task_name, queue))
        return 12.0, 40.0

    stats = summarize(rows, 0.0, durations, "test")

    assert stats.by_state == {"FAILURE": 1, "PENDING": 1, "SUCCESS": 2}
    [unknown, add] = stats.tasks
    assert (unknown.task_name, unknown.states, unknown.p50_ms) == ("?", {"PENDING": 1}, None)
    assert (add.states, add.total, add.p50_ms, add.p95_ms) == (
        {"SUCCESS": 2, "FAILURE": 1},
        3,
        12.0,
        40.0,
    )
    assert asked == [("t.add", "celery")]


def test_durations_come_from_one_cloudwatch_period_over_the_window() -> None:
    end = datetime(2026, 1, 1, tzinfo=UTC)
    request = duration_request("t.add", "celery", end - timedelta(minutes=90, seconds=5), end)
    assert request["Period"] == 91 * 60 and request["ExtendedStatistics"] == ["p50", "p95"]
    assert {d["Name"] for d in request["Dimensions"]} == {"service", "task_name", "queue"}
    newest = {"Timestamp": end, "ExtendedStatistics": {"p50": 5.0, "p95": 9.0}}
    older = {"Timestamp": end - timedelta(hours=1), "ExtendedStatistics": {"p50": 1.0, "p95": 2.0}}
    assert percentiles({"Datapoints": [newest, older]}) == (5.0, 9.0)
    assert percentiles({"Datapoints": []}) is None


# ---------------------------------------------------------------- dlq


def received(body: str, **attributes: str) -> dict[str, Any]:
    return {
        "MessageId": "m-1",
        "ReceiptHandle": "r-1",
        "Body": body,
        "Attributes": {
            "ApproximateReceiveCount": "3",
            "SentTimestamp": "1700000000000",
            **attributes,
        },
        "MessageAttributes": {
            "a": {"DataType": "String", "StringValue": "v", "StringListValues": []}
        },
    }


def test_a_dead_letter_is_decoded_as_the_lambda_path_decodes_it() -> None:
    letter = read_letter(received(publish((2, 3), task_id="t-1")), DLQ, ["json"])

    assert letter.task is not None and (letter.task.task_name, letter.task.task_id) == (
        "t.add",
        "t-1",
    )
    assert letter.receives == 2  # SQS's count minus this look's own receive
    assert letter.summary == "(2, 3)"
    assert letter.as_json()["sent_at"] == "2023-11-14T22:13:20+00:00"


def test_long_arguments_are_summarised() -> None:
    letter = read_letter(received(publish(("x" * 500,))), DLQ, ["json"])
    assert len(letter.summary) == 60 and letter.summary.endswith("…")


def test_a_body_that_is_no_task_message_says_why() -> None:
    junk = read_letter(received("not a task"), DLQ, ["json"])
    assert junk.task is None and junk.problem == "SQS body is neither a JSON object nor base64"

    pointer = json.dumps(
        [
            "software.amazon.payloadoffloading.PayloadS3Pointer",
            {"s3BucketName": "b", "s3Key": "payloads/t/1"},
        ]
    )
    offloaded = read_letter(received(pointer), DLQ, ["json"])
    assert offloaded.problem == "body offloaded to s3://b/payloads/t/1"
    fetched = read_letter(received(pointer), DLQ, ["json"], fetch=lambda p: publish((1, 1)))
    assert fetched.task is not None and fetched.task.args == (1, 1)


def test_visibility_changes_go_ten_at_a_time() -> None:
    messages = [{"ReceiptHandle": f"r{i}"} for i in range(23)]
    batches = visibility_entries(messages, 0)
    assert [len(b) for b in batches] == [10, 10, 3]
    assert batches[0][0] == {"Id": "0", "ReceiptHandle": "r0", "VisibilityTimeout": 0}


def test_a_redriven_message_keeps_body_attributes_and_fifo_group() -> None:
    message = received("body", MessageGroupId="g", AWSTraceHeader="Root=1-abc")

    entry = send_entry(4, message)

    assert entry["Id"] == "4" and entry["MessageBody"] == "body"
    assert entry["MessageAttributes"] == {"a": {"DataType": "String", "StringValue": "v"}}
    assert entry["MessageSystemAttributes"]["AWSTraceHeader"]["StringValue"] == "Root=1-abc"
    # Never the original deduplication id: SQS would drop the copy, and the DLQ's be deleted.
    assert (entry["MessageGroupId"], entry["MessageDeduplicationId"]) == ("g", "redrive-m-1")
    assert "MessageGroupId" not in send_entry(0, received("body"))


def test_redrive_batches_hold_ten_messages_and_one_mebibyte() -> None:
    small = [{"Body": "x"}] * 12
    assert [len(b) for b in send_batches(small)] == [10, 2]
    half = [{"Body": "x" * (SQS_MAX_BATCH_PAYLOAD_BYTES // 2)}] * 3
    assert [len(b) for b in send_batches(half)] == [2, 1]
    assert send_batches([]) == []


def test_a_dead_letter_goes_back_where_it_came_from() -> None:
    pair = pair_from_attributes(
        "work",
        "http://127.0.0.1:5000/123456789012/work",
        {
            "RedrivePolicy": json.dumps(
                {
                    "deadLetterTargetArn": "arn:aws:sqs:us-east-1:123456789012:work-dlq",
                    "maxReceiveCount": 2,
                }
            )
        },
        SETTINGS,
    )
    sources = sources_by_dlq([pair])
    assert destination(received("b"), DLQ, sources, SETTINGS) == pair.url
    moved = received("b", DeadLetterQueueSourceArn="arn:aws:sqs:us-east-1:123456789012:other")
    assert destination(moved, DLQ, sources, SETTINGS) == "http://127.0.0.1:5000/123456789012/other"
    shared = {DLQ: ("http://q/a", "http://q/b")}
    assert destination(received("b"), DLQ, shared, SETTINGS) is None


# ---------------------------------------------------------------- what a human sees


def rendered(renderable: Any) -> str:
    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(renderable)
    return console.file.getvalue()  # type: ignore[attr-defined, no-any-return]


def test_tables_and_trees_for_humans() -> None:
    queues = rendered(queues_table([QueueDepth("work (dlq)", DLQ, 3, 1, 0, None)], "n/a here"))
    assert "work (dlq)" in queues and "n/a here" in queues
    assert "t.add" in rendered(tasks_table([row("abc")]))

    failed = task_detail(
        row("x", state="FAILURE"), {"result": KeyError("k"), "traceback": "Tb"}, {}
    )
    panel = rendered(task_panel(failed, row("p", name="t.parent")))
    assert "KeyError: 'k'" in panel and "p (t.parent, SUCCESS)" in panel

    tree = TaskNode("r", row("r"), (TaskNode("g", None, (TaskNode("c", row("c")),), group=True),))
    assert [line.strip("│└├─ ") for line in rendered(task_tree(tree)).splitlines()] == [
        "t.add SUCCESS  r",
        "group g",
        "t.add SUCCESS  c",
    ]

    letter = read_letter(received(publish((2, 3))), DLQ, ["json"])
    assert "(2, 3)" in rendered(dead_letters_table([("work", letter)]))
    stats = summarize([row("1"), row("2", state="FAILURE")], 0.0, None, "n/a here")
    assert "n/a here" in rendered(stats_tables(stats))
