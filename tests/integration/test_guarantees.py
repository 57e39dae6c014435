"""Delivery guarantees end to end: duplicates, a killed consumer, store faults, revocation.

The proof of issue 4 against the local cloud. Tasks are published with real ``apply_async`` by
this module's own Celery app (configured like ``tasks.app``, with ``ClaimingTask`` as its task
base), to queues of this module's own so that no other test's consumer sees them:

- ``guarantees`` (the app's default queue): only the Lambda path reads it -- this process calling
  ``handlers.sqs.handler`` with events built by the event-source emulator, or the emulator's
  pollers themselves;
- ``guarantees-worker``: a real ``celery -A tests.integration.test_guarantees:app worker``
  subprocess consumes it;
- ``guarantees-crash``: short visibility timeout and function timeout, for the event-source
  emulator that gets SIGKILLed.

Results and claims go to a results table of this module's own, defined like the template's.
Duplicates are real: a message Celery published is received, and its body sent again with boto3.
Side effects are counted in the users table (``tests.apps.probe.record_call``), so "ran once",
"ran twice" and "never ran" are told apart from outside the process that ran the task.

moto in server mode is not DynamoDB under concurrency: its TransactWriteItems is not isolated
(two simultaneous claims of one task id can both succeed) and a cancelled one restores a copy of
the whole table, erasing writes other requests made meanwhile. The tests are therefore arranged
so that two consumers never claim in the same instant and no claim is refused while another
consumer writes a result (the crash test's restart runs one poller): what they prove is the claim
protocol, with DynamoDB's per-item serialisation taken as given.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from celery import Celery, chain, group, states
from celery._state import get_current_app
from kombu import Queue

from devtools.cli import point_app_at
from devtools.cloud.deploy import Deployment, EventSource
from devtools.cloud.event_source import (
    ConsumeStats,
    consume,
    handler_from_source,
)
from infra.consumer import runtime
from infra.consumer.pipeline import SAFETY_MARGIN_SECONDS
from infra.core import aws
from infra.core.config import transport_options
from infra.core.settings import Settings
from infra.store.claim_requests import ClaimRequest
from infra.store.claims import store_for_app
from infra.store.items import task_key
from infra.store.result_requests import batch_get
from infra.store.revoke import revoke
from tests.apps import probe
from tests.invoke import context_with, invoke
from tests.sqs_helpers import counts, receive
from tests.workers import celery_worker

pytestmark = [
    pytest.mark.integration,
    # The Lambda path times tasks with SIGALRM in this thread: keep pytest-timeout off that signal.
    pytest.mark.timeout(300, method="thread"),
]

ROOT = Path(__file__).resolve().parents[2]
QUEUES_VARIABLE = "GUARANTEES_QUEUES"
"""JSON ``{celery queue name: SQS URL}`` of this module's queues, for every process."""
QUEUE = "guarantees"
WORKER_QUEUE = "guarantees-worker"
CRASH_QUEUE = "guarantees-crash"
MAX_RECEIVE_COUNT = 5
"""Redrive after this many receives, as in the template."""
CRASH_TASKS = 300
CRASH_FUNCTION_TIMEOUT = 10
"""The crash test's function timeout: a batch's claims last until the invocation deadline, so
claims left by the killed consumer expire 10 s after they were made (5 s of it is run time, the
rest the handler's safety margin)."""
CRASH_VISIBILITY = 12
"""Longer than the function timeout, as AWS requires: a record of a killed or failed invocation
comes back once the claims of its batch expired, so the restarted consumer takes them over."""
SETTLE = 90.0
WORKER_REQUEUE_SECONDS = 5

Message = dict[str, Any]


# ---------------------------------------------------------------- the app


def configure(celery_app: Celery, env: Mapping[str, str] | None = None) -> None:
    """Route to this module's queues, with their URLs among kombu's predefined queues."""
    env = os.environ if env is None else env
    options = transport_options(Settings.from_env(env))
    # A worker hands a message back by making it visible again after ``wait_time_seconds``
    # (kombu's SQS requeue): 20 s in the product's options, shortened here to keep tests quick.
    options["wait_time_seconds"] = WORKER_REQUEUE_SECONDS
    urls = json.loads(env.get(QUEUES_VARIABLE) or "{}")
    predefined = {**options.get("predefined_queues", {})}
    predefined.update({name: {"url": url} for name, url in urls.items()})
    options["predefined_queues"] = predefined
    celery_app.conf.update(
        broker_transport_options=options,
        task_default_queue=QUEUE,
        task_queues=tuple(Queue(name) for name in (QUEUE, WORKER_QUEUE, CRASH_QUEUE)),
        task_routes=None,
        task_annotations=None,
    )


app = Celery("guarantees", task_cls="infra.worker.task:ClaimingTask", set_as_current=False)
app.config_from_object("tasks.celeryconfig")
configure(app)


@app.task(name="guarantees.record", shared=False)
def record(marker: str, seconds: float = 0.0) -> str:
    """The side effect (count one call under ``marker``), then ``seconds`` of work."""
    probe.record_call(marker)
    time.sleep(seconds)
    return marker


# ---------------------------------------------------------------- fixtures


@dataclasses.dataclass(frozen=True)
class Queues:
    """This module's queues: the Lambda path's, the worker's and the crash test's."""

    region: str
    source: EventSource
    """The Lambda path's queue as an event source (the template's settings)."""
    worker_url: str
    crash: EventSource
    dlqs: Mapping[str, str]
    """Queue URL → its DLQ URL."""


def _arn(url: str) -> str:
    response = aws.client("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return str(response["Attributes"]["QueueArn"])


def _create_queue(name: str, visibility: int) -> tuple[str, str]:
    """A queue with a DLQ; ``(url, dlq url)``."""
    sqs = aws.client("sqs")
    dlq_url = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    redrive = {"deadLetterTargetArn": _arn(dlq_url), "maxReceiveCount": MAX_RECEIVE_COUNT}
    attributes = {"VisibilityTimeout": str(visibility), "RedrivePolicy": json.dumps(redrive)}
    url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    return url, dlq_url


def _create_results_table(name: str) -> str:
    """A results table of this module's own, defined like the template's.

    moto's TransactWriteItems deep-copies every table it touches (and puts the copy back when
    the transaction is cancelled): on the session's shared table, grown by every other test,
    each claim gets slower and the window in which a concurrent write is lost grows with it.
    """
    ddb = aws.client("dynamodb")
    template = ddb.describe_table(TableName=Settings.from_env().results_table)["Table"]
    ddb.create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=template["AttributeDefinitions"],
        KeySchema=template["KeySchema"],
        GlobalSecondaryIndexes=[
            {k: index[k] for k in ("IndexName", "KeySchema", "Projection")}
            for index in template.get("GlobalSecondaryIndexes", [])
        ],
    )
    return name


@pytest.fixture(scope="module")
def queues(cloud: Deployment) -> Iterator[Queues]:
    """Fresh queues; this process's app publishes to them and the handler serves it."""
    suffix = uuid.uuid4().hex[:8]
    table = _create_results_table(f"guarantees-results-{suffix}")
    url, dlq = _create_queue(f"guarantees-{suffix}", 30)
    worker_url, worker_dlq = _create_queue(f"guarantees-worker-{suffix}", 10)
    crash_url, crash_dlq = _create_queue(f"guarantees-crash-{suffix}", CRASH_VISIBILITY)
    [celery_source] = [s for s in cloud.event_sources if s.queue_arn.endswith("-celery")]
    previous_app = get_current_app()
    with pytest.MonkeyPatch.context() as env:
        point_app_at(app, cloud)  # sets the deployment's environment, CELERY_APP included
        env.setenv(
            QUEUES_VARIABLE,
            json.dumps({QUEUE: url, WORKER_QUEUE: worker_url, CRASH_QUEUE: crash_url}),
        )
        env.setenv("CELERY_APP", f"{__name__}:app")  # what the handler serves, in every process
        env.setenv("RESULTS_TABLE", table)
        configure(app)
        _reset_backend(app)
        runtime.pipeline.cache_clear()
        yield Queues(
            region=cloud.region,
            source=dataclasses.replace(celery_source, queue_url=url, queue_arn=_arn(url)),
            worker_url=worker_url,
            crash=dataclasses.replace(
                celery_source,
                queue_url=crash_url,
                queue_arn=_arn(crash_url),
                timeout=CRASH_FUNCTION_TIMEOUT,
            ),
            dlqs={url: dlq, worker_url: worker_dlq, crash_url: crash_dlq},
        )
        runtime.pipeline.cache_clear()
    _reset_backend(app)
    previous_app.set_current()
    for queue_url in (url, dlq, worker_url, worker_dlq, crash_url, crash_dlq):
        aws.client("sqs").delete_queue(QueueUrl=queue_url)
    aws.client("dynamodb").delete_table(TableName=table)


def _reset_backend(celery_app: Celery) -> None:
    """Drop the app's cached result backend after ``RESULTS_TABLE`` changed.

    Celery has no public reset; this is what ``point_app_at`` (and Celery's after-fork hook) do.
    """
    celery_app._backend_cache = None
    vars(celery_app._local).pop("backend", None)


@pytest.fixture(scope="module")
def worker(queues: Queues, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A stock ``celery worker`` (prefork) of this module's app on its worker queue; its log."""
    log = tmp_path_factory.mktemp("guarantees-worker") / "worker.log"
    env = dict(os.environ)  # the cloud's environment with this module's queues and table
    # One child: two would run claim transactions side by side, and moto's are not isolated
    # (a cancelled one restores a copy of the table, losing the other's write).
    args = ["-Q", WORKER_QUEUE, "--concurrency=1", "--hostname", "guarantees@%h"]
    with celery_worker(f"{__name__}:app", args, env, log):
        yield log


@pytest.fixture(autouse=True)
def empty_queues(queues: Queues) -> None:
    """Every test starts with nothing visible in the queues it reads."""
    for url in (queues.source.queue_url, *queues.dlqs.values()):
        aws.client("sqs").purge_queue(QueueUrl=url)


# ---------------------------------------------------------------- helpers


def marker() -> str:
    return uuid.uuid4().hex


def duplicated(url: str) -> tuple[Message, Message]:
    """The one message on ``url`` and a second delivery of its body (sent again with boto3)."""
    [original] = receive(url, 1)
    aws.client("sqs").send_message(QueueUrl=url, MessageBody=original["Body"])
    [copy] = receive(url, 1)
    assert copy["Body"] == original["Body"] and copy["MessageId"] != original["MessageId"]
    return original, copy


def state(task_id: str) -> str:
    return str(app.AsyncResult(task_id).state)


def item(task_id: str) -> dict[str, Any]:
    """The task's item in the results table as stored (claim attributes included)."""
    response = aws.client("dynamodb").get_item(
        TableName=Settings.from_env().results_table,
        Key={"id": {"S": task_key(task_id)}},
        ConsistentRead=True,
    )
    found: dict[str, Any] = response.get("Item", {})
    return found


def wait_for(
    condition: Callable[[], bool], what: str, within: float = SETTLE, every: float = 0.1
) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)


def claimed_by(task_id: str, prefix: str) -> bool:
    return str(item(task_id).get("claim_owner", {}).get("S", "")).startswith(prefix)


def states_of(task_ids: Sequence[str]) -> dict[str, str]:
    """Each task's state as a Celery client decodes it (BatchGetItem, 100 keys a call)."""
    keys = {task_key(t): t for t in task_ids}
    found = batch_get(aws.client("dynamodb"), Settings.from_env().results_table, list(keys))
    decoded = {keys[k]: app.backend.decode_result(v)["status"] for k, v in found.items()}
    return {t: decoded.get(t, states.PENDING) for t in task_ids}


def calls_of(markers: Sequence[str]) -> dict[str, int]:
    """How many times each marker's side effect happened (BatchGetItem on the users table)."""
    table = Settings.from_env().users_table
    found: dict[str, int] = {}
    for start in range(0, len(markers), 100):
        keys = [{"username": {"S": f"probe#{m}"}} for m in markers[start : start + 100]]
        while keys:
            response = aws.client("dynamodb").batch_get_item(
                RequestItems={table: {"Keys": keys, "ConsistentRead": True}}
            )
            for row in response["Responses"].get(table, []):
                found[row["username"]["S"].removeprefix("probe#")] = int(row["calls"]["N"])
            keys = response.get("UnprocessedKeys", {}).get(table, {}).get("Keys", [])
    return {m: found.get(m, 0) for m in markers}


def drained(queues: Queues, url: str) -> bool:
    return counts(url) == (0, 0, 0) and counts(queues.dlqs[url]) == (0, 0, 0)


# ---------------------------------------------------------------- 1. duplicate delivery


def test_duplicate_delivered_sequentially_runs_once(queues: Queues) -> None:
    done = marker()
    result = record.apply_async((done,))
    original, copy = duplicated(queues.source.queue_url)

    assert invoke(queues.source, [original]) == []
    assert invoke(queues.source, [copy]) == []  # already SUCCESS: acked without running

    assert probe.calls(done) == 1
    assert state(result.id) == states.SUCCESS
    assert drained(queues, queues.source.queue_url)


def test_duplicate_in_one_batch_runs_once(queues: Queues) -> None:
    done = marker()
    result = record.apply_async((done,))
    original, copy = duplicated(queues.source.queue_url)

    # The repeat is acked as a duplicate: its task ran earlier in this batch (its outcome is
    # written with the batch's; were that write to fail, the original would come back).
    assert invoke(queues.source, [original, copy]) == []

    assert probe.calls(done) == 1
    assert state(result.id) == states.SUCCESS


def test_duplicate_delivered_concurrently_runs_once(queues: Queues) -> None:
    done = marker()
    result = record.apply_async((done, 2.0))
    [message] = receive(queues.source.queue_url, 1)
    aws.client("sqs").change_message_visibility(
        QueueUrl=queues.source.queue_url,
        ReceiptHandle=message["ReceiptHandle"],
        VisibilityTimeout=0,
    )
    # Two pollers (two processes), one record per invocation. A held record comes back after
    # 3 s: once the task (2 s) has finished, never while its result is being written.
    source = dataclasses.replace(queues.source, batch_size=1, batching_window=0)
    outcome: dict[str, ConsumeStats] = {}

    def run_pollers() -> None:
        outcome["stats"] = consume(
            [source],
            handler_from_source,
            concurrency=2,
            until_empty=True,
            failed_visibility=3,
            wait_seconds=1,
        )

    pollers = threading.Thread(target=run_pollers)
    pollers.start()
    try:
        # The copy arrives while one invocation runs the task: the other poller takes it. (Sent
        # only once the first claim is made: two claims in the same instant are decided by
        # DynamoDB's per-item serialisation, which moto in server mode does not provide.)
        wait_for(lambda: claimed_by(result.id, "lambda:"), "a poller to claim the task")
        aws.client("sqs").send_message(QueueUrl=source.queue_url, MessageBody=message["Body"])
    finally:
        pollers.join(timeout=SETTLE)

    assert probe.calls(done) == 1
    assert state(result.id) == states.SUCCESS
    assert drained(queues, queues.source.queue_url)
    # The copy met the live claim (reported, came back) before it was acked as a duplicate.
    stats = outcome["stats"]
    assert stats.records >= 3 and stats.failures >= 1, stats


def test_duplicate_to_the_lambda_path_then_a_worker_runs_once(queues: Queues, worker: Path) -> None:
    done = marker()
    result = record.apply_async((done,))
    original, copy = duplicated(queues.source.queue_url)

    assert invoke(queues.source, [original]) == []
    aws.client("sqs").send_message(QueueUrl=queues.worker_url, MessageBody=copy["Body"])
    wait_for(lambda: drained(queues, queues.worker_url), "the worker to ack the duplicate")

    assert probe.calls(done) == 1
    assert state(result.id) == states.SUCCESS
    assert f"guarantees.record[{result.id}] ignored" in worker.read_text()  # the duplicate


def test_duplicate_to_a_running_worker_is_held_on_the_lambda_path(
    queues: Queues, worker: Path
) -> None:
    done = marker()
    result = record.apply_async((done, 3.0))
    original, copy = duplicated(queues.source.queue_url)
    aws.client("sqs").send_message(QueueUrl=queues.worker_url, MessageBody=original["Body"])
    wait_for(lambda: claimed_by(result.id, "worker:"), "the worker to claim the task")

    assert invoke(queues.source, [copy]) == [copy["MessageId"]]  # held: comes back later
    wait_for(lambda: state(result.id) == states.SUCCESS, "the worker to finish")
    assert invoke(queues.source, [copy]) == []  # the redelivery: a duplicate, acked

    assert probe.calls(done) == 1
    wait_for(lambda: drained(queues, queues.worker_url), "the worker queue to drain")


def test_worker_meeting_a_live_claim_hands_the_task_back(queues: Queues, worker: Path) -> None:
    done = marker()
    task_id = str(uuid.uuid4())
    store = store_for_app(app)
    assert store is not None
    # Another consumer (a Lambda invocation, say) holds the task for 3 more seconds.
    assert store.claim([ClaimRequest(task_id)], "lambda:elsewhere", time.time() + 3)[task_id]

    record.apply_async((done,), task_id=task_id, queue=WORKER_QUEUE)
    wait_for(lambda: state(task_id) == states.SUCCESS, "the lease to end and the worker to run it")

    assert probe.calls(done) == 1
    log = worker.read_text()
    assert f"[{task_id}] reject requeue=True: task is running on lambda:elsewhere" in log
    # kombu hands it back by hiding the same message for wait_time_seconds: no copy is made.
    assert log.count(f"[{task_id}] received") == 2
    wait_for(lambda: drained(queues, queues.worker_url), "the worker queue to drain")


# ---------------------------------------------------------------- 3. store faults


class ResultWriteFault:
    """Makes writes to the results table fail (the claim's TransactWriteItems is let through)."""

    def __init__(self, table: str, times: int | None = None) -> None:
        self.table = table
        self.left = times
        self.failed: list[str] = []

    def __call__(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        body = json.loads(params["body"] or "{}")
        tables = {body.get("TableName"), *body.get("RequestItems", {})}
        if self.table not in tables or self.left == 0:
            return
        if self.left is not None:
            self.left -= 1
        self.failed.append(model.name)
        raise ClientError(
            {"Error": {"Code": "InternalServerError", "Message": "injected fault"}}, model.name
        )

    @contextmanager
    def installed(self) -> Iterator[ResultWriteFault]:
        events = aws.client("dynamodb").meta.events
        names = [f"before-call.dynamodb.{op}" for op in ("UpdateItem", "PutItem", "BatchWriteItem")]
        for name in names:
            events.register(name, self)
        try:
            # The tracer reports an error outside the task body with a RuntimeWarning (a log line
            # in production; pytest would make it an exception).
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                yield self
        finally:
            for name in names:
                events.unregister(name, self)


def test_failed_result_write_sends_the_record_back(queues: Queues) -> None:
    done = marker()
    result = record.apply_async((done,))
    [message] = receive(queues.source.queue_url, 1)
    fault = ResultWriteFault(Settings.from_env().results_table)
    lease_seconds = SAFETY_MARGIN_SECONDS + 3

    with fault.installed():
        failed = invoke(queues.source, [message], context_with(queues.source, lease_seconds))

    assert failed == [message["MessageId"]]  # not acked: nothing was recorded
    # Only the SUCCESS write (with the batch's, then alone): the store failing is not recorded as
    # the task's FAILURE.
    assert fault.failed == ["BatchWriteItem", "UpdateItem"]
    assert probe.calls(done) == 1  # the body had run
    assert state(result.id) == states.PENDING
    lease_until = float(item(result.id)["lease_until"]["N"])
    # The next delivery, while the failed invocation's lease lasts: held back, not run.
    assert invoke(queues.source, [message]) == [message["MessageId"]]
    assert probe.calls(done) == 1
    # Once the lease is over the claim is taken over and the task runs again (at-least-once:
    # its side effect happened twice, its result is recorded once).
    time.sleep(max(0.0, lease_until - time.time()) + 0.2)
    assert invoke(queues.source, [message]) == []
    assert probe.calls(done) == 2
    assert state(result.id) == states.SUCCESS
    assert "claim_owner" not in item(result.id)


def test_transient_result_write_fault_still_ends_in_success(queues: Queues) -> None:
    done = marker()
    result = record.apply_async((done,))
    [message] = receive(queues.source.queue_url, 1)
    fault = ResultWriteFault(Settings.from_env().results_table, times=1)
    context = context_with(queues.source, SAFETY_MARGIN_SECONDS + 3)

    with fault.installed():
        failed = invoke(queues.source, [message], context)

    # The batch's write failed; the outcome was then written on its own, in the same invocation.
    assert fault.failed == ["BatchWriteItem"]
    assert failed == []
    assert state(result.id) == states.SUCCESS
    assert "claim_owner" not in item(result.id)
    assert probe.calls(done) == 1


# ---------------------------------------------------------------- 4. revocation


def test_revoked_before_consumption_on_the_lambda_path(queues: Queues) -> None:
    done = marker()
    result = record.apply_async((done,))
    revoke(app, [result.id])

    assert invoke(queues.source, receive(queues.source.queue_url, 1)) == []

    assert state(result.id) == states.REVOKED
    assert probe.calls(done) == 0
    assert drained(queues, queues.source.queue_url)


def test_revoked_before_consumption_on_a_worker(queues: Queues, worker: Path) -> None:
    done = marker()
    task_id = str(uuid.uuid4())
    revoke(app, [task_id])

    record.apply_async((done,), task_id=task_id, queue=WORKER_QUEUE)
    wait_for(lambda: state(task_id) == states.REVOKED, "the worker to record REVOKED")

    wait_for(lambda: drained(queues, queues.worker_url), "the worker to ack it")
    assert probe.calls(done) == 0


def test_revoking_a_chains_root_revokes_its_members_not_started(queues: Queues) -> None:
    url = queues.source.queue_url
    first, second, third = marker(), marker(), marker()
    last = chain(record.si(first), record.si(second), record.si(third)).apply_async()
    middle = last.parent
    root = middle.parent
    assert invoke(queues.source, receive(url, 1)) == []  # the root runs, publishes the next
    assert state(root.id) == states.SUCCESS

    revoke(app, [root.id])
    assert invoke(queues.source, receive(url, 1)) == []

    assert state(middle.id) == states.REVOKED
    assert state(last.id) == states.PENDING  # never published: the chain stopped
    assert [probe.calls(m) for m in (first, second, third)] == [1, 0, 0]
    assert drained(queues, url)


def test_revoking_a_chains_root_on_a_worker(queues: Queues, worker: Path) -> None:
    first, second, third = marker(), marker(), marker()
    signatures = [record.si(first, 2.0), record.si(second), record.si(third)]
    last = chain(s.set(queue=WORKER_QUEUE) for s in signatures).apply_async()
    middle = last.parent
    root = middle.parent
    wait_for(lambda: claimed_by(root.id, "worker:"), "the worker to start the root")

    revoke(app, [root.id])  # while the root runs: it finishes, the rest does not start
    wait_for(lambda: state(middle.id) == states.REVOKED, "the worker to revoke the next member")

    assert state(root.id) == states.SUCCESS
    wait_for(lambda: drained(queues, queues.worker_url), "the worker queue to drain")
    assert state(last.id) == states.PENDING
    assert [probe.calls(m) for m in (first, second, third)] == [1, 0, 0]


def test_revoking_a_group_revokes_its_members(queues: Queues) -> None:
    members = [marker(), marker()]
    group_id = str(uuid.uuid4())
    revoke(app, [group_id])

    result = group(record.s(m) for m in members).apply_async(task_id=group_id)
    assert result.id == group_id
    assert invoke(queues.source, receive(queues.source.queue_url, 2)) == []

    assert [r.state for r in result.results] == [states.REVOKED] * 2
    assert [probe.calls(m) for m in members] == [0, 0]
    assert drained(queues, queues.source.queue_url)


def test_revoking_a_group_on_a_worker(queues: Queues, worker: Path) -> None:
    members = [marker(), marker()]
    group_id = str(uuid.uuid4())
    revoke(app, [group_id])

    result = group(record.s(m) for m in members).apply_async(task_id=group_id, queue=WORKER_QUEUE)
    for member in result.results:
        wait_for(lambda m=member: m.state == states.REVOKED, "the worker to revoke the member")

    assert [probe.calls(m) for m in members] == [0, 0]
    wait_for(lambda: drained(queues, queues.worker_url), "the worker queue to drain")


# ---------------------------------------------------------------- 5. chord joins


def nested_group_chain(queue: str) -> tuple[Any, list[str]]:
    """Celery's ``test_canvas::test_nested_group_chain`` on ``queue``: a chord whose header ends
    in a group, which Celery 5.7 counts as 2 parts though 3 tasks report to it, so its join
    fires while the last header task still waits in the queue. Its last result and markers."""
    markers = [marker() for _ in range(6)]
    a, b, c, d, e, f = (record.si(m).set(queue=queue) for m in markers)
    return chain(a, group(b, chain(c, group(d, e))), f).apply_async(), markers


def test_an_early_chord_join_never_wedges_a_worker(queues: Queues, worker: Path) -> None:
    """The worker's one process used to wait in that join for ever (issue 17)."""
    last, markers = nested_group_chain(WORKER_QUEUE)
    after = record.si(marker()).set(queue=WORKER_QUEUE).apply_async()

    wait_for(lambda: state(after.id) == states.SUCCESS, "the worker to run the next task")
    wait_for(lambda: state(last.id) in states.READY_STATES, "the chord to end")
    assert [probe.calls(m) for m in markers[:5]] == [1] * 5


def test_an_early_chord_join_is_bounded_on_the_lambda_path(queues: Queues) -> None:
    url = queues.source.queue_url
    last, markers = nested_group_chain(QUEUE)
    started = time.monotonic()
    while state(last.id) not in states.READY_STATES:
        assert time.monotonic() - started < SETTLE, "the chord never ended"
        assert invoke(queues.source, receive(url, 1, within=SETTLE)) == []

    assert invoke(queues.source, receive(url, 1)) == []  # the header's third task, late
    assert [probe.calls(m) for m in markers[:5]] == [1] * 5
    assert drained(queues, url)


# ---------------------------------------------------------------- 2. crash


RUNNER = """
import dataclasses, json, sys
from devtools.cloud.event_source import consume, handler_from_source
from devtools.cloud.deploy import EventSource
source = EventSource(**json.loads(sys.argv[1]))
stats = consume(
    [source], handler_from_source, concurrency=int(sys.argv[2]),
    until_empty=sys.argv[3] == "until-empty", wait_seconds=1,
)
print(json.dumps(dataclasses.asdict(stats)))
"""


def start_consumer(
    source: EventSource, concurrency: int, mode: str, log: Path
) -> subprocess.Popen[bytes]:
    """The event-source emulator (``concurrency`` pollers) in a process group of its own."""
    argv = [json.dumps(dataclasses.asdict(source)), str(concurrency), mode]
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-c", RUNNER, *argv],
            cwd=ROOT,
            env=dict(os.environ),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def live_claims() -> int:
    """Tasks claimed by a consumer and not finished (a scan: this module's table is small)."""
    response = aws.client("dynamodb").scan(
        TableName=Settings.from_env().results_table,
        Select="COUNT",
        FilterExpression="attribute_exists(claim_owner) AND #status = :pending",
        ExpressionAttributeNames={"#status": "status"},
        ExpressionAttributeValues={":pending": {"S": states.PENDING}},
        ConsistentRead=True,
    )
    return int(response["Count"])


def test_consumer_killed_mid_batch_loses_nothing(queues: Queues, tmp_path: Path) -> None:
    url = queues.crash.queue_url
    markers = [marker() for _ in range(CRASH_TASKS)]
    ids = [record.apply_async((m,), queue=CRASH_QUEUE).id for m in markers]
    log = tmp_path / "consumer.log"

    first = start_consumer(queues.crash, 2, "forever", log)
    try:
        wait_for(
            lambda: counts(url)[0] <= CRASH_TASKS // 2 and live_claims() > 0,
            "the consumer to drain half the queue",
            every=0.25,
        )
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the runner and both pollers, mid-batch
        first.wait()
    time.sleep(0.5)  # requests already sent still land
    at_kill = states_of(ids)
    calls_at_kill = calls_of(markers)
    unfinished = [t for t in ids if at_kill[t] != states.SUCCESS]
    assert 0 < len(unfinished) < CRASH_TASKS, "the kill was not mid-drain"
    assert max(calls_at_kill.values()) <= 1  # nothing ran twice before the kill
    # Batches are claimed whole before they run: the kill left claims on tasks not finished.
    claimed_unfinished = [t for t in unfinished if claimed_by(t, "lambda:")]
    assert claimed_unfinished, "the kill did not interrupt a claimed batch"
    # Tasks whose side effect happened but whose SUCCESS was not recorded when the consumer died:
    # a batch's outcomes are written together, so each poller had at most its batch's unwritten.
    cut = {m for t, m in zip(ids, markers, strict=True) if at_kill[t] != states.SUCCESS}
    ran_unrecorded = {m for m in cut if calls_at_kill[m] > 0}
    assert len(ran_unrecorded) <= 2 * queues.crash.batch_size

    # One poller from here on: with two, moto loses writes -- a cancelled TransactWriteItems (a
    # claim that meets a live lease or a finished task, as after a crash) puts back its copy of
    # the whole table, erasing whatever another request wrote meanwhile.
    second = start_consumer(queues.crash, 1, "until-empty", log)
    try:
        assert second.wait(timeout=SETTLE) == 0, log.read_text()[-3000:]
    finally:
        if second.poll() is None:
            os.killpg(second.pid, signal.SIGKILL)
            second.wait()

    final = states_of(ids)
    assert [t for t in ids if final[t] != states.SUCCESS] == []
    calls = calls_of(markers)
    assert [m for m in markers if calls[m] == 0] == []  # none lost
    twice = {m for m in markers if calls[m] > 1}
    # Exactly once, except where the consumer died between a task's side effect and its result
    # write: nothing recorded that it ran, so its claim expired and it ran again (at-least-once).
    assert twice <= ran_unrecorded, (twice, ran_unrecorded)
    assert max(calls.values()) <= 2
    assert drained(queues, url)
    print(
        f"crash: {len(unfinished)} unfinished at the kill, {len(claimed_unfinished)} of them "
        f"claimed, {len(ran_unrecorded)} ran but unrecorded, {len(twice)} ran twice"
    )
