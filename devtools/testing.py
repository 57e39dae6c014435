"""The Lambda path as a test fixture: the counterpart of Celery's ``start_worker`` and
``celery_session_worker``.

:func:`start_lambda` runs the event-source emulator and the template's SQS handler for a given app
in threads of this process, so the test sees the signals the tasks send and their side effects,
as it does with Celery's embedded worker. It uses the local cloud at ``AWS_ENDPOINT_URL`` (the
template deployed into it) or, when that is unset, starts the embedded emulator for the block.

Invocations take turns (one execution environment): each runs in a poller thread, so task time
limits, which need the main thread's signals, are not enforced, as in Celery's threaded pools.

As pytest fixtures (load with ``-p devtools.testing`` or ``pytest_plugins = ["devtools.testing"]``,
next to Celery's ``celery.contrib.pytest``): ``celery_lambda_session_worker`` serves
``celery_session_app`` for the session, ``celery_lambda_worker`` serves ``celery_app`` for one
test; ``celery_lambda_parameters`` passes keyword arguments to :func:`start_lambda`.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import pytest
from celery._state import _set_task_join_will_block
from celery.result import allow_join_result

from devtools.cloud.deploy import Deployment, EventSource, deploy
from devtools.cloud.event_source import (
    Answer,
    ConsumeStats,
    EventSourcePoller,
    handler_from_source,
)
from devtools.cloud.session import local_cloud, point_app_at
from infra.consumer import runtime
from infra.core import aws
from infra.core.errors import ConfigurationError
from infra.core.settings import Settings

__all__ = [
    "LambdaWorker",
    "celery_lambda_parameters",
    "celery_lambda_session_worker",
    "celery_lambda_worker",
    "lambda_sources",
    "served_app",
    "start_lambda",
]

SQS_HANDLER = "handlers.sqs.handler"
"""The template's handler of SQS records."""
SERVED = f"{__name__}:served_app"
"""What ``CELERY_APP`` names while :func:`start_lambda` runs: the handler loads the app from it."""

served_app: Any = None
"""The app :func:`start_lambda` serves (None outside it)."""


@dataclasses.dataclass(slots=True)
class LambdaWorker:
    """What :func:`start_lambda` runs: the app, the deployment and the event sources it polls."""

    app: Any
    deployment: Deployment
    sources: tuple[EventSource, ...]
    stats: ConsumeStats = ConsumeStats()
    errors: list[BaseException] = dataclasses.field(default_factory=list)


class _Poller:
    """One event source polled in a daemon thread until ``stop`` is set."""

    def __init__(self, poller: EventSourcePoller, stop: threading.Event, wait: int) -> None:
        self.stats = ConsumeStats()
        self.error: BaseException | None = None
        self._run: Callable[[], ConsumeStats] = functools.partial(
            poller.run, stop=stop, wait_seconds=wait
        )
        name = f"lambda-{poller.source.function}"
        self.thread = threading.Thread(target=self._main, name=name, daemon=True)

    def _main(self) -> None:
        try:
            self.stats = self._run()
        except BaseException as exc:  # reported by start_lambda when the block ends
            self.error = exc


@contextmanager
def _cloud(deployment: Deployment | None) -> Iterator[Deployment]:
    """The given deployment, the template deployed at ``AWS_ENDPOINT_URL``, or a new emulator."""
    if deployment is not None:
        yield deployment
    elif os.environ.get("AWS_ENDPOINT_URL"):
        yield deploy(Settings.from_env())
    else:
        with local_cloud() as started:
            yield started


def _queue_arn(url: str, settings: Settings) -> str:
    response = aws.client("sqs", settings).get_queue_attributes(
        QueueUrl=url, AttributeNames=["QueueArn"]
    )
    return str(response["Attributes"]["QueueArn"])


def lambda_sources(deployment: Deployment, queues: Sequence[str]) -> tuple[EventSource, ...]:
    """The event sources of ``queues`` (Celery queue names): the template's own where it wires
    the queue to the SQS handler, else one like them on that queue.

    Raises:
        ConfigurationError: a queue has no URL in ``CELERY_QUEUE_URLS``, or the template wires
            no queue to the SQS handler.
    """
    settings = Settings.from_env(deployment.environment)
    wired = [s for s in deployment.event_sources if s.handler == SQS_HANDLER]
    if not wired:
        raise ConfigurationError(f"the template wires no queue to {SQS_HANDLER}")
    by_url = {s.queue_url: s for s in wired}
    sources = []
    for name in queues:
        url = settings.queue_urls.get(name)
        if url is None:
            raise ConfigurationError(f"queue {name!r} has no URL in CELERY_QUEUE_URLS")
        like = dataclasses.replace(wired[0], queue_url=url, queue_arn=_queue_arn(url, settings))
        sources.append(by_url.get(url) or like)
    return tuple(sources)


@contextmanager
def _serving(app: Any, deployment: Deployment) -> Iterator[None]:
    """This process pointed at ``deployment`` and the handler serving ``app``; restored after."""
    global served_app
    if served_app is not None:
        raise ConfigurationError("start_lambda is already serving an app in this process")
    saved = dict(os.environ)
    point_app_at(app, deployment)
    os.environ["CELERY_APP"] = SERVED
    served_app = app
    runtime.pipeline.cache_clear()
    try:
        yield
    finally:
        served_app = None
        runtime.pipeline.cache_clear()
        os.environ.clear()
        os.environ.update(saved)
        aws.clear_clients()


def _ping(app: Any, timeout: float) -> None:
    """Wait until the handler answers Celery's ``celery.ping`` task, as ``start_worker`` does."""
    import celery.contrib.testing.tasks  # noqa: F401  (registers celery.ping on every app)

    with allow_join_result():
        answer = app.tasks["celery.ping"].delay().get(timeout=timeout)
    if answer != "pong":
        raise ConfigurationError(f"celery.ping answered {answer!r}")


@contextmanager
def start_lambda(
    app: Any,
    *,
    queues: Sequence[str] | None = None,
    deployment: Deployment | None = None,
    failed_visibility: int | None = 1,
    batching_window: int | None = 0,
    perform_ping_check: bool = True,
    ping_task_timeout: float = 30.0,
    wait_seconds: int = 1,
    shutdown_timeout: float = 60.0,
) -> Iterator[LambdaWorker]:
    """Serve ``app`` through the Lambda path in threads of this process until the block ends.

    ``queues`` are the Celery queues polled (default: the app's default queue), each as the
    template's event source on it. A record the handler reports failed is visible again after
    ``failed_visibility`` seconds (None: the queue's visibility timeout, as on AWS).
    ``batching_window`` replaces the template's ``MaximumBatchingWindowInSeconds``: 0 by default,
    so an invocation starts as soon as a record is there, as a worker does (with the template's
    window, None, each batch waits that long for more records and a chain pays it at every
    step). Stopping takes up to ``wait_seconds`` plus the batch in progress.

    Raises:
        ConfigurationError: a queue has no URL, another app is being served, the ping failed.
        RuntimeError: a poller did not stop within ``shutdown_timeout``.
        BaseException: what a poller raised, once the block ended.
    """
    with ExitStack() as stack:
        cloud = stack.enter_context(_cloud(deployment))
        stack.enter_context(_serving(app, cloud))
        names = list(queues or [app.conf.task_default_queue])
        sources = lambda_sources(cloud, names)
        if batching_window is not None:
            sources = tuple(
                dataclasses.replace(s, batching_window=batching_window) for s in sources
            )
        worker = LambdaWorker(app, cloud, sources)
        stop, turn = threading.Event(), threading.Lock()

        def invoker(invocation: Callable[[], Answer]) -> Answer:
            with turn:  # one execution environment: one invocation at a time
                return invocation()

        pollers = [
            _Poller(
                EventSourcePoller(
                    source,
                    handler_from_source(source),
                    failed_visibility=failed_visibility,
                    invoker=invoker,
                ),
                stop,
                wait_seconds,
            )
            for source in worker.sources
        ]
        for poller in pollers:
            poller.thread.start()
        stack.callback(_stop, worker, pollers, stop, shutdown_timeout)
        _set_task_join_will_block(False)
        if perform_ping_check:
            _ping(app, ping_task_timeout)
        yield worker


def _stop(
    worker: LambdaWorker, pollers: Sequence[_Poller], stop: threading.Event, timeout: float
) -> None:
    """Stop the pollers; their counters and errors into ``worker``.

    Raises:
        RuntimeError: a poller is still running after ``timeout`` seconds.
        BaseException: the first error a poller raised.
    """
    stop.set()
    for poller in pollers:
        poller.thread.join(timeout)
        if poller.thread.is_alive():
            raise RuntimeError(f"{poller.thread.name} did not stop within {timeout} s")
        worker.stats += poller.stats
        if poller.error is not None:
            worker.errors.append(poller.error)
    if worker.errors:
        raise worker.errors[0]


# ---------------------------------------------------------------- pytest fixtures


@pytest.fixture(scope="session")
def celery_lambda_parameters() -> Mapping[str, Any]:
    """Redefine to pass keyword arguments to :func:`start_lambda` (queues, failed_visibility...)."""
    return {}


@pytest.fixture(scope="session")
def celery_lambda_session_worker(
    celery_session_app: Any,
    celery_includes: Sequence[str],
    celery_class_tasks: Sequence[Any],
    celery_lambda_parameters: Mapping[str, Any],
) -> Iterator[LambdaWorker]:
    """Session fixture: ``celery_session_app`` served through the Lambda path, as
    ``celery_session_worker`` serves it through an embedded worker."""
    for module in celery_includes:
        celery_session_app.loader.import_task_module(module)
    for class_task in celery_class_tasks:
        celery_session_app.register_task(class_task)
    with start_lambda(celery_session_app, **celery_lambda_parameters) as worker:
        yield worker


@pytest.fixture()
def celery_lambda_worker(
    celery_app: Any,
    celery_includes: Sequence[str],
    celery_lambda_parameters: Mapping[str, Any],
) -> Iterator[LambdaWorker]:
    """Fixture: ``celery_app`` served through the Lambda path for one test (``celery_worker``)."""
    for module in celery_includes:
        celery_app.loader.import_task_module(module)
    with start_lambda(celery_app, **celery_lambda_parameters) as worker:
        yield worker
