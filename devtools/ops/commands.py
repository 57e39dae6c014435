"""The operator's commands: ``celery -A tasks lambda queues|inspect|dlq|stats``.

Each command resolves the deployment once (:mod:`devtools.ops.target`: the environment that
``lambda up``/``deploy-local`` export, or ``--stack NAME``'s outputs), makes its clients from
it, calls the ``ops_*`` module that does the work, and prints a rich table -- or, with
``--json``, one JSON document on stdout for scripts and tests. Failures are one line on stderr
and a non-zero exit. :func:`register` adds the commands to the ``lambda`` group.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn, TypeVar

import click
from rich.console import Console, RenderableType

from devtools.cloud.emulator import reachable
from devtools.ops.detail import view_task
from devtools.ops.queues import oldest_age_from_cloudwatch, queue_depths, queue_pairs
from devtools.ops.render import queues_table, stats_tables, task_panel, task_tree, tasks_table
from devtools.ops.target import Target, target_from_env, target_from_stack
from devtools.ops.tasks import TaskQuery, TaskRow, parse_duration, query_tasks, read_item
from infra.core import aws
from infra.core.errors import CeleryLambdaError
from infra.core.settings import Settings

__all__ = ["register"]

F = TypeVar("F", bound=Callable[..., Any])
NO_AGE = "n/a on an emulator (CloudWatch's ApproximateAgeOfOldestMessage exists on AWS only)"
NO_DURATIONS = "n/a on an emulator (the consumers' TaskDuration metric is in CloudWatch on AWS)"


def _fail(message: str) -> NoReturn:
    """One clear line on stderr and a non-zero exit (as ``devtools.cli`` does)."""
    raise click.ClickException(message)


def _note(message: str) -> None:
    """A line for the human on stderr, out of the way of ``--json`` on stdout."""
    Console(stderr=True).print(message)


def _show(renderable: RenderableType) -> None:
    Console().print(renderable)


def _emit(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=repr))


def _duration(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    """``--since``: ``90s``, ``15m``, ``1h30m``, ``2d``, ``1w`` as seconds."""
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


def deployment_options(command: F) -> F:
    """``--stack`` and ``--json``, shared by every operator's command."""
    command = click.option(
        "--stack",
        metavar="NAME",
        default=None,
        help="Read queue and table names from this CloudFormation stack's outputs "
        "(default: the environment `lambda up`/`deploy-local` export).",
    )(command)
    return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(command)


def resolve(stack: str | None) -> Target:
    """The deployment to look at; fails with one line when it cannot be found or reached."""
    try:
        if stack:
            cloudformation = aws.client("cloudformation", Settings.from_env())
            target = target_from_stack(stack, cloudformation)
        else:
            target = target_from_env()
    except CeleryLambdaError as exc:
        _fail(str(exc))
    endpoint = target.settings.endpoint_url
    if endpoint and not reachable(endpoint):
        _fail(
            f"nothing answers at AWS_ENDPOINT_URL={endpoint}: "
            "is `celery -A tasks lambda up` running?"
        )
    return target


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
        _fail(str(exc))
    if as_json:
        _emit({"queues": [d.as_json() for d in depths], "age_source": source})
    else:
        _show(queues_table(depths, source))


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
    """Tasks from the result store, newest first; with TASK_ID, one task and its workflow."""
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
        _fail(str(exc))
    if as_json:
        _emit({"tasks": [row.as_json() for row in rows]})
    elif rows:
        _show(tasks_table(rows))
    else:
        _note(f"no task in {table} matches")


def _inspect_one(app: Any, target: Target, task_id: str, as_json: bool) -> None:
    dynamodb, table = aws.client("dynamodb", target.settings), target.settings.results_table

    def read(id_: str) -> tuple[TaskRow, Any, dict[str, Any]] | None:
        return read_item(dynamodb, table, id_, app.backend.decode_result)

    try:
        view = view_task(task_id, read)
    except CeleryLambdaError as exc:
        _fail(str(exc))
    if view is None:
        _fail(f"no task {task_id} in {table} (unknown id, or its result expired)")
    if as_json:
        _emit(view.as_json())
        return
    _show(task_panel(view.detail, view.parent))
    if view.tree.children:
        _show(task_tree(view.tree))


# ---------------------------------------------------------------- stats


@click.command("stats")
@click.option("--since", callback=_duration, default="1h", show_default=True)
@deployment_options
def stats(since: int, stack: str | None, as_json: bool) -> None:
    """Counts by state and by task from the result store; p50/p95 durations on AWS."""
    # ops_stats reads the metric names of infra.core.observability, which imports Powertools: only
    # `lambda stats` pays for that import.
    from devtools.ops.stats import durations_from_cloudwatch, store_rows, summarize

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
        _fail(str(exc))
    if as_json:
        _emit(summary.as_json())
    elif rows:
        _show(stats_tables(summary))
    else:
        _note(f"no task written to {target.settings.results_table} in the last {since} s")


def register(group: click.Group) -> None:
    """Add the operator's commands to ``group`` (the ``lambda`` group)."""
    from devtools.ops.dlq_commands import dlq  # here: it imports this module's helpers

    for command in (queues, inspect_command, dlq, stats):
        group.add_command(command)
