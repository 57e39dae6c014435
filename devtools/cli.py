"""``celery -A <app> lambda ...``: the local cloud and the operator's commands.

Installed as a Celery CLI plugin (entry point group ``celery.commands``), so it runs with the app
that ``-A`` names (``ctx.obj.app``), like every other ``celery`` subcommand. Each command here
parses its options, calls the module that does the work and prints; the operator's commands
(``queues``, ``inspect``, ``dlq``, ``stats``) are declared in :mod:`devtools.ops.commands`.

Celery imports every plugin when any ``celery`` command starts (``celery worker`` too), so what
this module imports is paid by all of them: the slow imports (Powertools for ``demo`` and
``stats``, aws-sam-translator for a deploy) wait until a command needs them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

import click
from rich.console import Console

from devtools.bench.drain import POOLS, bench_main
from devtools.bench.imports import bench_import_main
from devtools.bench.publish import bench_publish_main
from devtools.checks.doctor import doctor_main
from devtools.cloud.deploy import DEFAULT_STACK, deploy
from devtools.cloud.event_source import consume, handler_from_source, stop_on_signals
from devtools.cloud.session import local_cloud, local_settings, write_env_file
from devtools.cloud.targets import DEFAULT_TARGET, TARGETS
from devtools.ops.commands import COMMANDS
from devtools.ops.schedule import schedule_main
from infra.core.errors import CeleryLambdaError, ConfigurationError
from infra.core.settings import Settings
from infra.store.revoke import revoke

__all__ = ["lambda_"]

console = Console(stderr=True)

target_option = click.option(
    "--target",
    type=click.Choice(TARGETS),
    default=DEFAULT_TARGET,
    show_default=True,
    help="moto: the embedded emulator; localstack: a running LocalStack (LOCALSTACK_HOST).",
)
"""The ``--target`` option every local-cloud command shares."""


def _fail(message: str) -> NoReturn:
    """One clear line on stderr and a non-zero exit."""
    raise click.ClickException(message)


@click.group(name="lambda")
@click.pass_context
def lambda_(ctx: click.Context) -> None:
    """Run this Celery app on AWS Lambda: local cloud, consumer, operations."""


for _command in COMMANDS:
    lambda_.add_command(_command)


def _settings(target: str) -> Settings:
    """The local settings (:func:`devtools.cloud.session.local_settings`), or one clear line and
    a non-zero exit."""
    try:
        return local_settings(target)
    except ConfigurationError as exc:
        _fail(str(exc))


@lambda_.command("deploy-local")
@click.option("--stack-name", default=DEFAULT_STACK, show_default=True)
@click.option(
    "--template",
    "template_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="SAM template to deploy (default: the project's template.yaml).",
)
@target_option
def deploy_local(stack_name: str, template_path: Path | None, target: str) -> None:
    """Create the template's queues, tables and bucket on AWS_ENDPOINT_URL; print the exports."""
    settings = _settings(target)
    try:
        deployment = deploy(settings, stack_name=stack_name, template_path=template_path)
    except CeleryLambdaError as exc:
        _fail(str(exc))
    click.echo(deployment.exports())


@lambda_.command()
@click.option("--port", type=int, default=None, help="Port for the emulator (default: a free one).")
@click.option("--stack-name", default=DEFAULT_STACK, show_default=True)
@click.option(
    "--consume/--no-consume", "consuming", default=True, help="Run the event-source emulator too."
)
@click.option("--concurrency", type=int, default=1, show_default=True)
@target_option
def up(port: int | None, stack_name: str, consuming: bool, concurrency: int, target: str) -> None:
    """Start the embedded emulator, deploy the template, consume through the Lambda handler."""
    try:
        with local_cloud(port, stack_name, target) as deployment:
            env_file = write_env_file(deployment)
            os.environ.update(deployment.environment)
            click.echo(deployment.exports())
            console.print(
                f"[green]emulator up[/] at {deployment.endpoint_url}; in another shell run\n"
                f"  [bold]source {env_file}[/]\n"
                "then publish tasks (and/or run `celery -A tasks worker --loglevel=info`). "
                "Ctrl-C stops."
            )
            stop = stop_on_signals()
            if consuming:
                consume(
                    deployment.event_sources,
                    handler_from_source,
                    concurrency=concurrency,
                    stop=stop,
                )
            else:
                stop.wait()
    except ConfigurationError as exc:
        _fail(str(exc))


@lambda_.command("consume")
@click.option("--until-empty", is_flag=True, help="Stop once every queue is empty.")
@click.option("--concurrency", type=int, default=1, show_default=True, help="Pollers per queue.")
@click.option(
    "--failed-visibility",
    type=int,
    default=None,
    help="Seconds before a failed record comes back (default: the queue's visibility timeout).",
)
@click.option("--stack-name", default=DEFAULT_STACK, show_default=True)
@target_option
def consume_command(
    until_empty: bool,
    concurrency: int,
    failed_visibility: int | None,
    stack_name: str,
    target: str,
) -> None:
    """Play the SQS event source mapping: poll the template's queues, invoke the handler."""
    settings = _settings(target)
    try:
        deployment = deploy(settings, stack_name=stack_name)
        stats = consume(
            deployment.event_sources,
            handler_from_source,
            concurrency=concurrency,
            until_empty=until_empty,
            failed_visibility=failed_visibility,
            stop=stop_on_signals(),
        )
    except CeleryLambdaError as exc:
        _fail(str(exc))
    console.print(f"{stats.batches} batches, {stats.records} records, {stats.failures} failed")


@lambda_.command()
@target_option
@click.pass_context
def demo(ctx: click.Context, target: str) -> None:
    """Start the emulator, publish the brief's examples, run them through the Lambda path."""
    # Here, not at the top: the demo imports the handler's Powertools, which would otherwise be
    # paid by every `celery` command (Celery loads its plugins for `celery worker` too).
    from devtools.demo import demo_main

    try:
        demo_main(ctx.obj.app, target=target)
    except ConfigurationError as exc:
        _fail(str(exc))


@lambda_.command()
@click.option("--tasks", "count", type=click.IntRange(min=1), default=500, show_default=True)
@click.option(
    "--pool",
    "pools",
    multiple=True,
    type=click.Choice(["prefork", "threads", "solo"]),
    help="Stock worker pool to measure; repeatable (default: all three, the fastest compared).",
)
@click.pass_context
def bench(ctx: click.Context, count: int, pools: tuple[str, ...]) -> None:
    """Drain N tasks.add with a stock worker and the Lambda path: tasks/s, requests per task."""
    try:
        bench_main(ctx.obj.app, tasks=count, pools=pools or tuple(POOLS))
    except CeleryLambdaError as exc:
        _fail(str(exc))


@lambda_.command("bench-publish")
@click.option("--tasks", "count", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option(
    "--round",
    "round_size",
    type=click.IntRange(min=1),
    default=None,
    help="Publish this many at a time (a group each), the queue purged between (default: all).",
)
@click.pass_context
def bench_publish(ctx: click.Context, count: int, round_size: int | None) -> None:
    """Publish N tasks.add as a batched group, an unbatched group and a loop: tasks/s, requests."""
    try:
        bench_publish_main(ctx.obj.app, tasks=count, round_size=round_size)
    except CeleryLambdaError as exc:
        _fail(str(exc))


@lambda_.command("doctor")
@click.pass_context
def doctor(ctx: click.Context) -> None:
    """Check template.yaml against the app: consumers, visibility, DLQs, IAM, time limits."""
    try:
        status = doctor_main(ctx.obj.app)
    except CeleryLambdaError as exc:
        _fail(str(exc))
    ctx.exit(status)


@lambda_.command("bench-import")
@click.option("--runs", type=click.IntRange(min=1), default=7, show_default=True)
def bench_import(runs: int) -> None:
    """Cold import of handlers.sqs against the bare import of its dependencies (median)."""
    bench_import_main(runs)


@lambda_.command("schedule")
@click.option("--count", type=click.IntRange(min=1), default=3, show_default=True)
@click.pass_context
def schedule_command(ctx: click.Context, count: int) -> None:
    """List the app's beat_schedule: schedule, task, queue, next COUNT runs, last fired slot."""
    try:
        schedule_main(ctx.obj.app, count=count)
    except CeleryLambdaError as exc:
        _fail(str(exc))


@lambda_.command("revoke")
@click.argument("ids", nargs=-1, required=True)
@click.option("--reason", default="revoked", show_default=True)
@click.pass_context
def revoke_command(ctx: click.Context, ids: tuple[str, ...], reason: str) -> None:
    """Revoke task, group or workflow-root ids (both consumers check before running)."""
    try:
        recorded = revoke(ctx.obj.app, ids, reason)
    except CeleryLambdaError as exc:
        _fail(str(exc))
    for task_id in recorded:
        click.echo(f"revoked {task_id}")
