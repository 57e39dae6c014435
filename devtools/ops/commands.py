"""The operator's commands: ``celery -A tasks lambda queues|inspect|dlq|stats``.

Each command resolves the deployment once (:mod:`devtools.ops.options`: the environment that
``lambda up``/``deploy-local`` export, or ``--stack NAME``'s outputs), makes its clients from
it, calls the ``devtools.ops`` module that does the work, and prints a rich table -- or, with
``--json``, one JSON document on stdout for scripts and tests (:mod:`devtools.ops.output`).
Failures are one line on stderr and a non-zero exit. ``dlq`` and its subcommands are in
:mod:`devtools.ops.dlq_commands`; the ``lambda`` group (:mod:`devtools.cli`) loads each when used.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import click

from devtools.ops.detail import view_task
from devtools.ops.ids import resolve_task_id
from devtools.ops.options import deployment_options, resolve
from devtools.ops.output import emit, fail, note, show
from devtools.ops.queues import oldest_age_from_cloudwatch, queue_depths, queue_pairs
from devtools.ops.render import queues_table, stats_tables, task_panel, task_tree, tasks_table
from devtools.ops.target import Target
from devtools.ops.tasks import TaskQuery, TaskRow, parse_duration, query_tasks, read_item
from infra.core import aws
from infra.core.errors import CeleryLambdaError

__all__ = ["inspect_command", "queues", "stats"]

NO_AGE = "n/a on an emulator (CloudWatch's ApproximateAgeOfOldestMessage exists on AWS only)"
NO_DURATIONS = "n/a on an emulator (the consumers' TaskDuration metric is in CloudWatch on AWS)"


def _duration(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    """``--since``: ``90s``, ``15m``, ``1h30m``, ``2d``, ``1w`` as seconds."""
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


def _now() -> datetime:
    return datetime.now(UTC)


# ---------------------------------------------------------------- queues


@click.command("queues")
@deployment_options
def queues(stack: str | None, as_json: bool) -> None:
    """Each queue and its DLQ: messages visible, in flight, delayed; age of the oldest."""
    target = resolve(stack)
    sqs = aws.client("sqs", target.settings)
    if target.on_aws:
        age = oldest_age_from_cloudwatch(aws.client("cloudwatch", target.settings), _now)
        source = "CloudWatch ApproximateAgeOfOldestMessage, latest minute"
    else:
        age, source = (lambda name: None), NO_AGE
    try:
        depths = queue_depths(sqs, queue_pairs(sqs, target.settings), age)
    except CeleryLambdaError as exc:
        fail(str(exc))
    if as_json:
        emit({"queues": [d.as_json() for d in depths], "age_source": source})
    else:
        show(queues_table(depths, source))


# ---------------------------------------------------------------- inspect


@click.command("inspect")
@click.argument("task_id", required=False)
@click.option("--state", default=None, help="Only tasks in this state (SUCCESS, FAILURE, ...).")
@click.option("--task", "task_name", default=None, help="Only this task name.")
@click.option("--since", callback=_duration, help="Only tasks written since: 90s, 30m, 1h, 2d…")
@click.option("--limit", type=click.IntRange(1, 10_000), default=20, show_default=True)
@deployment_options
@click.pass_context
def inspect_command(
    ctx: click.Context,
    task_id: str | None,
    state: str | None,
    task_name: str | None,
    since: int | None,
    limit: int,
    stack: str | None,
    as_json: bool,
) -> None:
    """Tasks from the result store, newest first; with TASK_ID, one task and its workflow.

    TASK_ID may be the first characters of an id (as the tables show it), if no other task's id
    starts with them; an ambiguous one lists the ids it matches.
    """
    target = resolve(stack)
    if task_id:
        _inspect_one(ctx.obj.app, target, task_id, as_json)
        return
    query = TaskQuery(
        state=state.upper() if state else None,
        task_name=task_name,
        since=time.time() - since if since is not None else None,
        limit=limit,
    )
    table = target.settings.results_table
    try:
        rows = query_tasks(aws.client("dynamodb", target.settings), table, query)
    except CeleryLambdaError as exc:
        fail(str(exc))
    if as_json:
        emit({"tasks": [row.as_json() for row in rows]})
    elif rows:
        show(tasks_table(rows))
    else:
        note(f"no task in {table} matches")


def _inspect_one(app: Any, target: Target, text: str, as_json: bool) -> None:
    """One task by its id or the start of it (:func:`devtools.ops.ids.resolve_task_id`)."""
    dynamodb, table = aws.client("dynamodb", target.settings), target.settings.results_table
    items: dict[str, tuple[TaskRow, Any, dict[str, Any]] | None] = {}

    def read(id_: str) -> tuple[TaskRow, Any, dict[str, Any]] | None:
        """Each item read once (the task heads its own tree)."""
        if id_ not in items:
            items[id_] = read_item(dynamodb, table, id_, app.backend.decode_result)
        return items[id_]

    try:
        task_id = resolve_task_id(dynamodb, table, text)
        view = view_task(task_id, read)
    except CeleryLambdaError as exc:
        fail(str(exc))
    if view is None:
        fail(f"no task {task_id} in {table} (unknown id, or its result expired)")
    if as_json:
        emit(view.as_json())
        return
    show(task_panel(view.detail, view.parent))
    if view.tree.children:
        show(task_tree(view.tree))


# ---------------------------------------------------------------- stats


@click.command("stats")
@click.option("--since", callback=_duration, default="1h", show_default=True)
@deployment_options
def stats(since: int, stack: str | None, as_json: bool) -> None:
    """Counts by state and by task from the result store; p50/p95 durations on AWS."""
    # devtools.ops.stats reads the metric names of infra.core.observability, which imports
    # Powertools (0.17 s): only `lambda stats` pays for it, not every `celery` command.
    from devtools.ops.stats import durations_from_cloudwatch, store_rows, summarize  # CLI start-up

    target = resolve(stack)
    end = _now()
    start = end - timedelta(seconds=since)
    durations, source = None, NO_DURATIONS
    if target.on_aws:
        cloudwatch = aws.client("cloudwatch", target.settings)
        durations = durations_from_cloudwatch(cloudwatch, start, end)
        source = "CloudWatch TaskDuration p50/p95 over the window"
    try:
        dynamodb = aws.client("dynamodb", target.settings)
        rows = store_rows(dynamodb, target.settings.results_table, start.timestamp())
        summary = summarize(rows, start.timestamp(), durations, source)
    except CeleryLambdaError as exc:
        fail(str(exc))
    if as_json:
        emit(summary.as_json())
    elif rows:
        show(stats_tables(summary))
    else:
        note(f"no task written to {target.settings.results_table} in the last {since} s")
