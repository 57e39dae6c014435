"""What the Lambda path tells: log lines with the record's keys, metrics, and user hooks.

Driven the way Lambda drives ``handlers.sqs.handler``, against moto in server mode: tasks of the
test-only app ``tests.apps.probe`` published with real ``apply_async`` to this module's queues,
received, turned into a Lambda SQS event by the event-source emulator, handled, and deleted
unless reported (fixtures in ``conftest.py``, helpers in :mod:`tests.functional.consumer.support`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from celery import Celery, states

from infra.consumer import runtime
from infra.core.errors import ConfigurationError
from infra.core.hooks import CONFIG_KEY, Hooks, RecordHook, register
from infra.core.observability import (
    CONSUMER_METRICS,
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
    TASK_METRICS,
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


def test_every_log_line_of_a_record_carries_its_keys(
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
    by_message: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        assert "message_id" in line, line
        by_message.setdefault(line["message_id"], []).append(line)
    assert set(by_message) == {m["MessageId"] for m in messages}
    for tid, message in tasks.items():
        for line in by_message[message["MessageId"]]:
            assert {key: line.get(key) for key in LOG_KEYS} == {
                "task_id": tid,
                "task_name": names[tid],
                "message_id": message["MessageId"],
                "receive_count": "1",
            }, line
    # Nothing about the task is known for a body that does not decode, and nothing leaks in
    # from the record before it.
    for line in by_message[garbage]:
        assert line["receive_count"] == "1"
        assert "task_id" not in line and "task_name" not in line
    # Celery's own lines (its tracer reporting the failure) are in the same JSON with the keys.
    boom_id = next(tid for tid, name in names.items() if name == "probe.boom")
    celery_lines = [line for line in lines if str(line.get("name", "")).startswith("celery")]
    assert any(line["task_id"] == boom_id and line["level"] == "ERROR" for line in celery_lines)


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
