"""``celery -A tasks lambda demo``: the brief's examples, published with plain ``apply_async``
and consumed through the Lambda path (event-source emulator + ``handlers.sqs.handler``), plus one
tick of the app's ``beat_schedule`` as the scheduled function runs it (:mod:`infra.beat.runtime`).

The tasks are the app's own, found by name (:mod:`devtools.examples`): the app comes from ``-A``.
"""

from __future__ import annotations

import contextlib
import io
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from celery import chain, chord, group
from celery.result import AsyncResult, GroupResult, ResultBase
from rich.console import Console
from rich.table import Table

from devtools.cloud import snapshot
from devtools.cloud.deploy import Deployment
from devtools.cloud.event_source import consume, handler_from_source
from devtools.cloud.session import local_cloud, point_app_at
from devtools.cloud.targets import DEFAULT_TARGET
from devtools.examples import (
    ADD,
    ALWAYS_FAILS,
    CREATE_USER,
    ERROR_HANDLER,
    FLAKY,
    UPLOAD_FILES,
    XSUM,
    example_tasks,
)
from infra.beat.runtime import DEADLINE_MARGIN_SECONDS, beat_for_app
from infra.core.errors import ScheduleError
from infra.core.observability import logger
from infra.core.settings import Settings

__all__ = ["Scenario", "beat_tick", "demo_main", "run_demo", "scenarios"]


@dataclass(frozen=True, slots=True)
class Scenario:
    """One example: a label and how to publish it."""

    label: str
    publish: Callable[[], ResultBase]


def scenarios(app: Any) -> list[Scenario]:
    """The brief's examples (plus a chord), each published with stock Celery calls.

    Raises:
        ConfigurationError: the app registers not every example task.
    """
    tasks = example_tasks(
        app, ADD, XSUM, ALWAYS_FAILS, ERROR_HANDLER, UPLOAD_FILES, FLAKY, CREATE_USER
    )
    add, xsum, error_handler = tasks[ADD], tasks[XSUM], tasks[ERROR_HANDLER]
    always_fails, upload_files = tasks[ALWAYS_FAILS], tasks[UPLOAD_FILES]
    flaky, create_user = tasks[FLAKY], tasks[CREATE_USER]
    return [
        Scenario("add.delay(4, 4)", lambda: add.delay(4, 4)),
        Scenario("link=add.s(16)", lambda: add.apply_async((2, 2), link=add.s(16))),
        Scenario("chain", lambda: chain(add.s(2, 2), add.s(4), add.s(8)).apply_async()),
        Scenario("group", lambda: group(add.s(i, i) for i in range(5)).apply_async()),
        Scenario("chord", lambda: chord((add.s(i, i) for i in range(4)), xsum.s()).apply_async()),
        Scenario("countdown=3", lambda: add.apply_async((5, 5), countdown=3)),
        Scenario(
            "link_error=error_handler.s()",
            lambda: always_fails.apply_async((1, 2), link_error=error_handler.s()),
        ),
        Scenario("upload_files (PROGRESS)", lambda: upload_files.delay(["a.txt", "b.txt"])),
        Scenario("retry with backoff", lambda: flaky.apply_async(kwargs={"failures": 2})),
        Scenario("create_new_user", lambda: create_user.delay("demo-user", "correct horse")),
    ]


def beat_tick(app: Any, deployment: Deployment) -> list[tuple[str, AsyncResult]]:
    """One tick of the app's beat per schedule of the template, with the scheduled function's
    deadline, as EventBridge invokes it; what it published, by entry.

    Raises:
        ConfigurationError: an entry of ``beat_schedule`` names no task or schedule.
        ScheduleError: some slot could not be published.
    """
    beat = beat_for_app(app, Settings.from_env())
    fired = []
    for source in deployment.schedules:
        report = beat.tick(deadline=time.time() + source.timeout - DEADLINE_MARGIN_SECONDS)
        if report.failed:
            names = ", ".join(sorted({f.entry for f in report.failed}))
            raise ScheduleError(f"{len(report.failed)} scheduled slot(s) not published: {names}")
        fired += [(f"beat: {f.entry}", AsyncResult(f.task_id, app=app)) for f in report.fired]
    return fired


def _describe(result: ResultBase) -> tuple[str, str, str]:
    """(id, state, result) of a result, following links to the last task that ran."""
    if isinstance(result, GroupResult):
        states = {r.state for r in result.results}
        return result.id or "", "/".join(sorted(states)), repr([r.result for r in result.results])
    assert isinstance(result, AsyncResult)
    while result.children:
        result = result.children[-1]
        if isinstance(result, GroupResult):
            return _describe(result)
    return result.id, result.state, repr(result.result)


def _wait(results: list[ResultBase], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for result in results:
        with contextlib.suppress(Exception):  # the table shows whatever state it reached
            result.get(timeout=max(deadline - time.monotonic(), 0.1), propagate=False)


def drain(deployment: Deployment) -> tuple[int, int]:
    """Consume every event source in this thread until a whole round finds nothing.

    In-process (not the emulator's process per source) so the handler runs in the main thread,
    where time limits work, and its output can be captured.
    """
    batches = records = 0
    while True:
        found = 0
        for source in deployment.event_sources:
            stats = consume([source], handler_from_source, until_empty=True, wait_seconds=1)
            batches, records, found = (
                batches + stats.batches,
                records + stats.records,
                found + stats.records,
            )
        if not found:
            return batches, records


FAILS_ON_PURPOSE = (
    "one example fails on purpose: link_error=error_handler.s() publishes tasks.always_fails, "
    "which raises KeyError(1); the error lines it prints are expected, and error_handler then "
    "reads that failure from the result store"
)
DEMO_LOG = Path(".celery-lambda") / "demo-lambda.log"
"""Where the demo writes the handler's log lines."""
KEEP_EXPLORING = """\
The demo's emulator stopped with it. To keep exploring:
  celery -A tasks lambda up       # emulator + consumer, the demo's tasks in it
  source .celery-lambda/env.sh    # in another shell: what up exported
  python -c "from tasks import add; print(add.delay(4, 4).get())"
  celery -A tasks lambda queues   # then: inspect [ID], dlq, stats, schedule
  celery -A tasks lambda dashboard  # the web UI: open the URL it prints"""


def run_demo(app: Any, deployment: Deployment, console: Console) -> Table:
    """Publish every scenario, drain the queues through the Lambda path, tabulate the outcome."""
    point_app_at(app, deployment)
    published: list[tuple[str, ResultBase]] = [(s.label, s.publish()) for s in scenarios(app)]
    scheduled = beat_tick(app, deployment)
    published += scheduled
    console.print(
        f"published {len(published) - len(scheduled)} examples and {len(scheduled)} scheduled "
        "task(s) from one beat tick; consuming through the Lambda handler…"
    )
    console.print(FAILS_ON_PURPOSE)
    emf = io.StringIO()
    with contextlib.redirect_stdout(emf):
        batches, records = drain(deployment)
    _wait([r for _, r in published], timeout=30)
    metric_lines = sum(1 for line in emf.getvalue().splitlines() if '"_aws"' in line)
    console.print(f"{metric_lines} CloudWatch EMF metric lines written by the handler")
    table = Table(title=f"Lambda path: {batches} batches, {records} records")
    for column in ("example", "task id", "state", "result"):
        table.add_column(column, overflow="fold")
    for label, result in published:
        task_id, state, value = _describe(result)
        style = {"SUCCESS": "green", "FAILURE": "red"}.get(state, "yellow")
        table.add_row(label, task_id[:8], f"[{style}]{state}[/]", _brief(value))
    return table


def _brief(value: str, limit: int = 120) -> str:
    """A result's repr for the table: whole when short, else cut with an ellipsis (the table
    folds long cells instead of cutting them at the terminal's width)."""
    return value if len(value) <= limit else value[: limit - 1] + "…"


def demo_main(app: Any, target: str = DEFAULT_TARGET) -> None:
    """The whole demo: emulator up (or LocalStack found), template deployed, examples run."""
    console = Console()
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "INFO")
    # The handler's logger exists already (importing the app made it): apply the level to it.
    logger.setLevel(os.environ["POWERTOOLS_LOG_LEVEL"])
    DEMO_LOG.parent.mkdir(parents=True, exist_ok=True)
    with DEMO_LOG.open("w") as log, _handler_logs_to(log), local_cloud(target=target) as cloud:
        console.print(f"{target} at {cloud.endpoint_url}, template deployed")
        console.print(run_demo(app, cloud, console))
        kept = snapshot.save(Settings.from_env())
    console.print(f"the handler's log, as CloudWatch would get it: {DEMO_LOG}")
    console.print(f"{kept} results kept in {snapshot.SNAPSHOT} for `lambda up`")
    console.print(KEEP_EXPLORING)


@contextlib.contextmanager
def _handler_logs_to(stream: IO[str]) -> Iterator[None]:
    """The handler's log lines (Powertools' JSON, on stdout on Lambda) go to ``stream``: the
    demo's terminal shows its table, not a traceback of the failure it makes on purpose."""
    handler = logger.registered_handler
    previous = handler.setStream(stream)  # type: ignore[attr-defined]
    try:
        yield
    finally:
        handler.setStream(previous)  # type: ignore[attr-defined]
