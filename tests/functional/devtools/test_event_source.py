"""The SQS event-source emulator against moto: event shape, batching, partial failures, redrive,
deadlines, and pollers as threads of one environment or in processes of their own.

Every test gets fresh queues (a queue and its DLQ) so that no test sees another's messages.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.cloud.deploy import Deployment, EventSource
from devtools.cloud.event_source import (
    ConsumeStats,
    EventSourcePoller,
    Handler,
    build_event,
    consume,
    handler_from_source,
    make_context,
    parse_batch_response,
    resolve_handler,
)
from infra.core import aws
from infra.core.errors import ConfigurationError
from tests.sqs_helpers import counts, queue_with_dlq

MakeSource = Callable[..., EventSource]
Response = Callable[[dict[str, Any]], Any]

PURE_SOURCE = EventSource(
    function="TestFunction",
    handler="tests.functional.devtools.test_event_source.noop",
    queue_url="http://127.0.0.1:1/123456789012/q",
    queue_arn="arn:aws:sqs:us-east-1:123456789012:q",
    batch_size=10,
    batching_window=0,
    timeout=120,
    report_batch_item_failures=True,
)


# ---------------------------------------------------------------- handlers


def noop(event: dict[str, Any], context: Any) -> None:
    """A handler that succeeds without looking."""


def explode(event: dict[str, Any], context: Any) -> None:
    """A handler whose invocation fails."""
    raise RuntimeError("boom")


class Recorder:
    """A handler that keeps each event and the context's remaining time, answering ``respond``."""

    def __init__(self, respond: Response = lambda event: None) -> None:
        self.respond = respond
        self.events: list[dict[str, Any]] = []
        self.remaining: list[int] = []
        self.threads: list[threading.Thread] = []

    def __call__(self, event: dict[str, Any], context: Any) -> Any:
        self.events.append(event)
        self.remaining.append(context.get_remaining_time_in_millis())
        self.threads.append(threading.current_thread())
        return self.respond(event)

    @property
    def records(self) -> list[dict[str, Any]]:
        return [record for event in self.events for record in event["Records"]]


def fail(predicate: Callable[[dict[str, Any]], bool]) -> Response:
    """A response reporting the records ``predicate`` picks as batch item failures."""

    def respond(event: dict[str, Any]) -> dict[str, Any]:
        failed = [r["messageId"] for r in event["Records"] if predicate(r)]
        return {"batchItemFailures": [{"itemIdentifier": i} for i in failed]}

    return respond


def append_records(path: str, event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Write one JSON line per record to ``path``; other processes' deliveries become visible."""
    main = threading.current_thread() is threading.main_thread()
    lines = [
        json.dumps(
            {"pid": os.getpid(), "main": main, "arn": r["eventSourceARN"], "body": r["body"]}
        )
        for r in event["Records"]
    ]
    with open(path, "a") as out:
        out.write("".join(line + "\n" for line in lines))
    time.sleep(0.2)  # leave work for the other invocations
    return {"batchItemFailures": []}


def file_recorder(path: str, source: EventSource) -> Handler:
    """A picklable ``handler_factory`` for pollers in other processes."""
    return functools.partial(append_records, path)


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ---------------------------------------------------------------- queues


@pytest.fixture
def make_source(cloud: Deployment) -> Iterator[MakeSource]:
    """Create a fresh queue with a DLQ and an EventSource for it; delete both afterwards."""
    sqs = aws.client("sqs")
    created: list[str] = []

    def make(*, max_receive_count: int = 5, fifo: bool = False, **fields: Any) -> EventSource:
        name = f"test-{uuid.uuid4().hex[:12]}" + (".fifo" if fifo else "")
        queue = queue_with_dlq(
            name, max_receive_count=max_receive_count, attributes={"VisibilityTimeout": "30"}
        )
        url = queue.url
        created.extend([url, queue.dlq_url])
        defaults: dict[str, Any] = {
            "function": "TestFunction",
            "handler": "tests.functional.devtools.test_event_source.noop",
            "queue_url": url,
            "queue_arn": queue.arn,
            "batch_size": 10,
            "batching_window": 0,
            "timeout": 30,
            "report_batch_item_failures": True,
        }
        return EventSource(**{**defaults, **fields})

    yield make
    for url in created:
        sqs.delete_queue(QueueUrl=url)


def dlq_url(source: EventSource) -> str:
    base, dot, fifo = source.queue_url.partition(".fifo")
    return f"{base}-dlq{dot}{fifo}"


def send(source: EventSource, bodies: list[str], **options: Any) -> None:
    sqs = aws.client("sqs")
    for start in range(0, len(bodies), 10):
        entries = [
            {"Id": str(i), "MessageBody": body, **options}
            for i, body in enumerate(bodies[start : start + 10])
        ]
        response = sqs.send_message_batch(QueueUrl=source.queue_url, Entries=entries)
        assert not response.get("Failed")


# ---------------------------------------------------------------- event and context


def test_event_has_the_lambda_sqs_shape(make_source: MakeSource, cloud: Deployment) -> None:
    source = make_source()
    sqs = aws.client("sqs")
    sqs.send_message(
        QueueUrl=source.queue_url,
        MessageBody="with-attributes",
        MessageAttributes={
            "kind": {"DataType": "String", "StringValue": "task"},
            "count": {"DataType": "Number", "StringValue": "3"},
            "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01"},
        },
    )
    sqs.send_message(QueueUrl=source.queue_url, MessageBody="plain")
    recorder = Recorder()

    outcome = EventSourcePoller(source, recorder).poll_once(wait_seconds=1)

    assert outcome is not None and outcome.size == 2 and outcome.failed_ids == ()
    [event] = recorder.events
    json.dumps(event)  # a real event is JSON
    records = {r["body"]: r for r in event["Records"]}
    common = {"messageId", "receiptHandle", "body", "attributes", "messageAttributes"}
    common |= {"md5OfBody", "eventSource", "eventSourceARN", "awsRegion"}
    assert set(records["plain"]) == common
    assert set(records["with-attributes"]) == common | {"md5OfMessageAttributes"}
    assert len({r["messageId"] for r in event["Records"]}) == 2
    for body, record in records.items():
        attributes = record["attributes"]
        assert {"ApproximateReceiveCount", "SentTimestamp", "SenderId"} <= set(attributes)
        assert "ApproximateFirstReceiveTimestamp" in attributes
        assert attributes["ApproximateReceiveCount"] == "1"
        assert attributes["SentTimestamp"].isdigit()
        assert abs(int(attributes["SentTimestamp"]) / 1000 - time.time()) < 60
        assert record["md5OfBody"] == hashlib.md5(body.encode()).hexdigest()
        assert record["eventSource"] == "aws:sqs"
        assert record["eventSourceARN"] == source.queue_arn
        assert record["awsRegion"] == cloud.region
    assert records["plain"]["messageAttributes"] == {}
    assert records["with-attributes"]["messageAttributes"] == {
        "kind": {
            "stringValue": "task",
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": "String",
        },
        "count": {
            "stringValue": "3",
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": "Number",
        },
        "blob": {
            "binaryValue": base64.b64encode(b"\x00\x01").decode(),
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": "Binary",
        },
    }
    assert 25_000 < recorder.remaining[0] <= 30_000  # the context's deadline is the timeout
    assert counts(source.queue_url) == (0, 0, 0)


def test_fifo_records_carry_group_dedup_and_sequence(make_source: MakeSource) -> None:
    source = make_source(fifo=True)
    aws.client("sqs").send_message(
        QueueUrl=source.queue_url, MessageBody="c", MessageGroupId="g1", MessageDeduplicationId="d"
    )
    recorder = Recorder()

    EventSourcePoller(source, recorder).run(until_empty=True)

    [record] = [r for r in recorder.records if r["body"] == "c"]
    assert record["attributes"]["MessageGroupId"] == "g1"
    assert record["attributes"]["MessageDeduplicationId"] == "d"
    assert record["attributes"]["SequenceNumber"].isdigit()


def test_context_deadline_is_now_plus_the_function_timeout() -> None:
    now = [1_000.0]
    context = make_context(PURE_SOURCE, clock=lambda: now[0])

    assert context.deadline_ms == 1_120_000
    assert context.get_remaining_time_in_millis() == 120_000
    now[0] += 20
    assert context.get_remaining_time_in_millis() == 100_000
    now[0] += 500
    assert context.get_remaining_time_in_millis() == 0
    assert context.function_name == "TestFunction"
    assert context.function_version == "$LATEST"
    assert context.invoked_function_arn == (
        "arn:aws:lambda:us-east-1:123456789012:function:TestFunction"
    )
    assert context.log_group_name == "/aws/lambda/TestFunction"
    assert context.log_stream_name.startswith("1970/01/01/[$LATEST]")
    assert context.aws_request_id != make_context(PURE_SOURCE).aws_request_id


def test_handler_past_its_deadline_fails_the_batch(make_source: MakeSource) -> None:
    source = make_source(timeout=30)
    send(source, ["slow"])
    now = [time.time()]

    def slow(event: dict[str, Any], context: Any) -> None:
        now[0] += 31  # Lambda would have stopped the function here

    outcome = EventSourcePoller(source, slow, clock=lambda: now[0]).poll_once(wait_seconds=1)

    assert outcome is not None and outcome.handler_error == "Task timed out after 30 seconds"
    assert counts(source.queue_url) == (0, 1, 0)


def test_build_event_has_no_md5_of_attributes_without_attributes() -> None:
    message = {"MessageId": "m", "ReceiptHandle": "r", "Body": "b", "MD5OfBody": "x"}

    [record] = build_event([message], PURE_SOURCE, "eu-west-1")["Records"]

    assert "md5OfMessageAttributes" not in record
    assert record["attributes"] == {} and record["awsRegion"] == "eu-west-1"


# ---------------------------------------------------------------- batching


def test_batches_never_exceed_the_batch_size(make_source: MakeSource) -> None:
    source = make_source(batch_size=10)
    bodies = [f"m{i}" for i in range(25)]
    send(source, bodies)
    recorder = Recorder()

    stats = EventSourcePoller(source, recorder).run(until_empty=True)

    sizes = [len(event["Records"]) for event in recorder.events]
    assert max(sizes) <= 10
    assert sorted(r["body"] for r in recorder.records) == sorted(bodies)
    assert stats == ConsumeStats(batches=len(sizes), records=25, failures=0)


def test_batch_size_over_ten_gathers_several_receives(make_source: MakeSource) -> None:
    source = make_source(batch_size=25, batching_window=5)
    send(source, [f"m{i}" for i in range(25)])

    outcome = EventSourcePoller(source, noop).poll_once(wait_seconds=1)

    assert outcome is not None and outcome.size == 25


def test_window_zero_is_a_single_receive(make_source: MakeSource) -> None:
    source = make_source(batch_size=25, batching_window=0)
    send(source, [f"m{i}" for i in range(15)])

    outcome = EventSourcePoller(source, noop).poll_once(wait_seconds=1)

    assert outcome is not None and outcome.size == 10


def test_batching_window_gathers_records_that_arrive_late(make_source: MakeSource) -> None:
    source = make_source(batch_size=10, batching_window=2)
    send(source, ["early"])
    late = threading.Timer(0.5, send, args=(source, ["late"]))
    late.start()
    recorder = Recorder()

    outcome = EventSourcePoller(source, recorder).poll_once(wait_seconds=1)
    late.join()

    assert outcome is not None and outcome.size == 2
    assert sorted(r["body"] for r in recorder.records) == ["early", "late"]


def test_records_past_the_payload_limit_go_back_at_once(
    make_source: MakeSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("devtools.cloud.poller._PAYLOAD_BUDGET", 6_000)  # 6 MB, scaled down
    source = make_source(batch_size=10)
    send(source, ["x" * 2_000] * 5)
    recorder = Recorder()

    outcome = EventSourcePoller(source, recorder).poll_once(wait_seconds=1)

    assert outcome is not None and 0 < outcome.size < 5
    assert len(json.dumps(recorder.events[0])) <= 6_000
    assert counts(source.queue_url) == (5 - outcome.size, 0, 0)


# ---------------------------------------------------------------- failures


def test_partial_failure_deletes_only_the_others(make_source: MakeSource) -> None:
    source = make_source()
    send(source, [f"m{i}" for i in range(5)])
    recorder = Recorder(fail(lambda r: r["body"] == "m2"))
    poller = EventSourcePoller(source, recorder, failed_visibility=1)

    first = poller.poll_once(wait_seconds=1)

    assert first is not None and first.size == 5 and first.handler_error is None
    [failed] = [r for r in recorder.records if r["body"] == "m2"]
    assert first.failed_ids == (failed["messageId"],)
    assert counts(source.queue_url) == (0, 1, 0)

    recorder.respond = lambda event: None
    second = poller.poll_once(wait_seconds=5)

    assert second is not None and second.size == 1
    [again] = recorder.events[1]["Records"]
    assert again["messageId"] == failed["messageId"]
    assert again["attributes"]["ApproximateReceiveCount"] == "2"
    assert counts(source.queue_url) == (0, 0, 0)


def test_handler_exception_deletes_nothing(make_source: MakeSource) -> None:
    source = make_source()
    send(source, ["a", "b", "c"])

    outcome = EventSourcePoller(source, explode, failed_visibility=1).poll_once(wait_seconds=1)

    assert outcome is not None and outcome.handler_error == "RuntimeError: boom"
    assert len(outcome.failed_ids) == 3
    recorder = Recorder()
    EventSourcePoller(source, recorder).run(until_empty=True)
    assert sorted(r["body"] for r in recorder.records) == ["a", "b", "c"]
    assert {r["attributes"]["ApproximateReceiveCount"] for r in recorder.records} == {"2"}


@pytest.mark.parametrize(
    "response",
    [
        {"batchItemFailures": [{"itemIdentifier": "not-in-this-batch"}]},
        {"batchItemFailures": [{"itemIdentifier": ""}]},
        {"batchItemFailures": [{"itemIdentifier": None}]},
        {"batchItemFailures": [{"messageId": "bad key name"}]},
        {"batchItemFailures": "everything"},
        "not an object",
        {"batchItemFailures": [], "unserialisable": {1, 2}},
    ],
    ids=["unknown-id", "empty-id", "null-id", "bad-key", "not-a-list", "not-a-dict", "no-json"],
)
def test_invalid_batch_response_fails_the_whole_batch(
    make_source: MakeSource, response: object
) -> None:
    source = make_source()
    send(source, ["a", "b", "c"])

    outcome = EventSourcePoller(source, Recorder(lambda event: response)).poll_once(1)

    assert outcome is not None and outcome.handler_error is not None
    assert len(outcome.failed_ids) == 3
    assert counts(source.queue_url) == (0, 3, 0)


@pytest.mark.parametrize(
    "response", [None, {}, {"batchItemFailures": []}, {"batchItemFailures": None}]
)
def test_empty_batch_responses_mean_success(response: object) -> None:
    assert parse_batch_response(response, ["a", "b"]) == ((), None)


def test_without_report_batch_item_failures_success_deletes_all(make_source: MakeSource) -> None:
    source = make_source(report_batch_item_failures=False)
    send(source, ["a", "b"])

    outcome = EventSourcePoller(source, Recorder(fail(lambda r: True))).poll_once(1)

    assert outcome is not None and outcome.failed_ids == ()
    assert counts(source.queue_url) == (0, 0, 0)


def test_message_failing_every_time_moves_to_the_dlq(make_source: MakeSource) -> None:
    source = make_source(max_receive_count=2)
    send(source, ["poison"])
    recorder = Recorder(fail(lambda r: True))

    stats = EventSourcePoller(source, recorder, failed_visibility=0).run(until_empty=True)

    assert [r["attributes"]["ApproximateReceiveCount"] for r in recorder.records] == ["1", "2"]
    assert stats == ConsumeStats(batches=2, records=2, failures=2)
    assert counts(source.queue_url) == (0, 0, 0)
    moved = aws.client("sqs").receive_message(QueueUrl=dlq_url(source), WaitTimeSeconds=1)
    [message] = moved["Messages"]
    assert message["Body"] == "poison"
    assert message["MessageId"] == recorder.records[0]["messageId"]


def test_until_empty_waits_for_delayed_and_in_flight_records(make_source: MakeSource) -> None:
    source = make_source()
    send(source, ["now", "retry"])
    send(source, ["later"], DelaySeconds=2)
    first_try = lambda r: r["body"] == "retry" and r["attributes"]["ApproximateReceiveCount"] == "1"  # noqa: E731
    recorder = Recorder(fail(first_try))

    stats = EventSourcePoller(source, recorder, failed_visibility=1).run(until_empty=True)

    assert sorted(r["body"] for r in recorder.records) == ["later", "now", "retry", "retry"]
    assert stats.records == 4 and stats.failures == 1
    assert counts(source.queue_url) == (0, 0, 0)


# ---------------------------------------------------------------- consume


def test_one_source_at_concurrency_one_runs_in_this_thread(make_source: MakeSource) -> None:
    source = make_source()
    send(source, ["a", "b"])
    recorder = Recorder()

    stats = consume([source], lambda s: recorder, until_empty=True)

    assert stats.records == 2
    assert recorder.threads and all(t is threading.current_thread() for t in recorder.threads)


class Overlaps:
    """A handler noting where each invocation ran and whether two ever ran at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0
        self.bodies: list[str] = []
        self.threads: set[threading.Thread] = set()

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
            self.threads.add(threading.current_thread())
        time.sleep(0.05)  # long enough for another poller's batch to arrive meanwhile
        with self.lock:
            self.bodies += [r["body"] for r in event["Records"]]
            self.running -= 1
        return {"batchItemFailures": []}


def test_poller_threads_take_turns_invoking_in_the_calling_thread(
    make_source: MakeSource,
) -> None:
    first, second = make_source(batch_size=2), make_source(batch_size=2)
    send(first, [f"a{i}" for i in range(8)])
    send(second, [f"b{i}" for i in range(8)])
    handler = Overlaps()
    factories: list[EventSource] = []

    def factory(source: EventSource) -> Handler:
        factories.append(source)
        return handler

    stats = consume([first, second], factory, concurrency=2, until_empty=True, wait_seconds=1)

    assert sorted(handler.bodies) == sorted(
        [f"a{i}" for i in range(8)] + [f"b{i}" for i in range(8)]
    )
    assert stats.records == 16 and stats.failures == 0
    assert handler.threads == {threading.current_thread()}  # where the handler's signals work
    assert handler.most == 1  # one execution environment: one invocation at a time
    assert factories == [first, second]  # the handler is imported once per source, not per poller
    assert counts(first.queue_url) == counts(second.queue_url) == (0, 0, 0)


def test_a_missing_queue_fails_consume_in_one_clear_line(make_source: MakeSource) -> None:
    present = make_source()
    gone = dataclasses.replace(present, queue_url=f"{present.queue_url}-gone")

    with pytest.raises(ConfigurationError, match="does not exist") as caught:
        consume([present, gone], lambda s: noop, until_empty=True, wait_seconds=1)

    assert gone.queue_url in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("start_method", ["spawn", "fork"])
def test_two_processes_consume_everything_exactly_once(
    make_source: MakeSource, tmp_path: Path, start_method: str
) -> None:
    source = make_source(batch_size=2)
    bodies = [f"m{i}" for i in range(20)]
    send(source, bodies)
    path = tmp_path / "deliveries.jsonl"

    factory = functools.partial(file_recorder, str(path))
    stats = consume(
        [source],
        factory,
        concurrency=2,
        until_empty=True,
        processes=True,
        start_method=start_method,
    )

    lines = read_lines(path)
    assert sorted(line["body"] for line in lines) == sorted(bodies)
    assert stats.records == 20 and stats.failures == 0
    pids = {line["pid"] for line in lines}
    assert len(pids) == 2 and os.getpid() not in pids
    assert all(line["main"] for line in lines)  # where the handler's signals work


def test_several_sources_each_get_their_own_process(
    make_source: MakeSource, tmp_path: Path
) -> None:
    first, second = make_source(), make_source()
    send(first, ["a1", "a2"])
    send(second, ["b1", "b2"])
    path = tmp_path / "deliveries.jsonl"

    factory = functools.partial(file_recorder, str(path))
    stats = consume([first, second], factory, until_empty=True, processes=True)

    lines = read_lines(path)
    by_queue = {
        arn: sorted(x["body"] for x in lines if x["arn"] == arn)
        for arn in {first.queue_arn, second.queue_arn}
    }
    assert by_queue == {first.queue_arn: ["a1", "a2"], second.queue_arn: ["b1", "b2"]}
    assert stats.records == 4
    assert len({line["pid"] for line in lines}) == 2


@pytest.mark.parametrize("processes", [False, True], ids=["threads", "processes"])
def test_stop_ends_every_poller(make_source: MakeSource, tmp_path: Path, processes: bool) -> None:
    source = make_source()
    stop = threading.Event()
    timer = threading.Timer(1.0, stop.set)
    timer.start()

    factory = functools.partial(file_recorder, str(tmp_path / "none.jsonl"))
    stats = consume(
        [source], factory, concurrency=2, stop=stop, wait_seconds=1, processes=processes
    )
    timer.join()

    assert stats == ConsumeStats()


@pytest.mark.parametrize("processes", [False, True], ids=["threads", "processes"])
def test_a_handler_that_cannot_load_fails_consume(make_source: MakeSource, processes: bool) -> None:
    source = make_source(handler="tests.functional.no_such_module.handler")

    with pytest.raises(ConfigurationError, match="no_such_module"):
        consume([source], handler_from_source, concurrency=2, until_empty=True, processes=processes)


# ---------------------------------------------------------------- resolving handlers


def test_resolve_handler_finds_the_function() -> None:
    assert resolve_handler("tests.functional.devtools.test_event_source.noop") is noop
    assert handler_from_source(PURE_SOURCE) is noop


@pytest.mark.parametrize(
    "dotted", ["handler", "tests.functional.no_such_module.handler", "json.no_such", "json.__doc__"]
)
def test_resolve_handler_explains_what_is_wrong(dotted: str) -> None:
    with pytest.raises(ConfigurationError):
        resolve_handler(dotted)


def test_failed_visibility_is_checked() -> None:
    with pytest.raises(ConfigurationError, match="failed_visibility"):
        EventSourcePoller(PURE_SOURCE, noop, failed_visibility=-1)
