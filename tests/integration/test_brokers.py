"""The worker path on Redis and on RabbitMQ: ``celery -A tasks worker`` with another broker.

A real ``redis-server`` and a real RabbitMQ node (``tests.servers``) carry the messages; results
stay in the local cloud's results table, so claims (a task delivered twice runs once) and revoke
(markers in the table) hold as on SQS. Only the broker changes: ``CELERY_BROKER_URL``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
from celery import Celery, chain, chord, group
from celery.exceptions import TaskRevokedError
from celery.result import AsyncResult
from kombu.utils.uuid import uuid

import infra
import tasks
from devtools.examples import ADD, ALWAYS_FAILS, DUMP_CONTEXT, ERROR_HANDLER, FLAKY, XSUM
from tests.servers import rabbitmq_server, redis_server
from tests.workers import celery_worker, outcome_lines

pytestmark = pytest.mark.integration

BROKERS: dict[str, Callable[[Path], AbstractContextManager[str]]] = {
    "redis": redis_server,
    "rabbitmq": rabbitmq_server,
}


@pytest.fixture(scope="module", params=sorted(BROKERS))
def broker(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The broker's URL, while the server runs."""
    with BROKERS[request.param](tmp_path_factory.mktemp(request.param)) as url:
        yield url


@pytest.fixture(scope="module")
def worker(
    broker: str, cloud_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """``celery -A tasks worker`` on the broker, results in the cloud; yields its log."""
    log = tmp_path_factory.mktemp("broker-worker") / "worker.log"
    env = {**cloud_env, "CELERY_BROKER_URL": broker}
    args = ["--concurrency=2", "--hostname", f"brokers-{broker.split(':')[0]}@%h"]
    with celery_worker("tasks", args, env, log):
        yield log


@pytest.fixture(scope="module")
def app(broker: str, worker: Path) -> Iterator[Celery]:
    """A producer configured as ``tasks.app`` is, with ``CELERY_BROKER_URL`` naming the broker
    (Celery reads it over ``broker_url``) for as long as the module runs."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CELERY_BROKER_URL", broker)
        producer = Celery("tasks", set_as_current=False)
        producer.config_from_object("tasks.celeryconfig")
        infra.configure(producer)
        yield producer
        producer.close()


def _sig(app: Celery, name: str, *args: Any, **kwargs: Any) -> Any:
    return app.signature(name, args, kwargs)


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_add_result_is_in_the_shared_store(app: Celery) -> None:
    result = _sig(app, ADD, 4, 4).delay()
    assert result.get(timeout=60) == 8
    # The SQS-side app reads the same item: the results table is the Lambda path's too.
    assert AsyncResult(result.id, app=tasks.app).get(timeout=10) == 8


def test_link_passes_the_result_to_the_callback(app: Celery) -> None:
    parent = _sig(app, ADD, 2, 2).apply_async(link=_sig(app, ADD, 16))
    assert parent.get(timeout=60) == 4

    def child_listed() -> bool:
        nonlocal parent
        parent = AsyncResult(parent.id, app=app)
        return bool(parent.children)

    _wait_for(child_listed, "the link's child in the parent's result")
    (child,) = parent.children
    assert child.get(timeout=60) == 20


def test_chain_group_and_chord(app: Celery) -> None:
    add = _sig(app, ADD)
    steps = chain(add.clone((2, 2)), add.clone((4,)), add.clone((8,))).apply_async()
    fan_out = group(add.clone((i, i)) for i in range(5)).apply_async()
    fan_in = chord((add.clone((i, i)) for i in range(4)), _sig(app, XSUM)).apply_async()
    assert steps.get(timeout=60) == 16
    assert fan_out.get(timeout=60) == [0, 2, 4, 6, 8]
    assert fan_in.get(timeout=60) == 12


def test_countdown_and_retry_with_backoff(app: Celery) -> None:
    later = _sig(app, ADD, 5, 5).apply_async(countdown=2)
    flaky = _sig(app, FLAKY, failures=2).apply_async()
    assert later.get(timeout=60) == 10
    assert flaky.get(timeout=60) == {"attempts": 3}


def test_link_error_callback_reads_the_failure(app: Celery, worker: Path) -> None:
    failing = _sig(app, ALWAYS_FAILS, 7, 8).apply_async(link_error=_sig(app, ERROR_HANDLER))
    with pytest.raises(KeyError):
        failing.get(timeout=60)
    assert failing.state == "FAILURE"
    line = f"Task {failing.id} raised exception: KeyError(7)"
    _wait_for(lambda: line in worker.read_text(), "the error handler's line")


def test_a_task_delivered_twice_runs_once(app: Celery, worker: Path) -> None:
    task_id = uuid()
    first = app.send_task(DUMP_CONTEXT, args=("once", 1), task_id=task_id)
    assert first.get(timeout=60)["id"] == task_id
    # The same message again, as an at-least-once broker may deliver it: acked, not run.
    app.send_task(DUMP_CONTEXT, args=("once", 1), task_id=task_id)
    _wait_for(lambda: len(outcome_lines(worker, task_id)) == 2, "the second delivery's outcome")
    assert [line["state"] for line in outcome_lines(worker, task_id)] == ["SUCCESS", "IGNORED"]
    assert worker.read_text().count(f"Executing task id {task_id}") == 1
    assert AsyncResult(task_id, app=app).get(timeout=10)["args"] == ["once", 1]


def test_an_idle_worker_stops_within_seconds(
    broker: str, cloud_env: dict[str, str], tmp_path: Path
) -> None:
    # SQS-only transport options must not reach the broker: kombu's Redis transport turns
    # polling_interval=0 into BRPOP timeout 0, which blocks a stopping worker until a message comes.
    env = {**cloud_env, "CELERY_BROKER_URL": broker}
    with celery_worker("tasks", ["--concurrency=1"], env, tmp_path / "worker.log"):
        time.sleep(2)  # consuming, not still declaring its queues
        stopping = time.monotonic()
    assert time.monotonic() - stopping < 15


def test_revoked_before_its_countdown_never_runs(app: Celery, worker: Path) -> None:
    result = app.send_task(DUMP_CONTEXT, args=("revoked", 1), countdown=3)
    app.control.revoke(result.id)
    with pytest.raises(TaskRevokedError):
        result.get(timeout=60)
    assert result.state == "REVOKED"
    assert f"Executing task id {result.id}" not in worker.read_text()
