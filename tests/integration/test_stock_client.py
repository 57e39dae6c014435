"""A stock Celery client reads every state this project's result backend writes.

The reader runs in a subprocess that imports nothing but Celery (it checks ``sys.modules``) and
uses Celery's own ``dynamodb://`` backend on the template's results table. The states are written
two ways: straight through ``infra.store.results.DynamoDBBackend`` (``store_result``,
``mark_as_failure``, ``mark_as_revoked``, ...) and by real tasks of this module's app, published
with ``apply_async``, received from SQS and run by ``handlers.sqs.handler`` as the event source
mapping would invoke it.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery, states
from celery._state import get_current_app
from celery.app.task import Context

from devtools.cloud.deploy import Deployment, EventSource
from devtools.cloud.event_source import build_event, delete_requests, make_context
from devtools.cloud.session import point_app_at
from handlers.sqs import handler
from infra.consumer import runtime
from infra.core import aws
from infra.store.result_requests import POINTER_KEY
from infra.store.results import DynamoDBBackend

pytestmark = pytest.mark.integration

ONE_MB = 1024 * 1024

app = Celery("stock-client-test", set_as_current=False)
app.config_from_object("tasks.celeryconfig")


@app.task(name="stock_client.echo")
def echo(value: Any) -> Any:
    return value


@app.task(name="stock_client.boom")
def boom(message: str) -> None:
    raise ValueError(message)


@app.task(name="stock_client.big")
def big(size: int) -> dict[str, str]:
    return {"blob": "x" * size}


# Celery only, from a directory with nothing of this project in it.
READER = textwrap.dedent(
    """
    import json, sys
    from celery import Celery
    from celery.result import AsyncResult

    table, endpoint = sys.argv[1], sys.argv[2]
    app = Celery("stock-reader", backend=f"dynamodb://@us-east-1/{table}")
    app.conf.dynamodb_endpoint_url = endpoint

    def plain(value):
        if isinstance(value, BaseException):
            return {"exception": type(value).__name__, "args": [str(a) for a in value.args]}
        return value

    seen = {}
    for task_id in json.load(sys.stdin):
        result = AsyncResult(task_id, app=app)
        entry = {"state": result.state, "info": plain(result.info)}
        entry["traceback"] = result.traceback
        if result.ready():
            try:
                entry["get"] = result.get(timeout=5)
            except Exception as exc:
                entry["raised"] = plain(exc)
        seen[task_id] = entry
    ours = ("infra", "tasks", "handlers", "tests")
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in ours)
    print(json.dumps({"results": seen, "project_modules": leaked}))
    """
)


def read_with_stock_celery(
    ids: list[str], cloud: Deployment, env: dict[str, str], cwd: Path
) -> dict[str, dict[str, Any]]:
    """What a stock Celery client sees of each task id."""
    table = cloud.environment["RESULTS_TABLE"]
    endpoint = cloud.endpoint_url or ""
    done = subprocess.run(
        [sys.executable, "-c", READER, table, endpoint],
        input=json.dumps(ids),
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    output = json.loads(done.stdout)
    assert output["project_modules"] == []
    results: dict[str, dict[str, Any]] = output["results"]
    return results


# ---------------------------------------------------------------- the Lambda path


@pytest.fixture(scope="module")
def source(cloud: Deployment) -> Iterator[EventSource]:
    """A queue of this module, its event source, and the handler serving this module's app."""
    [celery_source] = [s for s in cloud.event_sources if s.queue_arn.endswith("-celery")]
    sqs = aws.client("sqs")
    name = f"stock-client-{uuid.uuid4().hex[:8]}"
    url = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "60"})["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    previous = get_current_app()
    point_app_at(app, cloud)
    options = dict(app.conf.broker_transport_options)
    options["predefined_queues"] = {**options.get("predefined_queues", {}), name: {"url": url}}
    app.conf.broker_transport_options = options
    app.conf.task_default_queue = name
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CELERY_APP", f"{__name__}:app")
        runtime.pipeline.cache_clear()
        yield dataclasses.replace(
            celery_source, queue_url=url, queue_arn=arn["Attributes"]["QueueArn"]
        )
    runtime.pipeline.cache_clear()
    previous.set_current()
    sqs.delete_queue(QueueUrl=url)


def run_on_lambda(source: EventSource, count: int) -> None:
    """Receive ``count`` messages, invoke the handler with them as one event, delete them."""
    sqs = aws.client("sqs")
    messages: list[dict[str, Any]] = []
    for _ in range(20):
        if len(messages) == count:
            break
        response = sqs.receive_message(
            QueueUrl=source.queue_url,
            MaxNumberOfMessages=min(10, count - len(messages)),
            WaitTimeSeconds=1,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        messages.extend(response.get("Messages", []))
    assert len(messages) == count
    event = build_event(messages, source, source.queue_arn.split(":")[3])
    response = handler(event, make_context(source))
    assert response["batchItemFailures"] == []
    for entries in delete_requests(messages):
        sqs.delete_message_batch(QueueUrl=source.queue_url, Entries=entries)


# ---------------------------------------------------------------- the states


@pytest.fixture(scope="module")
def written(cloud: Deployment, source: EventSource) -> dict[str, str]:
    """Task ids by what was written for them."""
    backend = DynamoDBBackend(app=app)
    request = Context(task="stock_client.echo", delivery_info={"routing_key": "celery"})
    ids = {name: str(uuid.uuid4()) for name in ("success", "failure", "progress", "revoked")}
    ids |= {name: str(uuid.uuid4()) for name in ("retry", "late-started", "pending")}
    backend.store_result(ids["success"], {"answer": 42}, states.SUCCESS, request=request)
    backend.mark_as_failure(ids["failure"], ValueError("bad input"), traceback="Traceback ...")
    backend.store_result(ids["progress"], {"current": 3, "total": 10}, "PROGRESS")
    backend.mark_as_revoked(ids["revoked"], "stopped by test")
    backend.mark_as_retry(ids["retry"], RuntimeError("again"), traceback="Traceback ...")
    backend.store_result(ids["late-started"], "done", states.SUCCESS)
    backend.store_result(ids["late-started"], {"pid": 1}, states.STARTED)  # dropped
    ids["lambda-success"] = echo.apply_async(({"sum": 7},)).id
    ids["lambda-failure"] = boom.apply_async(("from lambda",)).id
    ids["lambda-large"] = big.apply_async((ONE_MB,)).id
    run_on_lambda(source, 3)
    return ids


@pytest.fixture(scope="module")
def stock(
    written: dict[str, str],
    cloud: Deployment,
    cloud_env: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, dict[str, Any]]:
    """What the stock client sees, by the names of ``written``."""
    seen = read_with_stock_celery(
        list(written.values()), cloud, cloud_env, tmp_path_factory.mktemp("stock-reader")
    )
    return {name: seen[task_id] for name, task_id in written.items()}


def test_success(stock: dict[str, dict[str, Any]]) -> None:
    assert stock["success"]["state"] == states.SUCCESS
    assert stock["success"]["get"] == stock["success"]["info"] == {"answer": 42}


def test_failure_is_the_exception(stock: dict[str, dict[str, Any]]) -> None:
    failure = stock["failure"]
    assert failure["state"] == states.FAILURE
    expected = {"exception": "ValueError", "args": ["bad input"]}
    assert failure["raised"] == failure["info"] == expected
    assert failure["traceback"] == "Traceback ..."


def test_progress_meta(stock: dict[str, dict[str, Any]]) -> None:
    assert stock["progress"]["state"] == "PROGRESS"
    assert stock["progress"]["info"] == {"current": 3, "total": 10}
    assert "get" not in stock["progress"]  # not ready


def test_revoked(stock: dict[str, dict[str, Any]]) -> None:
    assert stock["revoked"]["state"] == states.REVOKED
    assert stock["revoked"]["raised"]["exception"] == "TaskRevokedError"


def test_retry_and_unknown(stock: dict[str, dict[str, Any]]) -> None:
    assert stock["retry"]["state"] == states.RETRY
    assert stock["retry"]["info"] == {"exception": "RuntimeError", "args": ["again"]}
    assert stock["pending"]["state"] == states.PENDING


def test_a_late_started_did_not_replace_success(stock: dict[str, dict[str, Any]]) -> None:
    assert stock["late-started"]["state"] == states.SUCCESS
    assert stock["late-started"]["get"] == "done"


def test_tasks_run_by_the_lambda_handler(stock: dict[str, dict[str, Any]]) -> None:
    assert stock["lambda-success"]["get"] == {"sum": 7}
    assert stock["lambda-failure"]["state"] == states.FAILURE
    assert stock["lambda-failure"]["raised"] == {"exception": "ValueError", "args": ["from lambda"]}
    assert "ValueError: from lambda" in stock["lambda-failure"]["traceback"]


def test_a_large_result_is_a_pointer_to_stock_and_the_value_to_us(
    stock: dict[str, dict[str, Any]], written: dict[str, str]
) -> None:
    large = stock["lambda-large"]
    assert large["state"] == states.SUCCESS
    assert set(large["get"]) == {POINTER_KEY}
    assert large["get"][POINTER_KEY]["key"].startswith(f"results/{written['lambda-large']}/")

    value = app.AsyncResult(written["lambda-large"]).get(timeout=10)

    assert value == {"blob": "x" * ONE_MB}
