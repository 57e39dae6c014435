"""``celery -A tasks lambda bench``: the same ``tasks.add`` load drained by a stock
``celery worker`` and by the Lambda path, in one run on the embedded emulator.

Before each consumer the emulator is emptied and the template deployed again under the same
names: a stopped worker's last long poll stays open in moto for up to 20 s and would take a
message of the next run, and every consumer starts from the same state. Then N tasks are
published (timed and counted on their own), the request counts are reset and the consumer starts.

Timing starts at the consumer's first ReceiveMessage and stops when the queue holds nothing
visible, in flight or delayed (with ``task_acks_late`` a message is deleted only after its
result is stored); the counts are read at that moment. One watcher takes both moments: it reads
the emulator's counter (not an AWS request) and calls GetQueueAttributes every
:data:`POLL_SECONDS`; its own calls are subtracted. Every result is then checked to be SUCCESS,
outside the measurement.

The figures are the emulator's (moto on a shared machine): compare them within one run only.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import IO, Any

from celery.result import AsyncResult
from rich.console import Console
from rich.table import Table

from devtools.cloud.deploy import Deployment, EventSource, deploy
from devtools.cloud.emulator import request_counts, reset_resources
from devtools.cloud.event_source import StopSignal, consume, handler_from_source
from devtools.cloud.session import local_cloud, point_app_at
from devtools.examples import ADD, example_tasks
from infra.core import aws
from infra.core.errors import CeleryLambdaError, ConfigurationError
from infra.core.settings import Settings

__all__ = [
    "ESM_OPERATIONS",
    "POOLS",
    "Bench",
    "Run",
    "bench_main",
    "render",
]

POOLS = {"prefork": 2, "threads": 8, "solo": 1}
"""Worker pools tried, with their concurrency; each gets a prefetch window of PREFETCH_WINDOW."""
PREFETCH_WINDOW = 16
LAMBDA_CONCURRENCY = 2
QUEUE = "celery"
POLL_SECONDS = 0.1
ESM_OPERATIONS = frozenset(
    {
        "sqs:ReceiveMessage",
        "sqs:DeleteMessageBatch",
        "sqs:ChangeMessageVisibilityBatch",
        "sqs:GetQueueAttributes",
    }
)
"""What the event source (on AWS, the event source mapping) sends; the function sends none of
these for ``tasks.add``. GetQueueAttributes is the emulator's ``until_empty`` check."""
BUDGET_REQUESTS = 0.6
BUDGET_SPEEDUP = 1.5
_QUEUE_COUNTS = (
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
)


@dataclass(frozen=True, slots=True)
class Run:
    """One measured drain (or publish): tasks, seconds, AWS requests by ``service:Operation``."""

    path: str
    tasks: int
    seconds: float
    counts: Mapping[str, int]

    @property
    def rate(self) -> float:
        """Tasks per second."""
        return self.tasks / self.seconds if self.seconds > 0 else math.inf

    def per_task(self, exclude: Iterable[str] = ()) -> dict[str, float]:
        """Requests per task by operation, the most frequent first."""
        skip = set(exclude)
        rates = {op: n / self.tasks for op, n in self.counts.items() if op not in skip and n}
        return dict(sorted(rates.items(), key=lambda item: (-item[1], item[0])))

    def requests_per_task(self, exclude: Iterable[str] = ()) -> float:
        """All requests per task."""
        return sum(self.per_task(exclude).values())


class Bench:
    """Publishes ``tasks`` ``tasks.add`` messages and measures one consumer draining them."""

    def __init__(self, app: Any, deployment: Deployment, tasks: int) -> None:
        """Point ``app`` at the deployment.

        Raises:
            ConfigurationError: the app registers no ``tasks.add``.
        """
        self.app = app
        self.add = example_tasks(app, ADD)[ADD]
        self.tasks = tasks
        self.stack_name = deployment.stack_name
        self.endpoint = deployment.endpoint_url or ""
        self.timeout = 60 + tasks * 0.5
        point_app_at(app, deployment)
        self.environment = dict(deployment.environment)
        self.env = {**os.environ, **self.environment}
        settings = Settings.from_env(self.env)
        self.queue_url = settings.queue_urls[QUEUE]
        self.served_app = settings.app
        """What the deployed function serves (``CELERY_APP``): the stock worker serves it too."""
        self.source = next(s for s in deployment.event_sources if s.queue_url == self.queue_url)

    def redeploy(self) -> None:
        """Empty the emulator and deploy the template again, under the same names.

        Raises:
            ConfigurationError: the new deployment's names differ (the app points at the old).
        """
        reset_resources(self.endpoint)
        deployment = deploy(stack_name=self.stack_name)
        changed = {k for k, v in deployment.environment.items() if self.environment.get(k) != v}
        if changed:
            raise ConfigurationError(f"redeploy changed {sorted(changed)}")

    def publish(self) -> tuple[list[str], Run]:
        """Publish the tasks with plain ``delay``; their ids and the publish's own figures."""
        request_counts(self.endpoint, reset=True)
        started = time.perf_counter()
        ids = [self.add.delay(i, i).id for i in range(self.tasks)]
        seconds = time.perf_counter() - started
        return ids, Run("publish", self.tasks, seconds, request_counts(self.endpoint, reset=True))

    def worker(self, pool: str) -> tuple[Run, Run]:
        """Drain with ``celery worker`` on ``pool``, serving ``CELERY_APP``: (publish, drain)."""
        concurrency = POOLS[pool]
        multiplier = math.ceil(PREFETCH_WINDOW / concurrency)
        label = f"worker -P {pool} -c {concurrency} x{multiplier}"
        self.redeploy()
        ids, published = self.publish()
        with tempfile.TemporaryFile() as log:
            process = subprocess.Popen(
                self._worker_command(pool, concurrency, multiplier),
                env={**self.env, "CELERY_LAMBDA_CLAIMS": "off"},  # the stock reference
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                drained = self._measure(label, lambda: process.poll() is None)
            except CeleryLambdaError as exc:
                raise CeleryLambdaError(f"{exc}\nworker log:\n{_tail(log)}") from exc
            finally:
                _stop(process)
        self._check(ids, label)
        return published, drained

    def _worker_command(self, pool: str, concurrency: int, multiplier: int) -> list[str]:
        return [
            *(sys.executable, "-m", "celery", "-A", self.served_app, "worker", "-P", pool),
            *("--concurrency", str(concurrency), "--prefetch-multiplier", str(multiplier)),
            *("-Q", QUEUE, "--without-gossip", "--without-mingle", "--without-heartbeat"),
            *("--loglevel", "WARNING", "--hostname", f"bench-{pool}@%h"),
        ]

    def lambda_path(
        self, concurrency: int = LAMBDA_CONCURRENCY, *, claims: bool = True
    ) -> tuple[Run, Run]:
        """Drain with the event-source emulator and ``handlers.sqs.handler``: (publish, drain).

        ``consume`` runs in a spawned helper process, so the forks of its pollers never copy
        this process's threads or sockets, and this process is free to watch.
        """
        label = f"lambda c={concurrency}" + ("" if claims else " no claims")
        self.redeploy()
        ids, published = self.publish()
        context = multiprocessing.get_context("spawn")
        reader, writer = context.Pipe(duplex=False)
        stop = context.Event()
        helper = context.Process(
            target=_consume_child, args=(self.source, concurrency, stop, writer, claims)
        )
        helper.start()
        writer.close()
        try:
            drained = self._measure(label, helper.is_alive)
            helper.join(self.timeout)  # its pollers stop once they too find the queue empty
            if reader.poll() and (error := reader.recv()) is not None:
                raise CeleryLambdaError(f"{label}: {error}")
        except CeleryLambdaError as exc:
            stop.set()
            helper.join(30)
            raise CeleryLambdaError(f"{exc}: {_helper_error(reader)}") from exc
        finally:
            stop.set()
            helper.join(30)
            if helper.is_alive():
                helper.terminate()
                helper.join()
            reader.close()
        self._check(ids, label)
        return published, drained

    def _measure(self, label: str, alive: Callable[[], object]) -> Run:
        """Time from the first ReceiveMessage to an empty queue; the requests in between."""
        deadline = time.monotonic() + self.timeout
        while not request_counts(self.endpoint).get("sqs:ReceiveMessage"):
            if not alive() or time.monotonic() > deadline:
                raise CeleryLambdaError(f"{label}: the consumer never received from {QUEUE}")
            time.sleep(0.01)
        started = time.perf_counter()
        checks = 0
        while True:
            time.sleep(POLL_SECONDS)
            checks += 1
            left = self._messages_left()
            if not any(left.values()):
                break
            if not alive() or time.monotonic() > deadline:
                raise CeleryLambdaError(f"{label}: {QUEUE} not drained in time, {left} left")
        seconds = time.perf_counter() - started
        counts = dict(request_counts(self.endpoint))
        counts["sqs:GetQueueAttributes"] = counts.get("sqs:GetQueueAttributes", 0) - checks
        return Run(label, self.tasks, seconds, {op: n for op, n in counts.items() if n})

    def _messages_left(self) -> dict[str, int]:
        """Messages visible, in flight and delayed."""
        attributes = aws.client("sqs").get_queue_attributes(
            QueueUrl=self.queue_url, AttributeNames=list(_QUEUE_COUNTS)
        )["Attributes"]
        return {name: int(attributes.get(name, "0")) for name in _QUEUE_COUNTS}

    def _check(self, ids: list[str], label: str) -> None:
        states = [AsyncResult(task_id, app=self.app).state for task_id in ids]
        failed = len(states) - states.count("SUCCESS")
        if failed:
            seen = {state: states.count(state) for state in sorted(set(states))}
            raise CeleryLambdaError(
                f"{label}: {failed} of {len(ids)} tasks did not succeed (states: {seen})"
            )


def _consume_child(
    source: EventSource, concurrency: int, stop: StopSignal, results: Connection, claims: bool
) -> None:
    """The helper process: consume ``source`` until it is empty or ``stop``; None or the error."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which sets stop
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    os.environ["CELERY_LAMBDA_CLAIMS"] = "on" if claims else "off"
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # the handler's CloudWatch EMF lines; on AWS they go to the log
    try:
        consume(
            [source],
            handler_from_source,
            concurrency=concurrency,
            until_empty=True,
            stop=stop,
            start_method="fork",
        )
        results.send(None)
    except Exception as exc:
        results.send(f"{type(exc).__name__}: {exc}")
    finally:
        results.close()


def _helper_error(reader: Connection) -> str:
    try:
        error = reader.recv() if reader.poll() else "the helper process ended without a word"
    except EOFError:
        error = "the helper process died"
    return str(error)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _tail(log: IO[bytes], size: int = 3000) -> str:
    log.seek(0)
    return log.read().decode(errors="replace")[-size:]


# ---------------------------------------------------------------- report


def _top(run: Run, exclude: Iterable[str] = (), limit: int = 4) -> str:
    items = list(run.per_task(exclude).items())
    shown = [f"{op} {rate:.2f}" for op, rate in items[:limit]]
    rest = sum(rate for _, rate in items[limit:])
    return ", ".join(shown) + (f", other {rest:.2f}" if rest >= 0.005 else "")


def render(workers: list[Run], lambda_run: Run, publish: Run, unclaimed: Run) -> Table:
    """The table: each worker pool, the Lambda path (function only and with event source)."""
    best = max(workers, key=lambda run: run.rate)
    table = Table(title=f"drain of {lambda_run.tasks} tasks.add on the embedded emulator")
    for column in ("path", "tasks", "seconds", "tasks/s", "x best worker", "req/task", "per task"):
        table.add_column(column, justify="left" if column in {"path", "per task"} else "right")
    rows: list[tuple[Run, str, Iterable[str]]] = [
        (run, run.path + (" (best)" if run is best else ""), ()) for run in workers
    ]
    rows += [
        (lambda_run, f"{lambda_run.path}, function only", ESM_OPERATIONS),
        (lambda_run, f"{lambda_run.path}, with event source", ()),
        (unclaimed, f"{unclaimed.path}, function only", ESM_OPERATIONS),
    ]
    for run, label, exclude in rows:
        table.add_row(
            label,
            str(run.tasks),
            f"{run.seconds:.2f}",
            f"{run.rate:.0f}",
            f"{run.rate / best.rate:.2f}",
            f"{run.requests_per_task(exclude):.2f}",
            _top(run, exclude),
        )
    table.caption = (
        f"publish (each run): {publish.rate:.0f} tasks/s, "
        f"{publish.requests_per_task():.2f} req/task ({_top(publish)})"
    )
    return table


def write_units(run: Run, claims: bool) -> float:
    """DynamoDB write units per task, estimated for items under 1 KB.

    A plain UpdateItem costs 1 WCU, as does each item of a BatchWriteItem (the emulator counts
    requests, not items: a drain that batched its outcomes is taken to have written one per
    task); a transactional update (the claim) costs 2.
    """
    updates = run.counts.get("dynamodb:UpdateItem", 0) + run.counts.get("dynamodb:PutItem", 0)
    batched = run.tasks if run.counts.get("dynamodb:BatchWriteItem", 0) else 0
    return (updates + batched + (2 * run.tasks if claims else 0)) / run.tasks


def budget_lines(workers: list[Run], lambda_run: Run, unclaimed: Run) -> list[str]:
    """DESIGN's performance budget beside the measured figures (printed, never asserted)."""
    best = max(workers, key=lambda run: run.rate)
    function_only = lambda_run.requests_per_task(ESM_OPERATIONS)
    dynamodb = {op: n for op, n in lambda_run.per_task().items() if op.startswith("dynamodb:")}
    bare = {op: n for op, n in unclaimed.per_task().items() if op.startswith("dynamodb:")}
    return [
        f"Lambda path DynamoDB requests/task: with claims {sum(dynamodb.values()):.2f} "
        f"({', '.join(f'{op} {n:.2f}' for op, n in dynamodb.items())}), "
        f"without {sum(bare.values()):.2f}; write units/task (estimated, items "
        f"< 1 KB): with claims {write_units(lambda_run, True):.1f}, "
        f"without {write_units(unclaimed, False):.1f}",
        f"budget: <= {BUDGET_REQUESTS} requests/task on the Lambda path -- measured "
        f"{function_only:.2f} function only, "
        f"{lambda_run.requests_per_task():.2f} with event source",
        f"budget: drain >= {BUDGET_SPEEDUP}x the best stock worker ({best.path}) -- measured "
        f"{lambda_run.rate / best.rate:.2f}x",
        f"reference: the stock worker makes about 3.2 requests/task -- measured "
        f"{best.requests_per_task():.2f}",
    ]


def bench_main(app: Any, tasks: int = 500, pools: Iterable[str] = tuple(POOLS)) -> None:
    """The whole benchmark: emulator up, template deployed, every consumer measured, printed.

    Raises:
        ConfigurationError: an unknown pool, fewer than one task, or an app without ``tasks.add``.
        CeleryLambdaError: a consumer failed, stalled, or left a task without SUCCESS.
    """
    pools = list(pools)
    if tasks < 1 or not pools or not set(pools) <= set(POOLS):
        raise ConfigurationError(f"bench needs tasks >= 1 and pools among {sorted(POOLS)}")
    example_tasks(app, ADD)  # before the emulator starts
    log, out = Console(stderr=True), Console(width=None if sys.stdout.isatty() else 160)
    with local_cloud() as deployment:
        bench = Bench(app, deployment, tasks)
        workers = []
        for pool in pools:
            log.print(f"stock worker, -P {pool}: publishing {tasks} tasks, draining…")
            workers.append(bench.worker(pool)[1])
        log.print(f"Lambda path, concurrency {LAMBDA_CONCURRENCY}: publishing, draining…")
        publish, lambda_run = bench.lambda_path()
        log.print("Lambda path without claims (CELERY_LAMBDA_CLAIMS=off): publishing, draining…")
        _, unclaimed = bench.lambda_path(claims=False)
    out.print(render(workers, lambda_run, publish, unclaimed))
    out.print(
        f"timed from the consumer's first ReceiveMessage to an empty queue (checked every "
        f"{POLL_SECONDS}s; those GetQueueAttributes are subtracted); "
        f"function only = without {', '.join(sorted(ESM_OPERATIONS))}"
    )
    for line in budget_lines(workers, lambda_run, unclaimed):
        out.print(line)
