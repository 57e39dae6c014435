"""A task the served app does not register, through the real handler: its record fails (retries,
then the DLQ) and its id says why -- NOT_REGISTERED with the reason, for a client and for
``lambda inspect`` -- until a deploy registers the task and the redriven message runs.

Driven as Lambda drives ``handlers.sqs.handler`` against moto in server mode (fixtures in
``conftest.py``: this module's queue redrives to its DLQ after 3 receives).
"""

from __future__ import annotations

import json
import types
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from celery import states
from click.testing import CliRunner, Result

from devtools.cli import lambda_
from devtools.ops.redrive import redrive_queue
from infra.consumer import runtime
from infra.core import aws
from infra.store.items import NOT_REGISTERED
from tests.apps import probe
from tests.functional.consumer.support import Queues, stored, visible_again
from tests.functional.store.support import item
from tests.invoke import invoke
from tests.sqs_helpers import counts, receive

pytestmark = pytest.mark.usefixtures("served")

NAME = "probe.deployed_later"


def add(x: int, y: int) -> int:
    return x + y


@pytest.fixture
def deploy() -> Iterator[Callable[[], None]]:
    """Registers :data:`NAME` in the served app, as the deploy that adds the task would."""

    def register() -> None:
        probe.app.task(name=NAME, shared=False)(add)
        assert NAME in probe.app.tasks

    yield register
    probe.app.tasks.pop(NAME, None)


@pytest.fixture
def updates() -> Iterator[list[str]]:
    """The DynamoDB UpdateItem calls made while the test runs (the key of each)."""
    seen: list[str] = []

    def count(params: dict[str, Any], **_: Any) -> None:
        seen.append(str(params.get("Key")))

    client = aws.client("dynamodb")
    client.meta.events.register("provide-client-params.dynamodb.UpdateItem", count, "count")
    yield seen
    client.meta.events.unregister("provide-client-params.dynamodb.UpdateItem", unique_id="count")


def cli(*args: str) -> Result:
    obj = types.SimpleNamespace(app=probe.app)
    size = {"COLUMNS": "200", "LINES": "100"}  # rich sizes its console from these
    return CliRunner().invoke(lambda_, list(args), obj=obj, env=size)


def fail_once_more(queues: Queues, message: dict[str, Any]) -> dict[str, Any]:
    """The message's next receive, handled: it fails again."""
    visible_again(queues.source.queue_url, [message])
    [again] = receive(queues.source.queue_url, 1)
    assert invoke(queues.source, [again]) == [again["MessageId"]]
    return again


def test_the_id_says_not_registered_until_a_deploy_and_a_redrive_run_it(
    queues: Queues, deploy: Callable[[], None], updates: list[str]
) -> None:
    url = queues.source.queue_url
    task_id = probe.app.send_task(NAME, args=(2, 3)).id
    [message] = receive(url, 1)

    assert invoke(queues.source, [message]) == [message["MessageId"]]

    result = stored(task_id)
    where = runtime.pipeline().runner.hostname
    assert (result.state, result.ready()) == (NOT_REGISTERED, False)
    assert result.info == {
        "exc_type": "NotRegistered",
        "exc_module": "celery.exceptions",
        "exc_message": f"task {NAME!r} is not registered in {where}",
        "task": NAME,
        "consumer": where,
        "queue": probe.app.conf.task_default_queue,
    }
    assert len(updates) == 1
    written = item(task_id)

    # The receives that follow write nothing; the third one's failure sends it to the DLQ.
    third = fail_once_more(queues, fail_once_more(queues, message))
    assert updates == [updates[0]] and item(task_id) == written
    visible_again(url, [third])
    aws.client("sqs").receive_message(QueueUrl=url, WaitTimeSeconds=0)  # moto moves it now
    assert counts(queues.dlq_url)[0] == 1

    deploy()
    moved = redrive_queue(aws.client("sqs"), queues.dlq_url, lambda m: url)
    assert len(moved.moved) == 1
    assert invoke(queues.source, receive(url, 1)) == []

    result = stored(task_id)
    assert (result.state, result.result) == (states.SUCCESS, 5)


def test_inspect_shows_the_state_and_the_reason(queues: Queues) -> None:
    task_id = probe.app.send_task("no.such.task").id
    invoke(queues.source, receive(queues.source.queue_url, 1))

    shown = cli("inspect", task_id, "--json")

    assert shown.exit_code == 0, shown.output
    task = json.loads(shown.stdout)["task"]
    where = runtime.pipeline().runner.hostname
    reason = f"NotRegistered: task 'no.such.task' is not registered in {where}"
    assert (task["state"], task["task_name"], task["exception"]) == (
        NOT_REGISTERED,
        "no.such.task",
        reason,
    )
    assert task["result"] is None
    panel = cli("inspect", task_id)
    assert panel.exit_code == 0, panel.output
    assert NOT_REGISTERED in panel.output and reason in panel.output


def test_an_id_no_key_can_hold_fails_the_record_and_writes_nothing(queues: Queues) -> None:
    task_id = "x" * 300
    probe.app.send_task("no.such.task", task_id=task_id)
    [message] = receive(queues.source.queue_url, 1)

    assert invoke(queues.source, [message]) == [message["MessageId"]]

    assert item(task_id) == {}
