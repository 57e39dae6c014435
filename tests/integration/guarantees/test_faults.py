"""Delivery guarantees (see :mod:`tests.integration.guarantees`) under faults: a results store
whose writes fail sends the record back, and a consumer killed mid-batch loses nothing."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from celery import states

from devtools.cloud.deploy import EventSource
from infra.consumer.pipeline import SAFETY_MARGIN_SECONDS
from infra.core import aws
from infra.core.settings import Settings
from tests.apps import probe
from tests.integration.guarantees.app import CRASH_QUEUE, record
from tests.integration.guarantees.support import (
    SETTLE,
    Queues,
    calls_of,
    claimed_by,
    drained,
    item,
    marker,
    state,
    states_of,
    wait_for,
)
from tests.invoke import context_with, invoke
from tests.sqs_helpers import counts, receive
from tests.workers import ROOT

pytestmark = [
    pytest.mark.integration,
    # The Lambda path times tasks with SIGALRM in this thread: keep pytest-timeout off that signal.
    pytest.mark.timeout(300, method="thread"),
]

# ---------------------------------------------------------------- store faults


class ResultWriteFault:
    """Makes writes to the results table fail (the claims -- a TransactWriteItems, or the
    UpdateItem of a task standing alone -- are let through)."""

    def __init__(self, table: str, times: int | None = None) -> None:
        self.table = table
        self.left = times
        self.failed: list[str] = []

    def __call__(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        body = json.loads(params["body"] or "{}")
        tables = {body.get("TableName"), *body.get("RequestItems", {})}
        claim = str(body.get("UpdateExpression", "")).startswith("SET claim_owner")
        if self.table not in tables or self.left == 0 or claim:
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


# ---------------------------------------------------------------- crash


CRASH_TASKS = 300

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
