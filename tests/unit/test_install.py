"""``infra.configure(app)``: what it fills in from the environment, what it leaves to the app.

Pure: a configured app makes no AWS client until it publishes or reads a result.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from celery import Celery

import infra
from infra.core.errors import ConfigurationError
from infra.core.settings import current
from infra.worker.task import ClaimingTask

QUEUE_URL = "http://127.0.0.1:1/123456789012/own-queue"


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A known environment, resolved afresh for each test and forgotten after it."""
    for name in ("CELERY_BROKER_URL", "CELERY_WORKER_MAX_TASKS_PER_CHILD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CELERY_QUEUE_URLS", json.dumps({"own": QUEUE_URL}))
    monkeypatch.setenv("CELERY_WORKER_MAX_MEMORY_PER_CHILD", "1000")
    monkeypatch.setenv("RESULTS_BUCKET", "own-bucket")
    current.cache_clear()
    yield
    current.cache_clear()


def test_a_bare_app_is_ready_from_the_environment() -> None:
    app = infra.configure(Celery("bare", set_as_current=False))

    @app.task(name="bare.noop", shared=False)
    def noop() -> None: ...

    conf = app.conf
    assert conf.broker_url == "sqs://"
    assert conf.broker_transport == "infra.producer.transport:Transport"
    options = conf.broker_transport_options
    assert options["predefined_queues"] == {"own": {"url": QUEUE_URL}}
    assert (options["payload_bucket"], options["polling_interval"]) == ("own-bucket", 0)
    assert conf.result_backend == "infra.store.results:DynamoDBBackend"
    assert (conf.task_acks_late, conf.task_reject_on_worker_lost) == (True, True)
    assert (conf.worker_max_memory_per_child, conf.worker_max_tasks_per_child) == (1000, None)
    assert conf.worker_disable_rate_limits  # paced through the table instead
    assert isinstance(app.tasks["bare.noop"], ClaimingTask)


def test_what_the_app_set_is_kept_and_transport_options_merge() -> None:
    app = Celery("mine", set_as_current=False)
    app.conf.update(
        result_backend="cache+memory://",
        worker_max_memory_per_child=2000,
        broker_transport_options={"visibility_timeout": 30},
    )

    infra.configure(app)

    assert app.conf.result_backend == "cache+memory://"
    assert app.conf.worker_max_memory_per_child == 2000
    options = app.conf.broker_transport_options
    assert options["visibility_timeout"] == 30  # the app's
    assert options["predefined_queues"] == {"own": {"url": QUEUE_URL}}  # ours beside it


def test_keyword_overrides_win_and_claims_can_be_left_out() -> None:
    app = Celery("overridden", set_as_current=False)

    infra.configure(app, claims=False, result_backend="cache+memory://", task_acks_late=False)

    assert app.conf.result_backend == "cache+memory://"
    assert app.conf.task_acks_late is False
    assert app.task_cls == "celery.app.task:Task"
    assert not app.conf.worker_disable_rate_limits


@pytest.mark.parametrize("broker", ["redis://127.0.0.1:6379/0", "amqp://guest@127.0.0.1//"])
def test_another_broker_keeps_its_transport_and_gets_results_claims_and_revoke(
    broker: str,
) -> None:
    app = infra.configure(Celery("elsewhere", broker=broker, set_as_current=False))

    assert app.conf.broker_url == broker
    assert app.conf.broker_transport is None
    assert app.conf.broker_transport_options == {}
    assert app.conf.result_backend == "infra.store.results:DynamoDBBackend"
    assert app.task_cls == "infra.worker.task:ClaimingTask"
    assert app.control.revoke.__qualname__.startswith("install.")  # markers in the table


def test_an_app_s_own_task_base_is_kept() -> None:
    class Mine(ClaimingTask):  # type: ignore[misc]  # Celery's Task is untyped
        pass

    app = infra.configure(Celery("based", task_cls=Mine, set_as_current=False))

    assert app.task_cls is Mine


def test_claims_after_the_task_base_was_built_is_a_clear_error() -> None:
    app = Celery("late", set_as_current=False)
    assert app.Task is not None  # built from Celery's default base

    with pytest.raises(ConfigurationError, match="before the app's first task"):
        infra.configure(app)
