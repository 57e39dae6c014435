"""What the Lambda path tells: log lines with the record's keys, metrics, and user hooks.

Driven the way Lambda drives ``handlers.sqs.handler``, against moto in server mode: tasks of the
test-only app ``tests.apps.probe`` published with real ``apply_async`` to this module's queues,
received, turned into a Lambda SQS event by the event-source emulator, handled, and deleted
unless reported (fixtures in ``conftest.py``, helpers in :mod:`tests.functional.consumer.support`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from celery import Celery, states
from celery._state import get_current_app

import tasks
from devtools.cloud.deploy import Deployment, EventSource
from devtools.cloud.session import point_app_at
from infra.consumer import runtime
from infra.core import aws
from infra.core.errors import ConfigurationError
from infra.core.hooks import CONFIG_KEY, Hooks, RecordHook, register
from infra.core.observability import (
    BATCH_RECEIVED,
    CONSUMER_METRICS,
    INVOCATION_KEYS,
    LOG_GROUP_KEYS,
    LOG_KEYS,
    METRIC_DECODE_FAILED,
    METRIC_DELAYED,
    METRIC_DURATION,
    METRIC_EXPIRED,
    METRIC_FAILED,
    METRIC_PAYLOAD_SIZE,
    METRIC_QUEUE_WAIT,
    METRIC_RECEIVED,
    METRIC_RECORDS,
    METRIC_RETRIED,
    METRIC_STARTED,
    METRIC_SUCCEEDED,
    METRIC_UNKNOWN_TASK,
    TASK_FINISHED,
    TASK_METRICS,
    logger,
)
from tests.apps import probe
from tests.functional.consumer.support import (
    Queues,
    by_task,
    emf_metrics,
    envelope,
    json_lines,
    marker,
    send_raw,
)
from tests.invoke import invoke
from tests.sqs_helpers import receive

pytestmark = pytest.mark.usefixtures("served")


# ---------------------------------------------------------------- observability


def test_log_lines_name_their_task_and_a_line_about_trouble_its_message(
    queues: Queues, producer: Callable[..., Celery], stdout: pytest.CaptureFixture[str]
) -> None:
    url = queues.source.queue_url
    probe.record.apply_async((marker(),))
    probe.boom.apply_async((marker(),))
    probe.retrying.apply_async((marker(),), kwargs={"countdown": 60})
    probe.record.apply_async((marker(),), expires=datetime.now(UTC) - timedelta(seconds=1))
    producer().send_task("probe.record", (marker(),), countdown=60)
    probe.app.send_task("probe.nope")
    tasks = by_task(receive(url, 6))
    garbage = send_raw(url, "garbage")
    messages = [*tasks.values(), *receive(url, 1)]
    names = {tid: envelope(m)["headers"]["task"] for tid, m in tasks.items()}
    stdout.readouterr()

    invoke(queues.source, messages)

    lines = json_lines(stdout.readouterr().out, lambda o: "level" in o)
    by_task_id: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        by_task_id.setdefault(line.get("task_id", ""), []).append(line)
    assert set(by_task_id) == {*tasks, ""}
    for tid, message in tasks.items():
        for line in by_task_id[tid]:
            assert line["task_name"] == names[tid], line
            # A line about trouble names its SQS message; one below WARNING, on a first
            # delivery, goes without it (the task id keys it).
            if line["level"] in ("WARNING", "ERROR"):
                assert {key: line.get(key) for key in LOG_KEYS} == {
                    "task_id": tid,
                    "task_name": names[tid],
                    "message_id": message["MessageId"],
                    "receive_count": "1",
                }, line
            else:
                assert not {"message_id", "receive_count"} & set(line), line
    # Nothing about the task is known for a body that does not decode, and nothing leaks in
    # from the record before it.
    [undecoded] = by_task_id[""]
    assert (undecoded["level"], undecoded["message_id"]) == ("ERROR", garbage)
    assert undecoded["receive_count"] == "1" and "task_name" not in undecoded
    # The failure is one line, ours, at ERROR with the traceback (not Celery's beside it).
    boom_id = next(tid for tid, name in names.items() if name == "probe.boom")
    [failed] = [line for line in lines if line.get("task_id") == boom_id]
    assert failed["level"] == "ERROR" and failed["message"] == TASK_FINISHED
    assert failed["state"] == states.FAILURE and failed["exception"] == "ValueError"
    assert failed["traceback"].startswith("Traceback (most recent call last)")
    assert "ValueError: boom" in failed["traceback"]


# ---------------------------------------------------------------- log bytes


@pytest.fixture
def served_tasks(cloud: Deployment, monkeypatch: pytest.MonkeyPatch) -> Iterator[EventSource]:
    """The handler serves ``tasks:app`` (its ``add``) from the deployment's celery queue."""
    [source] = [s for s in cloud.event_sources if s.queue_arn.endswith("-celery")]
    aws.client("sqs").purge_queue(QueueUrl=source.queue_url)
    monkeypatch.setenv("CELERY_APP", "tasks:app")
    runtime.pipeline.cache_clear()
    previous = get_current_app()
    point_app_at(tasks.app, cloud)  # fresh pools: pointing another app reset kombu's pools
    tasks.app.set_current()
    yield source
    previous.set_current()
    runtime.pipeline.cache_clear()


def _add_batch(source: EventSource, count: int) -> list[dict[str, Any]]:
    ids = [tasks.add.apply_async((2, 2)).id for _ in range(count)]
    messages = receive(source.queue_url, count)
    assert sorted(by_task(messages)) == sorted(ids)
    return messages


BYTES_PER_TASK = 265
"""All a warm invocation of 10 small successes writes, per task: plain Celery's worker writes
about 250 (its "received" and "succeeded" lines); this path wrote 402 before its lines left out
what CloudWatch records anyway (timestamp, service) and what a success does not need (the SQS
message id, a receive count of 1, the batch line)."""


def test_a_batch_of_small_tasks_is_a_short_line_each_and_one_metrics_document(
    served_tasks: EventSource, stdout: pytest.CaptureFixture[str]
) -> None:
    invoke(served_tasks, _add_batch(served_tasks, 10))  # the cold start, and its lines, apart
    messages = _add_batch(served_tasks, 10)
    stdout.readouterr()

    assert invoke(served_tasks, messages) == []

    out = stdout.readouterr().out
    assert len(out.encode()) / len(messages) <= BYTES_PER_TASK, out
    logs = [line for line in out.splitlines() if not line.startswith('{"_aws"')]
    finished = [json.loads(line) for line in logs]
    assert sorted(line["task_id"] for line in finished) == sorted(by_task(messages))
    for raw, line in zip(logs, finished, strict=True):
        assert len(raw.encode()) + 1 <= 200, raw
        assert list(line)[:2] == ["level", "message"] and line["level"] == "INFO"
        assert line["message"] == TASK_FINISHED and line["state"] == states.SUCCESS
        assert line["task_name"] == "tasks.add" and line["queue"] == "celery"
        assert line["duration_ms"] >= 0
        # What CloudWatch records of each event, what is constant per invocation (Lambda's
        # START and REPORT lines carry it), what a first delivery that went well does not need.
        left_out = {"timestamp", "service", "location", "message_id", "receive_count"}
        assert not {*left_out, *INVOCATION_KEYS, *LOG_GROUP_KEYS, "root_id"} & set(line)
        assert not {"task_args", "task_kwargs", "result"} & set(line)  # only at DEBUG
    assert "succeeded in" not in out  # Celery's own line about each task
    # Metrics: one EMF document per (task, queue) of the batch, one for the service; counts as
    # one number, sizes and waits whole.
    [task_doc, service_doc] = json_lines(out, lambda o: "_aws" in o)
    assert task_doc[METRIC_SUCCEEDED] == 10 and service_doc[METRIC_RECORDS] == [10.0]
    assert all(isinstance(v, int) for v in task_doc[METRIC_PAYLOAD_SIZE])


def test_a_redelivered_task_says_so(
    served_tasks: EventSource, stdout: pytest.CaptureFixture[str]
) -> None:
    [message] = _add_batch(served_tasks, 1)
    sqs = aws.client("sqs")
    sqs.change_message_visibility(
        QueueUrl=served_tasks.queue_url,
        ReceiptHandle=message["ReceiptHandle"],
        VisibilityTimeout=0,
    )
    [again] = receive(served_tasks.queue_url, 1)
    stdout.readouterr()

    assert invoke(served_tasks, [again]) == []

    [line] = json_lines(stdout.readouterr().out, lambda o: o.get("message") == TASK_FINISHED)
    assert (line["task_id"], line["receive_count"]) == (by_task([again]).popitem()[0], "2")


@pytest.fixture
def debug_logging() -> Iterator[None]:
    """The logger at DEBUG, as for an invocation ``POWERTOOLS_LOGGER_SAMPLE_RATE`` picked."""
    level = logger.log_level
    logger.setLevel("DEBUG")
    yield
    logger.setLevel(level)


@pytest.mark.usefixtures("debug_logging")
def test_at_debug_the_outcome_line_has_the_arguments_and_result(
    served_tasks: EventSource, stdout: pytest.CaptureFixture[str]
) -> None:
    [message] = _add_batch(served_tasks, 1)
    stdout.readouterr()

    assert invoke(served_tasks, [message]) == []

    out = stdout.readouterr().out
    [line] = json_lines(out, lambda o: o.get("message") == TASK_FINISHED)
    assert (line["task_args"], line["task_kwargs"], line["result"]) == ("(2, 2)", "{}", "4")
    # The invocation's own line, with what every task line leaves out.
    [batch] = json_lines(out, lambda o: o.get("message") == BATCH_RECEIVED)
    assert (batch["level"], batch["records"]) == ("DEBUG", 1)
    assert batch["function_request_id"] and "cold_start" in batch
    assert not set(LOG_GROUP_KEYS) & set(batch)


def test_metrics_name_what_happened(
    queues: Queues, producer: Callable[..., Celery], stdout: pytest.CaptureFixture[str]
) -> None:
    url = queues.source.queue_url
    for _ in range(2):
        probe.record.apply_async((marker(),))
    probe.boom.apply_async((marker(),))
    probe.retrying.apply_async((marker(),), kwargs={"countdown": 60})
    probe.record.apply_async((marker(),), expires=datetime.now(UTC) - timedelta(seconds=1))
    producer().send_task("probe.record", (marker(),), countdown=60)
    probe.app.send_task("probe.nope")
    messages = receive(url, 7)
    send_raw(url, "garbage")
    messages += receive(url, 1)
    stdout.readouterr()

    failed = invoke(queues.source, messages)

    assert len(failed) == 2
    out = stdout.readouterr().out
    metrics = emf_metrics(out)
    assert set(metrics) == {
        METRIC_RECORDS,
        METRIC_RECEIVED,
        METRIC_PAYLOAD_SIZE,
        METRIC_STARTED,
        METRIC_SUCCEEDED,
        METRIC_FAILED,
        METRIC_RETRIED,
        METRIC_EXPIRED,
        METRIC_DELAYED,
        METRIC_UNKNOWN_TASK,
        METRIC_DECODE_FAILED,
        METRIC_DURATION,
        METRIC_QUEUE_WAIT,
    }
    assert metrics[METRIC_RECORDS] == [8.0]
    assert sum(metrics[METRIC_RECEIVED]) == 6  # all but the unknown task and the garbage
    assert sum(metrics[METRIC_STARTED]) == 4
    assert all(size > 100 for size in metrics[METRIC_PAYLOAD_SIZE])
    assert sum(metrics[METRIC_SUCCEEDED]) == 2
    for name in (METRIC_FAILED, METRIC_RETRIED, METRIC_EXPIRED, METRIC_DELAYED):
        assert sum(metrics[name]) == 1, name
    assert sum(metrics[METRIC_UNKNOWN_TASK]) == sum(metrics[METRIC_DECODE_FAILED]) == 1
    assert len(metrics[METRIC_DURATION]) == len(metrics[METRIC_QUEUE_WAIT]) == 4
    assert all(value >= 0 for value in metrics[METRIC_QUEUE_WAIT])
    assert_vocabulary(out)


def assert_vocabulary(out: str) -> None:
    """Every EMF line uses the fixed vocabulary: task metrics carry task and queue, nothing else
    carries more than the service (no ids: bounded cardinality)."""
    for blob in json_lines(out, lambda o: "_aws" in o and "ColdStart" not in o):
        [directive] = blob["_aws"]["CloudWatchMetrics"]
        names = {m["Name"] for m in directive["Metrics"]}
        [dimensions] = directive["Dimensions"]
        if names <= TASK_METRICS:
            assert sorted(dimensions) == ["queue", "service", "task_name"]
            assert blob["task_name"].startswith("probe.") and blob["queue"]
        else:
            assert names <= CONSUMER_METRICS and dimensions == ["service"]


# ---------------------------------------------------------------- hooks


class Recorder(RecordHook):
    """Notes every call it gets."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def before_record(self, record: Any, context: Any) -> None:
        self.calls.append(("before_record", record["messageId"]))

    def on_decode_error(self, record: Any, error: Exception) -> None:
        self.calls.append(("on_decode_error", type(error).__name__))

    def before_task(self, message: Any, record: Any) -> None:
        self.calls.append(("before_task", message.task_name))

    def on_outcome(self, message: Any, outcome: Any) -> None:
        self.calls.append(("on_outcome", outcome.state))

    def after_record(self, record: Any, error: BaseException | None) -> None:
        self.calls.append(("after_record", type(error).__name__ if error else None))


class Broken(RecordHook):
    """Raises from every hook method."""

    def _fail(self, *args: Any) -> None:
        raise RuntimeError("hook bug")

    before_record = on_decode_error = before_task = on_outcome = after_record = _fail


@pytest.fixture
def hooked() -> Iterator[Callable[..., None]]:
    """Register hooks on the probe app for one test."""

    def use(*hooks: Any) -> None:
        probe.app.conf[CONFIG_KEY] = list(hooks)
        runtime.pipeline.cache_clear()

    yield use
    probe.app.conf[CONFIG_KEY] = []
    runtime.pipeline.cache_clear()


def test_hooks_see_each_step_of_a_record(queues: Queues, hooked: Callable[..., None]) -> None:
    recorder = Recorder()
    hooked(recorder)
    probe.record.apply_async((marker(),))
    good = receive(queues.source.queue_url, 1)[0]
    bad = send_raw(queues.source.queue_url, "not a task")

    failed = invoke(queues.source, [good, *receive(queues.source.queue_url, 1)])

    assert failed == [bad]
    assert recorder.calls == [
        ("before_record", good["MessageId"]),
        ("before_task", "probe.record"),
        ("on_outcome", states.SUCCESS),
        ("after_record", None),
        ("before_record", bad),
        ("on_decode_error", "MessageDecodeError"),
        ("after_record", "MessageDecodeError"),
    ]


def test_a_failing_hook_is_logged_and_changes_nothing(
    queues: Queues, hooked: Callable[..., None], stdout: pytest.CaptureFixture[str]
) -> None:
    recorder = Recorder()
    hooked(Broken(), recorder)
    done = marker()
    probe.record.apply_async((done, 7))

    assert invoke(queues.source, receive(queues.source.queue_url, 1)) == []

    assert probe.calls(done) == 1
    assert [c[0] for c in recorder.calls] == [
        "before_record",
        "before_task",
        "on_outcome",
        "after_record",
    ]
    failures = json_lines(stdout.readouterr().out, lambda o: o.get("hook") == "Broken")
    assert {f["hook_method"] for f in failures} == {
        "before_record",
        "before_task",
        "on_outcome",
        "after_record",
    }


def test_hooks_by_name_and_by_decorator(queues: Queues, hooked: Callable[..., None]) -> None:
    hooked("tasks.hooks:TenantLogKeys")
    register(probe.app)(Recorder)

    hooks = runtime.pipeline().hooks.hooks

    assert [type(h).__name__ for h in hooks] == ["TenantLogKeys", "Recorder"]


def test_an_unloadable_hook_is_a_clear_error() -> None:
    app = Celery("hooks", set_as_current=False)
    app.conf[CONFIG_KEY] = ["no.such:Hook"]

    with pytest.raises(ConfigurationError, match="celery_lambda_hooks.*no.such:Hook"):
        Hooks.of(app)


def test_the_example_hook_puts_the_tenant_in_every_log_line(
    queues: Queues, hooked: Callable[..., None], stdout: pytest.CaptureFixture[str]
) -> None:
    hooked("tasks.hooks:TenantLogKeys")
    task_id = probe.record.apply_async((marker(),), headers={"tenant": "acme"}).id

    assert invoke(queues.source, receive(queues.source.queue_url, 1)) == []

    lines = json_lines(stdout.readouterr().out, lambda o: o.get("task_id") == task_id)
    assert lines and all(line.get("tenant") == "acme" for line in lines)
    assert any(line["message"] == "task finished" for line in lines)
