"""The same task messages through a stock ``celery worker`` and through the Lambda path.

Every scenario of ``tests/apps/scenarios.py`` is published twice with plain Celery calls: first
while a real ``celery -A tests.apps.scenarios worker`` (prefork, so its time limits are real)
consumes the queue, then, with the worker gone and on fresh queues, through the event-source
emulator calling ``handlers.sqs.handler`` in this process's main thread (where its time limits,
which are signals, work). Each side's outcome -- state, result and stored traceback with ids
replaced by role names, callback effects, the rest of the stored result -- is then compared.
Where the two differ by design (poison messages, long ETAs, duplicate deliveries) each side's
behaviour is asserted on its own, with the reason beside it.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from celery import chain, chord, group
from celery._state import get_current_app
from celery.result import AsyncResult, GroupResult

from devtools.cli import point_app_at
from devtools.cloud.deploy import Deployment, EventSource
from devtools.cloud.event_source import ConsumeStats, EventSourcePoller, Handler
from infra.consumer.runtime import pipeline
from infra.core import aws
from infra.core.config import QUEUE_VISIBILITY_TIMEOUT
from infra.core.observability import logger as lambda_logger
from tests.apps import scenarios as sc
from tests.sqs_helpers import queue_with_dlq
from tests.workers import celery_worker

pytestmark = [
    pytest.mark.integration,
    # The Lambda path times tasks with SIGALRM in this thread: keep pytest-timeout off that signal.
    pytest.mark.timeout(300, method="thread"),
]

MAX_RECEIVE_COUNT = 3
SETTLE_SECONDS = 60
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
GARBAGE = "this is not a Celery message {"
UNREGISTERED = "Received unregistered task of type 'scenarios.nope'"
UNKNOWN_MESSAGE = "Received and deleted unknown message"
GARBAGE_DUMPED = f"The full contents of the message body was: body: {GARBAGE!r}"
INVALID_MESSAGE = "Received invalid task message: Refusing to deserialize untrusted content"
UUID_ARGUMENT = uuid.UUID("12345678-1234-5678-1234-567812345678")
RICH_VALUES = (
    datetime(2024, 2, 29, 12, 30, 15, 123456, tzinfo=UTC),
    Decimal("3.14159265358979323846"),
    UUID_ARGUMENT,
    "caf\u00e9".encode(),
    b"\xff\x00\x80",
)

Outcome = dict[str, Any]


# ---------------------------------------------------------------- what a consumer left behind


@dataclass(frozen=True, slots=True)
class Queues:
    """A queue of this module's own and its dead-letter queue."""

    url: str
    arn: str
    dlq_url: str


@dataclass(slots=True)
class Side:
    """One consumer's traces, for the scenarios to observe: logs, deliveries, record failures."""

    name: str
    queues: Queues
    worker_log: Path | None = None
    lambda_lines: list[dict[str, Any]] = field(default_factory=list)
    lambda_deliveries: Counter[str] = field(default_factory=Counter)
    record_failures: Counter[str] = field(default_factory=Counter)

    @property
    def is_worker(self) -> bool:
        return self.name == "worker"

    def worker_logged(self, text: str) -> int:
        """How often the worker's log has ``text``."""
        assert self.worker_log is not None
        return self.worker_log.read_text(errors="replace").count(text)

    def worker_said(self, text: str) -> str | None:
        """``text`` if the worker logged it."""
        return text if self.worker_logged(text) else None

    def lambda_logged(self, message: str, **keys: Any) -> bool:
        """The handler logged ``message`` with these keys (its lines carry task_id and co.)."""
        return any(
            line.get("message") == message and all(line.get(k) == v for k, v in keys.items())
            for line in self.lambda_lines
        )

    def deliveries(self, task_id: str) -> int:
        """How many times the consumer was handed the message of ``task_id``."""
        if self.is_worker:
            return self.worker_logged(f"[{task_id}] received")
        return self.lambda_deliveries[task_id]

    def poison(self, key: str) -> Outcome:
        """How the Lambda path disposed of a message it must not run: why, failures, the DLQ."""
        response = aws.client("sqs").receive_message(
            QueueUrl=self.queues.dlq_url, MaxNumberOfMessages=10, VisibilityTimeout=0
        )
        dead = {message_key(m["Body"]): m["MessageId"] for m in response.get("Messages", [])}
        message_id = dead.get(key)
        errors = {
            line.get("reason") or line["message"]
            for line in self.lambda_lines
            if line.get("message_id") == message_id and line["level"] == "ERROR"
        }
        return {
            "logged": sorted(errors),
            "record_failures": self.record_failures[message_id] if message_id else 0,
            "dead_lettered": message_id is not None,
        }


def message_key(body: str) -> str:
    """The task id of a kombu message body; the body itself for anything else."""
    try:
        envelope = json.loads(base64.b64decode(body, validate=True))
        return str(envelope["headers"]["id"])
    except (binascii.Error, ValueError, KeyError, TypeError):
        return body


class CapturedLines(logging.Handler):
    """The handler's structured log lines, formatted exactly as Lambda would print them."""

    def __init__(self, lines: list[dict[str, Any]]) -> None:
        super().__init__()
        self.lines = lines
        self.setFormatter(lambda_logger.registered_formatter)

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


# ---------------------------------------------------------------- observing results


def normalise(value: Any, roles: dict[str, str]) -> Any:
    """``value`` with every id replaced by its role name; exceptions as type name and args."""
    if isinstance(value, BaseException):
        return {"exception": type(value).__name__, "args": normalise(list(value.args), roles)}
    if isinstance(value, str):
        for raw, role in roles.items():
            value = value.replace(raw, f"<{role}>")
        return UUID_RE.sub("<unknown id>", value)
    if isinstance(value, dict):
        return {normalise(k, roles): normalise(v, roles) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [normalise(v, roles) for v in value]
    return value


def outcome(result: AsyncResult, roles: dict[str, str]) -> Outcome:
    """State, result and traceback's last line of one task, plus what else its item stores."""
    meta = result.backend.get_task_meta(result.id, cache=False)  # the item, as stored now
    observed: Outcome = {"state": meta["status"], "result": normalise(meta["result"], roles)}
    if meta.get("traceback"):
        observed["traceback"] = normalise(meta["traceback"].strip().splitlines()[-1], roles)
    observed["stored"] = {
        "fields": sorted(meta),
        "children": normalise(meta.get("children"), roles),
    }
    return observed


def without_stored(value: Any) -> Any:
    """An outcome without the ``stored`` details, which the two sides compare between them."""
    if isinstance(value, dict):
        return {k: without_stored(v) for k, v in value.items() if k != "stored"}
    if isinstance(value, list):
        return [without_stored(v) for v in value]
    return value


@dataclass(frozen=True, slots=True)
class Published:
    """One published scenario: whether it has settled on a side, and what it came to there."""

    done: Callable[[Side], bool]
    observe: Callable[[Side], Outcome]


def single(result: AsyncResult, **roles: str) -> Published:
    """A scenario that is one task, settled once its state is terminal."""
    names = {result.id: "self", **{raw: role for role, raw in roles.items()}}
    return Published(lambda side: result.ready(), lambda side: outcome(result, names))


def with_errback(failing: AsyncResult) -> Published:
    """A failing task whose new-style errback stores a marker result."""
    marker = AsyncResult(sc.marker_id(failing.id), app=sc.app)
    roles = {failing.id: "failing task"}
    return Published(
        lambda side: failing.ready() and marker.ready(),
        lambda side: {"task": outcome(failing, roles), "errback marker": outcome(marker, roles)},
    )


# ---------------------------------------------------------------- scenarios


def publish_rich_types() -> Published:
    naive = datetime(2024, 1, 2, 3, 4, 5)
    result = sc.rich_types.apply_async(RICH_VALUES, {"naive": naive})
    return single(result, **{"uuid argument": str(UUID_ARGUMENT)})


def publish_request() -> Published:
    now = datetime.now(UTC)
    eta, expires = now + timedelta(seconds=1), now + timedelta(minutes=10)
    result = sc.request.apply_async((1, "two"), {"k": [3]}, eta=eta, expires=expires)
    return single(result, eta=eta.isoformat(), expires=expires.isoformat())


def publish_link() -> Published:
    parent = sc.add.apply_async((2, 2), link=sc.add.s(16))

    def children() -> list[Any]:
        return list(AsyncResult(parent.id, app=sc.app).children or []) if parent.ready() else []

    def observe(side: Side) -> Outcome:
        roles = {parent.id: "parent", **{c.id: f"callback {i}" for i, c in enumerate(children())}}
        return {
            "parent": outcome(parent, roles),
            "callbacks": [outcome(c, roles) for c in children()],
        }

    return Published(lambda side: any(c.ready() for c in children()), observe)


def publish_chain() -> Published:
    last = chain(sc.add.s(1, 2), sc.add.s(3), sc.request.s()).apply_async()
    links = [last.parent.parent, last.parent, last]
    roles = {r.id: role for r, role in zip(links, ("first", "second", "last"), strict=True)}
    return Published(
        lambda side: last.ready(), lambda side: {"links": [outcome(r, roles) for r in links]}
    )


def publish_group() -> Published:
    members = group(sc.add.s(1, 1), sc.add.s(2, 2), sc.request.s(7)).apply_async()
    assert isinstance(members, GroupResult) and members.id
    roles = {members.id: "group", **{r.id: f"member {i}" for i, r in enumerate(members.results)}}
    return Published(
        lambda side: members.ready(),
        lambda side: {"members": [outcome(r, roles) for r in members.results]},
    )


def publish_chord() -> Published:
    body = chord([sc.add.s(i, i) for i in range(3)], sc.total.s()).apply_async()
    header = body.parent
    roles = {body.id: "body", **{r.id: f"header {i}" for i, r in enumerate(header.results)}}
    return Published(
        lambda side: body.ready(),
        lambda side: {
            "body": outcome(body, roles),
            "header": [outcome(r, roles) for r in header.results],
        },
    )


def publish_long_eta() -> Published:
    result = sc.add.apply_async((1, 1), eta=datetime.now(UTC) + timedelta(minutes=16))

    def held(side: Side) -> str:
        if side.deliveries(result.id):
            return "delivered before its ETA"
        return "kept by SQS (DelaySeconds=900 at publish), not delivered"

    return Published(
        lambda side: True,
        lambda side: {**without_stored(outcome(result, {})), "held": held(side)},
    )


def publish_duplicate() -> Published:
    """The same task id delivered again after it finished, as SQS's at-least-once may do."""
    key = uuid.uuid4().hex
    first = sc.count_runs.apply_async((key,), task_id=f"duplicate-{key}")
    resent: list[AsyncResult] = []

    def done(side: Side) -> bool:
        if not first.ready():
            return False
        if not resent:
            resent.append(sc.count_runs.apply_async((key,), task_id=first.id))
            return False
        if side.is_worker:  # the worker ends each delivery with one of these lines
            ended = ("succeeded", "raised", "ignored")
            return sum(side.worker_logged(f"[{first.id}] {word}") for word in ended) >= 2
        return side.deliveries(first.id) >= 2

    def observe(side: Side) -> Outcome:
        item = aws.client("dynamodb").get_item(
            TableName=sc.app.backend.table_name, Key={"id": {"S": f"runs-{key}"}}
        )
        return {
            **without_stored(outcome(first, {})),  # Celery never overwrites a SUCCESS
            "deliveries": side.deliveries(first.id),
            "runs": int(item["Item"]["runs"]["N"]),
        }

    return Published(done, observe)


def publish_revoked() -> Published:
    result = sc.add.apply_async((1, 1), countdown=2)
    result.revoke()
    return single(result)


def publish_unknown() -> Published:
    result = sc.app.send_task("scenarios.nope", args=(1,))

    def disposal(side: Side) -> Outcome:
        if side.is_worker:
            return {"logged": side.worker_said(UNREGISTERED)}
        return side.poison(result.id)

    def done(side: Side) -> bool:
        return result.ready() if side.is_worker else disposal(side)["dead_lettered"]

    return Published(done, lambda side: {**without_stored(outcome(result, {})), **disposal(side)})


def publish_malformed() -> Published:
    aws.client("sqs").send_message(QueueUrl=sc_queue_url(), MessageBody=GARBAGE)

    def disposal(side: Side) -> Outcome:
        if side.is_worker:
            body = side.worker_said(GARBAGE_DUMPED)
            return {"logged": side.worker_said(UNKNOWN_MESSAGE) if body else None}
        return side.poison(GARBAGE)

    def done(side: Side) -> bool:
        return bool(disposal(side)["logged"] if side.is_worker else disposal(side)["dead_lettered"])

    return Published(done, disposal)


def publish_pickle() -> Published:
    result = sc.add.apply_async((1, 2), serializer="pickle")

    def disposal(side: Side) -> Outcome:
        if side.is_worker:
            return {"logged": side.worker_said(INVALID_MESSAGE)}
        return side.poison(result.id)

    def done(side: Side) -> bool:
        return bool(disposal(side)["logged"] if side.is_worker else disposal(side)["dead_lettered"])

    return Published(done, lambda side: {**without_stored(outcome(result, {})), **disposal(side)})


def sc_queue_url() -> str:
    return str(sc.app.conf.broker_transport_options["predefined_queues"][sc.QUEUE]["url"])


def a_second_ago() -> datetime:
    return datetime.now(UTC) - timedelta(seconds=1)


@dataclass(frozen=True, slots=True)
class Scenario:
    """How to publish a scenario and what each side must come to.

    ``expected`` holds for both sides, which must also store the same details; with ``differs``
    (the reason) the two differ by design and ``expected`` has a ``worker`` and a ``lambda``
    entry. ``lambda_bug`` marks a Lambda-path outcome that misses what DESIGN.md promises.
    """

    name: str
    publish: Callable[[], Published]
    expected: Outcome
    differs: str = ""
    lambda_bug: str = ""

    def expected_for(self, side: str) -> Outcome:
        return self.expected[side] if self.differs else self.expected


def poison(reason: str) -> Outcome:
    """A record failure each receive, logged with ``reason``, then the DLQ."""
    return {"logged": [reason], "record_failures": MAX_RECEIVE_COUNT, "dead_lettered": True}


def exc(name: str, *args: Any) -> dict[str, Any]:
    return {"exception": name, "args": list(args)}


def failed(name: str, *args: Any, traceback: str | None = None) -> Outcome:
    observed: Outcome = {"state": "FAILURE", "result": exc(name, *args)}
    if traceback:
        observed["traceback"] = traceback
    return observed


def errback_marker(exc_type: str, message: str, *, traceback: bool = True) -> Outcome:
    result = {
        "failed_task": "<failing task>",
        "exc_type": exc_type,
        "exc": message,
        "traceback_mentions_exc": traceback,
    }
    return {"state": "SUCCESS", "result": result}


REQUEST_DEFAULTS = {
    "root_id": "<self>",
    "parent_id": None,
    "group": None,
    "group_index": None,
    "retries": 0,
    "routing_key": sc.QUEUE,
    "eta": None,
    "expires": None,
    "called_directly": False,
    "is_eager": False,
}
NOTHING = {"state": "PENDING", "result": None}

SCENARIOS = [
    Scenario("add", lambda: single(sc.add.delay(2, 3)), {"state": "SUCCESS", "result": 5}),
    Scenario(
        "kwargs",
        lambda: single(sc.kwargs.apply_async((3,), {"scale": 4})),
        {"state": "SUCCESS", "result": {"value": 12, "label": ""}},
    ),
    Scenario(
        "rich JSON types",
        publish_rich_types,
        {
            "state": "SUCCESS",
            "result": {
                "arrived": [
                    ["datetime", "2024-02-29 12:30:15.123456+00:00"],
                    ["Decimal", "3.14159265358979323846"],
                    ["UUID", "<uuid argument>"],
                    ["bytes", "b'caf\\xc3\\xa9'"],
                    ["bytes", "b'\\xff\\x00\\x80'"],
                ],
                "named": {"naive": ["datetime", "2024-01-02 03:04:05"]},
                "echo": list(RICH_VALUES),
            },
        },
    ),
    Scenario(
        "bind=True request",
        publish_request,
        {
            "state": "SUCCESS",
            "result": {
                **REQUEST_DEFAULTS,
                "id": "<self>",
                "eta": "<eta>",
                "expires": "<expires>",
                "args": [1, "two"],
                "kwargs": {"k": [3]},
            },
        },
    ),
    Scenario(
        "update_state PROGRESS",
        lambda: single(sc.progress.delay()),
        {
            "state": "SUCCESS",
            "result": {"seen_state": "PROGRESS", "seen_meta": {"step": 1, "of": 2}},
        },
    ),
    Scenario(
        "retry until success",
        lambda: single(sc.retry_twice.delay()),
        {"state": "SUCCESS", "result": {"retries": 2, "id": "<self>"}},
    ),
    Scenario(
        "max_retries exhausted",
        lambda: single(sc.retry_forever.delay()),
        failed(
            "MaxRetriesExceededError",
            "Can't retry scenarios.retry_forever[<self>] args:() kwargs:{}",
            traceback="celery.exceptions.MaxRetriesExceededError: "
            "Can't retry scenarios.retry_forever[<self>] args:() kwargs:{}",
        ),
    ),
    Scenario(
        "autoretry_for with backoff",
        lambda: single(sc.autoretry.delay()),
        {"state": "SUCCESS", "result": {"retries": 2}},
    ),
    Scenario(
        "link",
        publish_link,
        {
            "parent": {"state": "SUCCESS", "result": 4},
            "callbacks": [{"state": "SUCCESS", "result": 20}],
        },
    ),
    Scenario(
        "link_error (new-style errback)",
        lambda: with_errback(sc.fail.apply_async((7,), link_error=sc.record_errback.s())),
        {
            "task": failed("ValueError", "bad value 7", traceback="ValueError: bad value 7"),
            "errback marker": errback_marker("ValueError", "bad value 7"),
        },
    ),
    Scenario(
        "chain",
        publish_chain,
        {
            "links": [
                {"state": "SUCCESS", "result": 3},
                {"state": "SUCCESS", "result": 6},
                {
                    "state": "SUCCESS",
                    "result": {
                        **REQUEST_DEFAULTS,
                        "id": "<last>",
                        "root_id": "<first>",
                        "parent_id": "<second>",
                        "args": [6],
                        "kwargs": {},
                    },
                },
            ]
        },
    ),
    Scenario(
        "group",
        publish_group,
        {
            "members": [
                {"state": "SUCCESS", "result": 2},
                {"state": "SUCCESS", "result": 4},
                {
                    "state": "SUCCESS",
                    "result": {
                        **REQUEST_DEFAULTS,
                        "id": "<member 2>",
                        "root_id": "<member 2>",
                        "group": "<group>",
                        "group_index": 2,
                        "args": [7],
                        "kwargs": {},
                    },
                },
            ]
        },
    ),
    Scenario(
        "chord",
        publish_chord,
        {
            "body": {"state": "SUCCESS", "result": 6},
            "header": [{"state": "SUCCESS", "result": r} for r in (0, 2, 4)],
        },
    ),
    Scenario(
        "countdown=2",
        lambda: single(sc.on_time.apply_async(countdown=2)),
        {"state": "SUCCESS", "result": {"has_eta": True, "not_early": True}},
    ),
    Scenario(
        "eta 16 minutes ahead",
        publish_long_eta,
        # Published with the longest SQS delay, so no consumer holds it in memory past its
        # visibility timeout; after 15 minutes the Lambda path re-sends it for the rest.
        {**NOTHING, "held": "kept by SQS (DelaySeconds=900 at publish), not delivered"},
    ),
    Scenario(
        "expires in the past",
        lambda: single(sc.add.apply_async((1, 1), expires=a_second_ago())),
        {"state": "REVOKED", "result": exc("TaskRevokedError", "expired")},
    ),
    Scenario(
        "expires before its ETA (countdown=2, expires=1)",
        lambda: single(sc.add.apply_async((1, 1), countdown=2, expires=1)),
        {"state": "REVOKED", "result": exc("TaskRevokedError", "expired")},
    ),
    Scenario(
        "soft time limit",
        lambda: single(sc.soft_limit.delay()),
        {"state": "SUCCESS", "result": "soft"},
    ),
    Scenario(
        "soft time limit raised per call",
        lambda: single(sc.soft_limit.apply_async(soft_time_limit=5)),
        {"state": "SUCCESS", "result": "not interrupted"},
    ),
    Scenario(
        "hard time limit",
        lambda: with_errback(sc.hard_limit.apply_async(link_error=sc.record_errback.s())),
        {
            "task": failed("TimeLimitExceeded", 1),
            "errback marker": errback_marker(
                "TimeLimitExceeded", "TimeLimitExceeded(1,)", traceback=False
            ),
        },
    ),
    Scenario(
        "hard time limit inside except Exception",
        lambda: single(sc.hard_limit_caught.delay()),
        failed("TimeLimitExceeded", 1),
    ),
    Scenario(
        "task raises",
        lambda: single(sc.fail.delay(42)),
        failed("ValueError", "bad value 42", traceback="ValueError: bad value 42"),
    ),
    Scenario(
        "duplicate delivery after success",
        publish_duplicate,
        {"state": "SUCCESS", "result": {"runs": 1}, "deliveries": 2, "runs": 1},
    ),
    Scenario(
        "revoked before it runs",
        publish_revoked,
        {"state": "REVOKED", "result": exc("TaskRevokedError", "revoked")},
    ),
    Scenario(
        "unknown task",
        publish_unknown,
        {
            "worker": {**failed("NotRegistered", "scenarios.nope"), "logged": UNREGISTERED},
            "lambda": {**NOTHING, **poison("task is not registered in the app")},
        },
        differs="The worker records FAILURE NotRegistered and rejects the message; the Lambda "
        "path reports a record failure each time (a later deployment may know the task) until "
        "the redrive policy moves it to the DLQ, recording no state.",
    ),
    Scenario(
        "malformed body",
        publish_malformed,
        {
            "worker": {"logged": UNKNOWN_MESSAGE},
            "lambda": poison("SQS body is neither a JSON object nor base64"),
        },
        differs="The worker logs an unknown message and rejects it; the Lambda path reports a "
        "record failure each time until the redrive policy moves it to the DLQ.",
    ),
    Scenario(
        "pickle refused (accept_content json)",
        publish_pickle,
        {
            "worker": {**NOTHING, "logged": INVALID_MESSAGE},
            "lambda": {
                **NOTHING,
                **poison(
                    "refused content type 'application/x-python-serialize': "
                    "accepted are ['application/json']"
                ),
            },
        },
        differs="Neither runs it. The worker logs an invalid task message and rejects it; the "
        "Lambda path reports a record failure each time until the redrive policy moves it to the "
        "DLQ.",
    ),
]
BY_NAME = {s.name: s for s in SCENARIOS}


# ---------------------------------------------------------------- the two phases


@dataclass(frozen=True, slots=True)
class Counts:
    """Messages in the queue (visible, in flight, delayed) and in its DLQ (all of them)."""

    visible: int
    in_flight: int
    delayed: int
    dead_letters: int


@dataclass(frozen=True, slots=True)
class Phase:
    """What one consumer made of every scenario."""

    outcomes: dict[str, Outcome]
    unsettled: list[str]
    counts: Counts
    seconds: float
    stats: ConsumeStats | None = None


def counts(queues: Queues) -> Counts:
    names = [
        "ApproximateNumberOfMessages",
        "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed",
    ]
    sqs = aws.client("sqs")
    main = sqs.get_queue_attributes(QueueUrl=queues.url, AttributeNames=names)["Attributes"]
    dlq = sqs.get_queue_attributes(QueueUrl=queues.dlq_url, AttributeNames=names)["Attributes"]
    return Counts(*(int(main[n]) for n in names), sum(int(dlq[n]) for n in names))


def unsettled(published: dict[str, Published], side: Side) -> list[str]:
    return [name for name, p in published.items() if not p.done(side)]


def phase(published: dict[str, Published], side: Side, started: float, **extra: Any) -> Phase:
    return Phase(
        outcomes={name: p.observe(side) for name, p in published.items()},
        unsettled=unsettled(published, side),
        counts=counts(side.queues),
        seconds=time.monotonic() - started,
        **extra,
    )


def create_queues(label: str) -> Queues:
    """A queue with a DLQ after three receives and the template's visibility timeout."""
    queue = queue_with_dlq(
        f"differential-{label}-{uuid.uuid4().hex[:8]}",
        max_receive_count=MAX_RECEIVE_COUNT,
        attributes={"VisibilityTimeout": str(QUEUE_VISIBILITY_TIMEOUT)},
    )
    return Queues(queue.url, queue.arn, queue.dlq_url)


UseQueues = Callable[[str], Queues]


@pytest.fixture(scope="module")
def scenario_app(cloud: Deployment) -> Iterator[UseQueues]:
    """Route the scenario app to fresh queues; this process publishes and the handler serves it.

    Each phase gets queues of its own: a worker stopped during a long poll can still take a
    message that arrives while SQS holds that poll open, and the next phase would never see it.
    """
    previous = get_current_app()
    created: list[Queues] = []
    with pytest.MonkeyPatch.context() as env:

        def use(label: str) -> Queues:
            queues = create_queues(label)
            created.append(queues)
            env.setenv(sc.QUEUE_URL_VARIABLE, queues.url)
            point_app_at(sc.app, cloud)  # sets the deployment's CELERY_APP=tasks:app, hence after:
            env.setenv("CELERY_APP", "tests.apps.scenarios:app")
            sc.configure(sc.app)
            pipeline.cache_clear()
            return queues

        yield use
        pipeline.cache_clear()
    previous.set_current()
    for queues in created:
        for url in (queues.url, queues.dlq_url):
            aws.client("sqs").delete_queue(QueueUrl=url)


@pytest.fixture(scope="module")
def worker_phase(
    scenario_app: UseQueues, cloud_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Phase:
    """Every scenario through a stock prefork ``celery worker``."""
    queues = scenario_app("worker")
    log = tmp_path_factory.mktemp("differential") / "worker.log"
    args = ["--pool=prefork", "--concurrency=2", "-Q", sc.QUEUE, "-n", "diff@%h"]
    env = {**cloud_env, sc.QUEUE_URL_VARIABLE: queues.url}
    with celery_worker("tests.apps.scenarios", args, env, log):
        side = Side("worker", queues, worker_log=log)
        started = time.monotonic()
        published = {s.name: s.publish() for s in SCENARIOS}
        while unsettled(published, side) and time.monotonic() < started + SETTLE_SECONDS:
            time.sleep(0.3)
        return phase(published, side, started)


@pytest.fixture(scope="module")
def lambda_phase(worker_phase: Phase, scenario_app: UseQueues) -> Phase:
    """Every scenario through the event-source emulator and ``handlers.sqs.handler``."""
    from handlers.sqs import handler

    queues = scenario_app("lambda")
    source = EventSource(
        function="DifferentialFunction",
        handler="handlers.sqs.handler",
        queue_url=queues.url,
        queue_arn=queues.arn,
        batch_size=10,
        batching_window=0,
        timeout=120,
        report_batch_item_failures=True,
    )
    side = Side("lambda", queues)

    def counting(event: dict[str, Any], context: Any) -> Any:
        side.lambda_deliveries.update(message_key(r["body"]) for r in event["Records"])
        return handler(event, context)

    capture = CapturedLines(side.lambda_lines)
    lambda_logger.addHandler(capture)
    try:
        invoke: Handler = counting
        poller = EventSourcePoller(source, invoke, failed_visibility=1)
        started = time.monotonic()
        published = {s.name: s.publish() for s in SCENARIOS}
        stats = ConsumeStats()
        while time.monotonic() < started + SETTLE_SECONDS:
            batch = poller.poll_once(wait_seconds=1)
            if batch is not None:
                assert batch.handler_error is None, batch.handler_error
                stats += ConsumeStats.of(batch)
                side.record_failures.update(batch.failed_ids)
            elif not unsettled(published, side):
                break
        return phase(published, side, started, stats=stats)
    finally:
        lambda_logger.removeHandler(capture)


# ---------------------------------------------------------------- comparisons


def marked(names: list[str], *, lambda_side: bool) -> list[Any]:
    params = []
    for name in names:
        bug = BY_NAME[name].lambda_bug
        marks = [pytest.mark.xfail(strict=True, reason=bug)] if bug and lambda_side else []
        params.append(pytest.param(name, id=name, marks=marks))
    return params


ALL = [s.name for s in SCENARIOS]
ALIKE = [s.name for s in SCENARIOS if not s.differs]


@pytest.mark.parametrize("name", marked(ALL, lambda_side=False))
def test_worker(name: str, worker_phase: Phase) -> None:
    assert without_stored(worker_phase.outcomes[name]) == BY_NAME[name].expected_for("worker")


@pytest.mark.parametrize("name", marked(ALL, lambda_side=True))
def test_lambda(name: str, lambda_phase: Phase) -> None:
    assert without_stored(lambda_phase.outcomes[name]) == BY_NAME[name].expected_for("lambda")


@pytest.mark.parametrize("name", marked(ALIKE, lambda_side=True))
def test_both_store_the_same(name: str, worker_phase: Phase, lambda_phase: Phase) -> None:
    assert worker_phase.outcomes[name] == lambda_phase.outcomes[name]


def test_every_scenario_settled(worker_phase: Phase, lambda_phase: Phase) -> None:
    assert worker_phase.unsettled == []
    assert lambda_phase.unsettled == []


def test_what_each_consumer_leaves_in_the_queue(worker_phase: Phase, lambda_phase: Phase) -> None:
    # Worker: the three messages it rejected stay in flight (kombu does not delete a rejected
    # message from a queue with a redrive policy): none dead-lettered yet.
    assert worker_phase.counts == Counts(visible=0, in_flight=3, delayed=1, dead_letters=0)
    # Lambda: each poison message failed MAX_RECEIVE_COUNT times and went to the DLQ.
    # Both: the long-ETA message, still delayed in SQS since its publish.
    assert lambda_phase.counts == Counts(visible=0, in_flight=0, delayed=1, dead_letters=3)
    assert lambda_phase.stats is not None
    assert lambda_phase.stats.failures == 3 * MAX_RECEIVE_COUNT
