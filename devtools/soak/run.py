"""``celery -A tasks lambda soak --tasks N``: both consumers on one queue, killed and faulted.

On the embedded emulator (or the one ``AWS_ENDPOINT_URL`` names) the soak runs the event-source
emulator with two pollers and a stock ``celery worker`` on the same queue, both serving the
soak's app (:mod:`devtools.soak.app`), both talking to AWS through the fault proxy
(:mod:`devtools.soak.proxy`), which answers a share of the DynamoDB and SQS requests with
throttling and 500 errors. It publishes N ``soak.record`` tasks in rounds (directly to the
emulator: the publisher is not under test), SIGKILLs a consumer chosen at random at random
intervals and restarts it, and stops once every task has left the queue. Then the ledger, the
results table and the DLQ are compared (:func:`devtools.soak.ledger.tally`).

Two settings are shortened so the soak sees a killed consumer's messages again within minutes:
the queue's visibility timeout and the Lambda function's timeout (which bounds its claims'
lease), both written to the emulator only for this run. One ``random.Random(seed)`` draws the
kill schedule and another the proxy's faults.
"""

from __future__ import annotations

import dataclasses
import os
import random
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from celery import group
from rich.console import Console

from devtools.cloud.deploy import Deployment, deploy
from devtools.cloud.session import local_cloud, local_settings, point_app_at
from devtools.ops.dlq import peeked, read_letter
from devtools.ops.queues import queue_pairs, waiting
from devtools.soak import app as soak_app
from devtools.soak.consumers import Consumer, lambda_command, worker_command
from devtools.soak.ledger import Kill, Tally, read, tally
from devtools.soak.proxy import FaultPlan, FaultProxy
from infra.core import aws
from infra.core.settings import Settings

__all__ = ["QUEUE", "Soak", "SoakOptions", "report", "soak_main"]

QUEUE: Final = "celery"
FUNCTION_TIMEOUT: Final = 12
"""The Lambda function's timeout in the soak, which bounds its claims' lease: the handler keeps
5 s of it for itself (``infra.consumer.pipeline.SAFETY_MARGIN_SECONDS``) and a restarted
consumer's first invocation pays its cold start."""
VISIBILITY_SECONDS: Final = max(soak_app.LEASE_SECONDS, FUNCTION_TIMEOUT) + 4
"""The soak queue's visibility timeout: past both consumers' claim leases, so a message a killed
consumer held comes back to a claim that has ended."""
ROUND: Final = 50
"""Tasks published at a time (one batched group), while fewer than :data:`BACKLOG` wait."""
BACKLOG: Final = 200
"""moto's SQS slows as a queue grows: the soak keeps it this shallow."""
TICK: Final = 0.25
RESTART_SECONDS: Final = 1.0
"""How long a consumer that exited by itself stays down before it is restarted."""


@dataclass(frozen=True, slots=True)
class SoakOptions:
    """What a soak does: tasks, seeds, the fault rate, the mean seconds between kills."""

    tasks: int = 3000
    seed: int = 1
    fault_rate: float = 0.05
    kill_every: float = 6.0
    pause: float = 0.02
    """Seconds each task waits after its effect, before its outcome is recorded."""
    min_kills: int = 0
    """Kills to make before the soak may end, even once the queue is empty."""
    timeout: float | None = None
    """Seconds before the soak gives up (default: 300 + 1 s per task: on a loaded 2-core machine
    a soak with kills every 6 s drains about 2 tasks/s)."""

    @property
    def deadline_seconds(self) -> float:
        """How long the soak may run."""
        return self.timeout if self.timeout is not None else 300 + 1.0 * self.tasks


@dataclass(slots=True)
class Soak:
    """What a soak saw: ids published, kills made, the proxy's summary, where the logs are, and
    the tally at the end."""

    published: list[str] = dataclasses.field(default_factory=list)
    kills: list[Kill] = dataclasses.field(default_factory=list)
    faults: str = ""
    log_dir: Path = Path()
    timed_out: bool = False
    tally: Tally | None = None

    @property
    def failed(self) -> bool:
        """True when a task was lost or the soak gave up before the queue was empty."""
        return self.timed_out or self.tally is None or bool(self.tally.lost)


@contextmanager
def _cloud() -> Iterator[Deployment]:
    """The emulator ``AWS_ENDPOINT_URL`` names, or an embedded one started for the soak."""
    if os.environ.get("AWS_ENDPOINT_URL"):
        local_settings()  # fails clearly when nothing answers there
        yield deploy()
        return
    with local_cloud() as deployment:
        yield deployment


def _shorten(deployment: Deployment, settings: Settings) -> Any:
    """Shorten the queue's visibility timeout; the queue's event source with the soak's
    function timeout."""
    url = settings.queue_urls[QUEUE]
    aws.client("sqs").set_queue_attributes(
        QueueUrl=url, Attributes={"VisibilityTimeout": str(VISIBILITY_SECONDS)}
    )
    source = next(s for s in deployment.event_sources if s.queue_url == url)
    return dataclasses.replace(source, timeout=FUNCTION_TIMEOUT)


def _consumers(
    deployment: Deployment, settings: Settings, proxy: FaultProxy, log_dir: Path
) -> list[Consumer]:
    env = {
        **os.environ,
        **deployment.environment,
        "AWS_ENDPOINT_URL": proxy.endpoint_url,
        "CELERY_APP": soak_app.APP,
        soak_app.LEDGER_ENV: str(log_dir / "ledger"),
        "POWERTOOLS_LOG_LEVEL": "WARNING",
    }
    source = _shorten(deployment, settings)
    return [
        Consumer("lambda", lambda_command(source), env, log_dir),
        Consumer("worker", worker_command(QUEUE, "soak"), env, log_dir),
    ]


def _publish(count: int, pause: float) -> list[str]:
    """Publish ``count`` tasks as one batched group; their ids."""
    result = group(soak_app.record.s(pause) for _ in range(count)).apply_async()
    return [child.id for child in result.results]


def _drive(options: SoakOptions, consumers: Sequence[Consumer], url: str, run: Soak) -> None:
    """Publish in rounds, kill and restart consumers, until every task has left the queue."""
    chooser = random.Random(options.seed)
    sqs = aws.client("sqs")
    deadline = time.monotonic() + options.deadline_seconds
    next_kill = time.monotonic() + chooser.uniform(0.5, 1.5) * options.kill_every
    restart_at: dict[str, float] = {}
    for consumer in consumers:
        consumer.start()
    while time.monotonic() < deadline:
        left = waiting(sqs, url)
        if len(run.published) < options.tasks and left < BACKLOG:
            count = min(ROUND, options.tasks - len(run.published))
            run.published.extend(_publish(count, options.pause))
            continue
        killed = sum(k.cause == "SIGKILL" for k in run.kills)
        if len(run.published) == options.tasks and left == 0 and killed >= options.min_kills:
            return
        if options.kill_every > 0 and time.monotonic() >= next_kill:
            victim = chooser.choice(consumers)
            if victim.started:
                run.kills.append(victim.kill())
                victim.start()
            next_kill = time.monotonic() + chooser.uniform(0.5, 1.5) * options.kill_every
        for consumer in consumers:
            if consumer.started and not consumer.alive():  # a finding, reported with the kills
                run.kills.append(consumer.exited())
                restart_at[consumer.kind] = time.monotonic() + RESTART_SECONDS
            if not consumer.started and time.monotonic() >= restart_at.get(consumer.kind, 0):
                consumer.start()  # as a supervisor (ECS, systemd) would
        time.sleep(TICK)
    run.timed_out = True


def _dead_letters(settings: Settings) -> set[str]:
    """Task ids in the dead-letter queue of :data:`QUEUE`."""
    sqs = aws.client("sqs")
    pair = next(p for p in queue_pairs(sqs, settings) if p.name == QUEUE)
    if pair.dlq_url is None:
        return set()
    with peeked(sqs, pair.dlq_url) as messages:
        letters = [read_letter(m, pair.dlq_url, ["json"]) for m in messages]
    return {letter.task.task_id for letter in letters if letter.task is not None}


def _succeeded(ids: Sequence[str]) -> set[str]:
    """The ids whose result in the table is SUCCESS."""
    backend = soak_app.app.backend
    done: set[str] = set()
    for start in range(0, len(ids), 100):
        chunk = ids[start : start + 100]
        payloads = backend.mget([backend.get_key_for_task(i) for i in chunk])
        for task_id, payload in zip(chunk, payloads, strict=True):
            if payload is not None and backend.decode_result(payload)["status"] == "SUCCESS":
                done.add(task_id)
    return done


def soak_main(options: SoakOptions, console: Console | None = None) -> Soak:
    """Run the soak; print each run-twice and the ledger line; what it saw, tallied.

    Raises:
        ConfigurationError: no emulator answers at ``AWS_ENDPOINT_URL``.
    """
    console = console or Console(stderr=True)
    log_dir = Path(tempfile.mkdtemp(prefix="celery-lambda-soak-"))
    run = Soak(log_dir=log_dir)
    with _cloud() as deployment:
        point_app_at(soak_app.app, deployment)
        settings = Settings.from_env()
        plan = FaultPlan(options.fault_rate, options.seed)
        with FaultProxy(deployment.endpoint_url or "", plan) as proxy:
            consumers = _consumers(deployment, settings, proxy, log_dir)
            try:
                _drive(options, consumers, settings.queue_urls[QUEUE], run)
            finally:
                for consumer in consumers:
                    consumer.stop()
            run.faults = proxy.summary()
        run.tally = tally(
            run.published,
            read(log_dir / "ledger"),
            _succeeded(run.published),
            _dead_letters(settings),
            run.kills,
        )
    report(run.tally, run, console)
    return run


def report(result: Tally, run: Soak, console: Console) -> None:
    """The run-twice reasons, the kills and faults, then the ledger line on stdout."""
    for twice in result.twice:
        console.print(f"ran twice {twice.task_id}: {twice.reason}", markup=False, soft_wrap=True)
    for task_id in result.lost:
        console.print(f"lost {task_id}", markup=False, soft_wrap=True)
    for task_id in result.unrecorded:
        console.print(f"unrecorded {task_id}: ran, no outcome, not in the DLQ", soft_wrap=True)
    killed = [k.consumer for k in run.kills if k.cause == "SIGKILL"]
    console.print(
        f"kills: {len(killed)} ({', '.join(killed) or 'none'}); {run.faults}", soft_wrap=True
    )
    crashes = Counter(
        (k.consumer.partition("#")[0], k.cause) for k in run.kills if k.cause != "SIGKILL"
    )
    for (kind, cause), times in sorted(crashes.items()):
        console.print(f"exited by itself: {kind} {times}x: {cause}", markup=False, soft_wrap=True)
    if run.timed_out:
        console.print(
            f"timed out after publishing {len(run.published)} of the tasks: 'lost' and "
            "'unrecorded' above include tasks still queued or in flight",
            soft_wrap=True,
        )
    console.print(f"ledger and consumer logs: {run.log_dir}", markup=False, soft_wrap=True)
    print(result.line(), flush=True)
