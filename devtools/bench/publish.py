"""``celery -A tasks lambda bench-publish``: how fast N ``tasks.add`` messages are published, as
a ``group`` with SendMessageBatch, as the same group without it, and as a loop of ``apply_async``.

Each way gets a fresh producer pool (batching is a transport option, read when the connection
is made) and one warm-up message, so the connection, the boto3 client and kombu's first
GetQueueAttributes are not timed; the queue is purged before and after, so moto never holds
more than one run's messages. The requests each publish made are read from the emulator's
counter; then the queue is checked to hold exactly N messages, outside the measurement.

The figures are the emulator's (moto on a shared machine): compare them within one run only.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from celery import group
from rich.console import Console
from rich.table import Table

from devtools.bench.drain import QUEUE, Run
from devtools.cloud.deploy import Deployment
from devtools.cloud.emulator import request_counts
from devtools.cloud.session import local_cloud, point_app_at
from devtools.examples import ADD, example_tasks
from infra.core import aws
from infra.core.errors import CeleryLambdaError, ConfigurationError
from infra.core.settings import Settings

__all__ = ["BATCHED", "LOOP", "MODES", "UNBATCHED", "bench_publish_main", "measure", "render"]

BATCH_VARIABLE = "CELERY_LAMBDA_BATCH_PUBLISH"
BATCHED = "group, batch_publish on"
UNBATCHED = "group, batch_publish off"
LOOP = "loop of apply_async"
BUDGET_SPEEDUP = 5.0
"""DESIGN's budget: a batched group publishes at least this many times faster than a loop."""
MOTO_NOTE = (
    "note: moto scans its whole queue for every message it accepts (SendMessage and each "
    "SendMessageBatch entry), so batching saves the round trips but not that work, and every "
    "rate falls as the queue fills; --round R publishes R at a time with the queue purged between"
)


def _publish_group(app: Any, count: int) -> None:
    add = app.tasks[ADD]
    group(add.s(i, i) for i in range(count)).apply_async()


def _publish_loop(app: Any, count: int) -> None:
    add = app.tasks[ADD]
    for i in range(count):
        add.apply_async((i, i))


MODES: dict[str, tuple[bool, Callable[[Any, int], None]]] = {
    BATCHED: (True, _publish_group),
    UNBATCHED: (False, _publish_group),
    LOOP: (True, _publish_loop),
}
"""Each way of publishing: batch_publish on or off, and what is timed."""


@contextmanager
def batch_publish(app: Any, deployment: Deployment, on: bool) -> Iterator[None]:
    """Inside the block ``app`` publishes with ``batch_publish`` on or off; as before after it."""
    saved = os.environ.get(BATCH_VARIABLE)
    os.environ[BATCH_VARIABLE] = "on" if on else "off"
    point_app_at(app, deployment)  # new transport options, new producer pool
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(BATCH_VARIABLE, None)
        else:
            os.environ[BATCH_VARIABLE] = saved
        point_app_at(app, deployment)


def _purge(queue_url: str) -> None:
    aws.client("sqs").purge_queue(QueueUrl=queue_url)


def _depth(queue_url: str) -> int:
    attributes = aws.client("sqs").get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"])


def _rounds(tasks: int, size: int | None) -> list[int]:
    """``tasks`` split into rounds of ``size`` (one round of all when None)."""
    size = min(size or tasks, tasks)
    return [size] * (tasks // size) + ([tasks % size] if tasks % size else [])


def _timed_round(
    app: Any, publish: Callable[[Any, int], None], count: int, endpoint: str, queue_url: str
) -> tuple[float, dict[str, int]]:
    """Publish ``count`` tasks into the empty queue: seconds, requests; the queue purged after.

    Raises:
        CeleryLambdaError: the queue did not then hold exactly ``count`` messages.
    """
    request_counts(endpoint, reset=True)
    started = time.perf_counter()
    publish(app, count)
    seconds = time.perf_counter() - started
    counts = request_counts(endpoint, reset=True)
    queued = _depth(queue_url)
    _purge(queue_url)
    if queued != count:
        raise CeleryLambdaError(f"published {count} tasks, the queue holds {queued}")
    return seconds, counts


def measure(
    app: Any, deployment: Deployment, mode: str, tasks: int, round_size: int | None = None
) -> Run:
    """Publish ``tasks`` ``tasks.add`` messages the ``mode`` way: seconds, requests by operation.

    With ``round_size`` they are published that many at a time (a group each), the queue
    purged between rounds outside the timing: moto's cost per message grows with the queue.

    Raises:
        CeleryLambdaError: a round left the queue without exactly its number of messages.
    """
    batch, publish = MODES[mode]
    endpoint, seconds, counts = deployment.endpoint_url or "", 0.0, Counter[str]()
    with batch_publish(app, deployment, batch):
        queue_url = Settings.from_env().queue_urls[QUEUE]
        _purge(queue_url)
        publish(app, 1)  # warm-up: connection, boto3 client, kombu's first GetQueueAttributes
        _purge(queue_url)
        for count in _rounds(tasks, round_size):
            try:
                spent, made = _timed_round(app, publish, count, endpoint, queue_url)
            except CeleryLambdaError as exc:
                raise CeleryLambdaError(f"{mode}: {exc}") from exc
            seconds += spent
            counts.update(made)
    return Run(mode, tasks, seconds, {op: n for op, n in counts.items() if n})


def render(runs: list[Run], round_size: int | None = None) -> Table:
    """The table: each way of publishing, its rate against the loop's, requests per task."""
    loop = next(run for run in runs if run.path == LOOP)
    size = min(round_size or loop.tasks, loop.tasks)
    how = "at once" if size == loop.tasks else f"in rounds of {size}, the queue purged between"
    table = Table(title=f"publish of {loop.tasks} tasks.add on the embedded emulator, {how}")
    for column in ("path", "tasks", "seconds", "tasks/s", "x loop", "req/task", "per task"):
        table.add_column(column, justify="left" if column in {"path", "per task"} else "right")
    for run in runs:
        table.add_row(
            run.path,
            str(run.tasks),
            f"{run.seconds:.2f}",
            f"{run.rate:.0f}",
            f"{run.rate / loop.rate:.2f}",
            f"{run.requests_per_task():.3f}",
            ", ".join(f"{op} {rate:.3f}" for op, rate in run.per_task().items()),
        )
    return table


def budget_line(runs: list[Run]) -> str:
    """DESIGN's publish budget beside the measured speed-up (printed, never asserted)."""
    by_path = {run.path: run for run in runs}
    speedup = by_path[BATCHED].rate / by_path[LOOP].rate
    verdict = "met" if speedup >= BUDGET_SPEEDUP else "NOT met"
    return (
        f"budget: batched group publish >= {BUDGET_SPEEDUP:g}x a loop of apply_async -- "
        f"measured {speedup:.2f}x ({verdict})"
    )


def bench_publish_main(app: Any, tasks: int = 1000, round_size: int | None = None) -> None:
    """The whole benchmark: emulator up, template deployed, each way measured, printed.

    Raises:
        ConfigurationError: fewer than one task, a round of fewer than one, or an app without
            ``tasks.add``.
        CeleryLambdaError: a publish left the queue without exactly its number of messages.
    """
    if tasks < 1 or (round_size is not None and round_size < 1):
        raise ConfigurationError("bench-publish needs tasks >= 1 and a round >= 1")
    example_tasks(app, ADD)  # before the emulator starts
    log, out = Console(stderr=True), Console(width=None if sys.stdout.isatty() else 160)
    with local_cloud() as deployment:
        runs = []
        for mode in MODES:
            log.print(f"{mode}: publishing {tasks} tasks…")
            runs.append(measure(app, deployment, mode, tasks, round_size))
    out.print(render(runs, round_size))
    out.print(budget_line(runs))
    out.print(MOTO_NOTE)
