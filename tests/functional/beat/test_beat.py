"""The scheduled tick against moto in server mode: DynamoDB's conditional writes decide.

The test-only app ``tests.apps.beat`` publishes through the real publish path (our SQS transport)
to this module's queues; its slots are recorded in the deployed results table. Entry names are
unique per test: the table outlives the tests.

moto in server mode does not serialise writes to one item as DynamoDB does: two conditional
UpdateItems arriving together can both read the old item and both succeed. The overlapping-ticks
proof therefore sends its UpdateItems one at a time (:class:`OneWriteAtATime`), which is the
guarantee DynamoDB gives; the ticks themselves (reads, claims, publishes) still interleave.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from celery._state import get_current_app

import handlers.beat
from devtools.cloud.deploy import Deployment
from devtools.cloud.lambda_events import build_scheduled_event, make_context
from devtools.cloud.session import point_app_at
from devtools.ops.target import NO_ENVIRONMENT
from infra.beat import runtime as beat_runtime
from infra.beat.engine import Beat, Entry, slot_task_id
from infra.beat.report import TickReport
from infra.beat.runtime import beat_for_app
from infra.beat.state import DynamoDBBeatState
from infra.core import aws
from infra.core.errors import StoreError
from infra.core.settings import Settings
from infra.store.items import beat_key
from infra.wire.protocol import TaskMessage, decode
from tests.apps import beat as beat_app
from tests.sqs_helpers import counts, queue_with_dlq, receive

app = beat_app.app
MINUTE = 60


@dataclasses.dataclass(frozen=True)
class Queues:
    main: str
    main_url: str
    other: str
    other_url: str


@pytest.fixture(scope="module")
def queues(cloud: Deployment) -> Iterator[Queues]:
    """Two fresh queues; the app publishes to the first unless an entry names the second."""
    name = f"beat-{uuid.uuid4().hex[:8]}"
    main, other = queue_with_dlq(name), queue_with_dlq(f"{name}-other")
    previous = get_current_app()
    point_app_at(app, cloud)
    options = dict(app.conf.broker_transport_options)
    options["predefined_queues"] = {
        **options.get("predefined_queues", {}),
        name: {"url": main.url},
        f"{name}-other": {"url": other.url},
    }
    app.conf.broker_transport_options = options
    app.conf.task_default_queue = name
    yield Queues(name, main.url, f"{name}-other", other.url)
    previous.set_current()
    for url in (main.url, main.dlq_url, other.url, other.dlq_url):
        aws.client("sqs").delete_queue(QueueUrl=url)


@pytest.fixture
def schedule(queues: Queues) -> Iterator[Callable[..., list[str]]]:
    """Set the app's beat_schedule to entries with unique names (returned in order)."""
    for url in (queues.main_url, queues.other_url):
        aws.client("sqs").purge_queue(QueueUrl=url)
    suffix = uuid.uuid4().hex[:8]

    def set_entries(**entries: dict[str, Any]) -> list[str]:
        app.conf.beat_schedule = {f"{name}-{suffix}": spec for name, spec in entries.items()}
        return list(app.conf.beat_schedule)

    yield set_entries
    app.conf.beat_schedule = {}


class OneWriteAtATime:
    """A DynamoDB client whose UpdateItems are serialised, as DynamoDB serialises one item's."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._lock = threading.Lock()

    def update_item(self, **request: Any) -> Any:
        with self._lock:
            return self._client.update_item(**request)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def store() -> DynamoDBBeatState:
    settings = Settings.from_env()
    return DynamoDBBeatState(aws.client("dynamodb", settings), settings.results_table)


def make_beat(now: float, **overrides: Any) -> Beat:
    return beat_for_app(app, Settings.from_env(), clock=lambda: now, **overrides)


def on_the_minute(offset: int = 2) -> int:
    """A time a few seconds past the current minute, as EventBridge ticks."""
    return math.floor(time.time() / MINUTE) * MINUTE + offset


def messages(url: str, count: int) -> list[TaskMessage]:
    received = receive(url, count)
    assert counts(url)[0] == 0, "more messages than expected"
    return [decode(m["Body"], message_id=m["MessageId"]) for m in received]


def recorded(name: str) -> int | None:
    return store().last_slots([name]).get(name)


def fired(*reports: TickReport) -> list[tuple[str, int]]:
    return sorted((f.entry, f.slot) for report in reports for f in report.fired)


# ---------------------------------------------------------------- exactly once


def test_overlapping_ticks_for_the_same_minute_publish_once(
    schedule: Callable[..., list[str]], queues: Queues
) -> None:
    names = schedule(**{f"e{i}": {"task": "beat_probe.echo", "schedule": 60} for i in range(4)})
    now = on_the_minute()
    for name in names:  # each last fired three minutes ago: three slots due per entry
        assert store().claim(name, now - 2 - 3 * MINUTE).won
    barrier = threading.Barrier(2)
    reports: list[TickReport] = []
    serialised = dataclasses.replace(store(), dynamodb=OneWriteAtATime(store().dynamodb))

    def tick() -> None:
        beat = make_beat(now, state=serialised)
        barrier.wait()
        reports.append(beat.tick())

    threads = [threading.Thread(target=tick) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    slots = [now - 2 - m * MINUTE for m in (2, 1, 0)]
    expected = sorted((name, slot) for name in names for slot in slots)
    assert fired(*reports) == expected
    ids = sorted(m.task_id for m in messages(queues.main_url, len(expected)))
    assert ids == sorted(slot_task_id(name, slot) for name, slot in expected)
    assert all(recorded(name) == now - 2 for name in names)


def test_retried_tick_publishes_nothing_new(
    schedule: Callable[..., list[str]], queues: Queues
) -> None:
    (name,) = schedule(minutely={"task": "beat_probe.echo", "schedule": 60, "args": (1,)})
    now = on_the_minute()

    first = make_beat(now).tick()
    retried = make_beat(now + 25).tick()

    assert fired(first) == [(name, now - 2)]
    assert retried.fired == () and retried.failed == ()
    (message,) = messages(queues.main_url, 1)
    assert (message.task_id, message.args) == (slot_task_id(name, now - 2), (1,))


def test_missed_tick_catches_up_within_the_window_and_skips_older_slots(
    schedule: Callable[..., list[str]], queues: Queues
) -> None:
    (name,) = schedule(minutely={"task": "beat_probe.echo", "schedule": 60})
    now = on_the_minute()
    assert store().claim(name, now - 2 - 10 * MINUTE).won  # the last tick ran ten minutes ago

    report = make_beat(now, catchup_seconds=5 * MINUTE).tick()

    due = [now - 2 - m * MINUTE for m in range(4, -1, -1)]  # within 300 s of now: 4..0 ago
    assert [f.slot for f in report.fired] == due
    (skipped,) = report.skipped
    assert (skipped.count, skipped.first, skipped.through) == (
        5,
        now - 2 - 9 * MINUTE,
        now - 2 - 5 * MINUTE,
    )
    assert len(messages(queues.main_url, len(due))) == len(due)
    assert recorded(name) == now - 2
    assert make_beat(now + 30, catchup_seconds=5 * MINUTE).tick().skipped == ()


def test_failed_publish_is_given_back_and_published_by_the_next_tick(
    schedule: Callable[..., list[str]], queues: Queues
) -> None:
    (name,) = schedule(minutely={"task": "beat_probe.echo", "schedule": 60})
    now = on_the_minute()

    def broken(entry: Entry, task_id: str) -> None:
        raise ConnectionError("SQS unreachable")

    failing = make_beat(now, publish=broken).tick()
    recovered = make_beat(now + MINUTE).tick()

    assert failing.failed[0].released and recorded(name) is not None
    assert fired(recovered) == [(name, now - 2), (name, now - 2 + MINUTE)]
    assert len(messages(queues.main_url, 2)) == 2


def test_options_route_and_expire_the_task_as_beat_does(
    schedule: Callable[..., list[str]], queues: Queues
) -> None:
    (name,) = schedule(
        routed={
            "task": "beat_probe.echo",
            "schedule": 60,
            "args": (2, 2),
            "kwargs": {"k": "v"},
            "options": {"queue": queues.other, "expires": 120},
        },
        unregistered={"task": "elsewhere.defined", "schedule": 60},
    )[:1]
    now = on_the_minute()

    report = make_beat(now).tick()

    assert len(report.fired) == 2 and report.failed == ()
    (routed,) = messages(queues.other_url, 1)
    assert (routed.task_id, routed.task_name) == (slot_task_id(name, now - 2), "beat_probe.echo")
    assert (routed.args, routed.kwargs) == ((2, 2), {"k": "v"})
    assert routed.expires is not None and routed.headers.get("celery_beat_task") is True
    (sent,) = messages(queues.main_url, 1)
    assert sent.task_name == "elsewhere.defined"


def test_store_errors_are_translated(cloud: Deployment) -> None:
    settings = Settings.from_env()
    missing = DynamoDBBeatState(aws.client("dynamodb", settings), "no-such-table")

    with pytest.raises(StoreError, match="no-such-table"):
        missing.last_slots(["x"])
    with pytest.raises(StoreError):
        missing.claim("x", 60)
    with pytest.raises(StoreError):
        missing.release("x", 60)


def test_records_never_expire_and_stay_out_of_the_indexes(
    schedule: Callable[..., list[str]],
) -> None:
    (name,) = schedule(minutely={"task": "beat_probe.echo", "schedule": 60})
    make_beat(on_the_minute()).tick()

    item = aws.client("dynamodb").get_item(
        TableName=Settings.from_env().results_table,
        Key={"id": {"S": beat_key(name)}},
        ConsistentRead=True,
    )["Item"]

    assert set(item) == {"id", "last_slot", "updated_at"}


# ---------------------------------------------------------------- the handler


def test_handler_publishes_the_due_entry_on_a_scheduled_event(
    cloud: Deployment,
    schedule: Callable[..., list[str]],
    queues: Queues,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (source,) = cloud.schedules
    assert (source.function, source.handler, source.expression) == (
        "BeatFunction",
        "handlers.beat.handler",
        "cron(* * * * ? *)",
    )
    (name,) = schedule(minutely={"task": "beat_probe.echo", "schedule": 60, "args": (4, 4)})
    monkeypatch.setenv("CELERY_APP", "tests.apps.beat:app")
    beat_runtime.scheduler.cache_clear()
    previous = get_current_app()
    try:
        response = handlers.beat.handler(build_scheduled_event(source), make_context(source))
    finally:
        beat_runtime.scheduler.cache_clear()
        previous.set_current()

    (entry,) = response["fired"]
    assert entry["entry"] == name and response["failed"] == []
    (message,) = messages(queues.main_url, 1)
    assert (message.task_id, message.args) == (entry["task_id"], (4, 4))
    assert message.headers.get("celery_beat_task") is True


# ---------------------------------------------------------------- the operator's view and the demo

ROOT = Path(__file__).resolve().parents[3]


def run_schedule(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "celery", "-A", "tasks", "lambda", "schedule", "--count", "2"],
        cwd=ROOT,
        env={**env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_schedule_lists_entries_with_next_runs_and_the_last_fired_slot(
    cloud_env: dict[str, str],
) -> None:
    slot = on_the_minute(offset=0) - MINUTE
    store().claim("add-every-minute", slot)  # tasks.app's entry (celeryconfig)

    out = run_schedule(cloud_env)

    assert out.returncode == 0, out.stderr
    (row,) = [line for line in out.stdout.splitlines() if "add-every-minute" in line]
    assert "every 1.00 minute" in row and "tasks.add" in row and "│ celery " in row
    assert slot_task_id("add-every-minute", recorded("add-every-minute") or 0) in out.stdout
    assert "unavailable" not in out.stdout


def test_cli_schedule_without_a_store_still_lists_in_one_line(cloud_env: dict[str, str]) -> None:
    out = run_schedule({**cloud_env, "AWS_ENDPOINT_URL": "http://127.0.0.1:9"})

    assert out.returncode == 0, out.stderr
    assert "add-every-minute" in out.stdout
    (line,) = [line for line in out.stdout.splitlines() if "unavailable" in line]
    assert (
        line
        == "last fired slots unavailable: nothing answers at AWS_ENDPOINT_URL=http://127.0.0.1:9"
    )


def test_cli_schedule_without_its_environment_says_what_to_source() -> None:
    bare = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CELERY_"))}

    out = run_schedule(bare)

    assert out.returncode == 0, out.stderr
    assert "add-every-minute" in out.stdout
    (line,) = [line for line in out.stdout.splitlines() if "unavailable" in line]
    assert line == f"last fired slots unavailable: {NO_ENVIRONMENT}"


def test_demo_tick_publishes_the_example_schedule(cloud: Deployment) -> None:
    from devtools.demo import beat_tick
    from tasks import app as tasks_app

    url = json.loads(cloud.environment["CELERY_QUEUE_URLS"])["celery"]
    aws.client("sqs").purge_queue(QueueUrl=url)
    aws.client("dynamodb").delete_item(  # never fired: the tick fires its current slot
        TableName=Settings.from_env().results_table,
        Key={"id": {"S": beat_key("add-every-minute")}},
    )
    previous = get_current_app()
    beat_runtime.scheduler.cache_clear()
    try:
        [(label, result)] = beat_tick(tasks_app, cloud)
    finally:
        beat_runtime.scheduler.cache_clear()
        previous.set_current()

    assert label == "beat: add-every-minute"
    (message,) = messages(url, 1)
    assert (message.task_id, message.task_name, message.args) == (result.id, "tasks.add", (2, 2))
    assert message.expires is not None  # the entry's options
