"""Running a task on the Lambda path: time limits and the deadline, failures, the request
a task sees, other result backends, resource limits.

Driven the way Lambda drives ``handlers.sqs.handler``, against moto in server mode: tasks of the
test-only app ``tests.apps.probe`` published with real ``apply_async`` to this module's queues,
received, turned into a Lambda SQS event by the event-source emulator, handled, and deleted
unless reported (fixtures in ``conftest.py``, helpers in :mod:`tests.functional.consumer.support`).
"""

from __future__ import annotations

import gc
import math
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

import pytest
from celery import group, states

from devtools.cloud.event_source import make_context
from infra.consumer import runtime
from infra.consumer.memory import BUDGET_FRACTION, resident_bytes
from infra.consumer.pipeline import SAFETY_MARGIN_SECONDS
from infra.core import aws
from infra.core.observability import (
    METRIC_DEFERRED,
    METRIC_MEMORY_HIGH,
)
from infra.wire.protocol import decode
from tests.apps import probe
from tests.functional.consumer.support import (
    Message,
    Queues,
    emf_metrics,
    envelope,
    json_lines,
    marker,
    reset_backend,
    stored,
    task_id,
)
from tests.invoke import context_with, invoke
from tests.sqs_helpers import receive

pytestmark = pytest.mark.usefixtures("served")


# ---------------------------------------------------------------- time limits and deadline


def test_soft_time_limit_raises_inside_the_task(queues: Queues) -> None:
    result = probe.limited.apply_async(("soft",))
    messages = receive(queues.source.queue_url, 1)

    started = time.monotonic()
    assert invoke(queues.source, messages) == []

    assert time.monotonic() - started < 4
    assert stored(result.id).state == states.SUCCESS
    assert stored(result.id).result == "soft"


def test_hard_time_limit_is_a_failure(queues: Queues) -> None:
    result = probe.limited.apply_async(("hard",))
    messages = receive(queues.source.queue_url, 1)

    started = time.monotonic()
    assert invoke(queues.source, messages) == []

    assert time.monotonic() - started < 4
    meta = stored(result.id)
    assert meta.state == states.FAILURE
    assert type(meta.result).__name__ == "TimeLimitExceeded"


def test_message_time_limits_override_the_task(queues: Queues) -> None:
    result = probe.limited.apply_async(("soft",), soft_time_limit=0.2, time_limit=0.4)
    messages = receive(queues.source.queue_url, 1)

    started = time.monotonic()
    assert invoke(queues.source, messages) == []

    assert time.monotonic() - started < 1.2
    assert stored(result.id).result == "soft"


def test_task_longer_than_the_invocation_goes_back_to_sqs(
    queues: Queues, stdout: pytest.CaptureFixture[str]
) -> None:
    url = queues.source.queue_url
    slow, after = marker(), marker()
    slow_id = probe.sleep.apply_async((10, slow)).id
    [first] = receive(url, 1)
    after_id = probe.record.apply_async((after,)).id
    [second] = receive(url, 1)
    context = context_with(queues.source, SAFETY_MARGIN_SECONDS + 3)

    started = time.monotonic()
    failed = invoke(queues.source, [first, second], context)

    elapsed = time.monotonic() - started
    assert 2 < elapsed < 5, elapsed  # interrupted at the margin, not after 10 s
    assert failed == [first["MessageId"], second["MessageId"]]
    assert probe.calls(slow) == 1  # it had started
    assert stored(slow_id).state == states.PENDING  # not recorded as FAILURE
    assert probe.calls(after) == 0  # too little time left to start it
    assert stored(after_id).state == states.PENDING
    assert emf_metrics(stdout.readouterr().out)[METRIC_DEFERRED] == [1.0, 1.0]
    # The interrupted task left no request behind: the next task runs with its own.
    dumped = probe.dump.apply_async()
    assert invoke(queues.source, receive(url, 1)) == []
    assert stored(dumped.id).result["id"] == dumped.id


def test_records_not_started_near_the_deadline_are_all_returned(queues: Queues) -> None:
    done = [marker() for _ in range(3)]
    for m in done:
        probe.record.apply_async((m,))
    messages = receive(queues.source.queue_url, 3)

    failed = invoke(queues.source, messages, context_with(queues.source, 3))

    assert failed == [m["MessageId"] for m in messages]
    assert [probe.calls(m) for m in done] == [0, 0, 0]


# ---------------------------------------------------------------- failures and callbacks


def test_task_that_raises_is_a_recorded_failure_and_acked(queues: Queues) -> None:
    url = queues.source.queue_url
    boom, errback = marker(), marker()
    failing = probe.boom.apply_async((boom,), link_error=probe.on_error.s(marker=errback))
    callback_marker = marker()
    ok = probe.record.apply_async((marker(), callback_marker), link=probe.record.s())
    messages = receive(url, 2)

    failed = invoke(queues.source, messages)

    assert failed == []
    meta = stored(failing.id)
    assert meta.state == states.FAILURE
    assert isinstance(meta.result, ValueError) and str(meta.result) == f"boom {boom}"
    assert meta.traceback and "ValueError" in meta.traceback
    assert probe.calls(f"{errback}:{failing.id}:ValueError") == 1
    assert stored(ok.id).state == states.SUCCESS
    # The link callback is published with the result as its first argument.
    [callback] = receive(url, 1)
    assert callback["MessageId"] not in {m["MessageId"] for m in messages}
    headers = envelope(callback)["headers"]
    assert headers["task"] == "probe.record"
    assert headers["parent_id"] == ok.id and headers["root_id"] == ok.id
    assert invoke(queues.source, [callback]) == []
    assert probe.calls(callback_marker) == 1


# ---------------------------------------------------------------- the request


def _aware(value: Any) -> datetime:
    parsed = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def test_bound_request_matches_what_was_published(
    queues: Queues, published: dict[str, dict[str, Any]]
) -> None:
    eta = datetime.now(UTC) - timedelta(seconds=1)
    expires = datetime.now(UTC) + timedelta(hours=1)
    direct = probe.dump.apply_async((1, "a"), {"k": [2]}, eta=eta, expires=expires)
    members = group(probe.dump.s(i) for i in range(2)).apply_async()
    messages = receive(queues.source.queue_url, 3)

    assert invoke(queues.source, messages) == []

    seen = stored(direct.id).result
    sent = published[direct.id]
    assert seen["id"] == sent["id"] == direct.id
    assert seen["root_id"] == sent["root_id"] == direct.id
    assert seen["parent_id"] is sent["parent_id"] is None
    assert seen["group"] is None
    assert seen["retries"] == sent["retries"] == 0
    assert seen["routing_key"] == probe.app.conf.task_default_queue
    assert _aware(seen["eta"]) == _aware(sent["eta"]) == eta
    assert _aware(seen["expires"]) == _aware(sent["expires"]) == expires
    assert seen["called_directly"] is False and seen["is_eager"] is False
    assert seen["args"] == [1, "a"] and seen["kwargs"] == {"k": [2]}
    assert seen["correlation_id"] == direct.id
    assert seen["origin"] == sent["origin"]
    assert seen["hostname"].startswith("lambda@")
    for index, member in enumerate(members.results):
        fields = stored(member.id).result
        assert fields["group"] == published[member.id]["group"] == members.id
        assert fields["group_index"] == index
        assert fields["root_id"] == member.id and fields["parent_id"] is None


def test_task_sent_by_a_task_knows_its_parent_and_root(
    queues: Queues, published: dict[str, dict[str, Any]]
) -> None:
    url = queues.source.queue_url
    parent = probe.spawn.apply_async()
    assert invoke(queues.source, receive(url, 1)) == []
    child_id = stored(parent.id).result
    [child] = receive(url, 1)
    assert task_id(child) == child_id

    assert invoke(queues.source, [child]) == []

    seen = stored(child_id).result
    assert seen["parent_id"] == published[child_id]["parent_id"] == parent.id
    assert seen["root_id"] == published[child_id]["root_id"] == parent.id
    assert seen["args"] == ["from a task"]
    assert seen["called_directly"] is False


# ---------------------------------------------------------------- result backends


def test_filesystem_backend_stores_results_unless_ignored(queues: Queues, tmp_path: Path) -> None:
    saved = probe.app.conf.result_backend
    probe.app.conf.result_backend = f"file://{tmp_path}"
    reset_backend(probe.app)
    try:
        kept, ignored = marker(), marker()
        kept_id = probe.record.apply_async((kept, "stored")).id
        ignored_id = probe.record.apply_async((ignored, "dropped"), ignore_result=True).id
        messages = receive(queues.source.queue_url, 2)

        assert invoke(queues.source, messages) == []

        assert probe.calls(kept) == probe.calls(ignored) == 1
        assert {p.name for p in tmp_path.iterdir()} == {f"celery-task-meta-{kept_id}"}
        assert stored(kept_id).state == states.SUCCESS
        assert stored(kept_id).result == "stored"
        assert stored(ignored_id).state == states.PENDING
    finally:
        probe.app.conf.result_backend = saved
        reset_backend(probe.app)


# ---------------------------------------------------------------- resources


class Recycled(BaseException):
    """What the fake exit raises: like ``os._exit``, nothing in the handler may catch it."""


def _exit() -> NoReturn:
    raise Recycled


def _first_task(messages: list[Message], name: str) -> list[Message]:
    """``messages`` with those of task ``name`` first (the batch order the test needs)."""
    return sorted(messages, key=lambda m: decode(m["Body"], message_id="m").task_name != name)


def _visible_again(queues: Queues, messages: list[Message]) -> list[Message]:
    """Make reported messages receivable now (instead of after the visibility timeout)."""
    for m in messages:
        aws.client("sqs").change_message_visibility(
            QueueUrl=queues.source.queue_url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0
        )
    return receive(queues.source.queue_url, len(messages))


# The fake exit returns through Powertools' metrics decorator, which warns it has nothing to
# flush; os._exit would not return at all.
@pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")
def test_memory_over_budget_stops_starting_records_and_recycles_later(
    queues: Queues, stdout: pytest.CaptureFixture[str]
) -> None:
    hogged, later = marker(), marker()
    probe.hog.apply_async((hogged, 120))
    probe.record.apply_async((later,))
    probe.record.apply_async((later,))
    messages = _first_task(receive(queues.source.queue_url, 3), "probe.hog")
    limit_mb = math.ceil((resident_bytes() + 60 * 2**20) / BUDGET_FRACTION / 2**20)
    context = make_context(queues.source, memory_limit_in_mb=limit_mb)
    try:
        failed = invoke(queues.source, messages, context)

        assert failed == [m["MessageId"] for m in messages[1:]]  # reported back, not lost
        assert probe.calls(hogged) == 1 and probe.calls(later) == 0
        out = stdout.readouterr().out
        warnings = json_lines(out, lambda o: o.get("message", "").startswith("resident memory"))
        assert [w["message_id"] for w in warnings] == failed  # one per record not started
        assert all(w["grown_most_by"] == "probe.hog" and w["grown_mb"] >= 100 for w in warnings)
        assert emf_metrics(out)[METRIC_MEMORY_HIGH] == [1.0, 1.0]

        runtime.pipeline().memory.exit = _exit
        again = _visible_again(queues, messages[1:])
        with pytest.raises(Recycled):  # still over budget on the next invocation: a fresh one
            invoke(queues.source, again, context)
        assert probe.calls(later) == 0
    finally:
        probe.release_memory()

    gc.collect()
    assert invoke(queues.source, _visible_again(queues, again), context) == []
    assert probe.calls(later) == 2


def test_a_task_leaking_a_thread_and_a_file_does_not_stop_later_records(
    queues: Queues, tmp_path: Path
) -> None:
    leaked, later = marker(), marker()
    probe.leak.apply_async((leaked, str(tmp_path / "left-open.txt")))
    probe.record.apply_async((later,))
    probe.record.apply_async((later,))
    messages = _first_task(receive(queues.source.queue_url, 3), "probe.leak")
    try:
        assert invoke(queues.source, messages) == []

        assert probe.calls(leaked) == 1 and probe.calls(later) == 2
        assert any(t.name == f"leaked-{leaked}" for t in threading.enumerate())
    finally:
        probe.close_leaks()
