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
from devtools.checks.parameters import parse_overrides
from devtools.cloud import snapshot
from devtools.cloud.deploy import DEFAULT_STACK, deploy
from devtools.cloud.event_source import (
    ConsumeStats,
    consume,
    handler_from_source,
    stop_on_signals,
)
from devtools.cloud.redelivery import LOCAL_FAILED_VISIBILITY, deployed_redelivery, redelivery_note
from devtools.cloud.session import (
    local_cloud,
    local_settings,
    record_deployment,
    recorded_deployment,
    write_env_file,
)
from devtools.cloud.targets import DEFAULT_TARGET, TARGETS
from devtools.ops.commands import COMMANDS
from devtools.ops.ids import UnknownId, resolve_for_app
from devtools.ops.schedule import schedule_main
from infra.core import aws
from infra.core.errors import CeleryLambdaError, ConfigurationError
from infra.core.limits import SQS_MAX_VISIBILITY_SECONDS
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
    """Create the template's queues, tables and bucket on AWS_ENDPOINT_URL; print the exports.

    The deployment is recorded under .celery-lambda/ for `lambda consume`, which never deploys.
    """
    settings = _settings(target)
    try:
        deployment = deploy(settings, stack_name=stack_name, template_path=template_path)
    except CeleryLambdaError as exc:
        _fail(str(exc))
    record_deployment(deployment)
    click.echo(deployment.exports())


processes_option = click.option(
    "--processes",
    is_flag=True,
    help="A process per poller (isolated, invocations in parallel; each imports the handler). "
    "Default: threads of this process whose invocations take turns in its main thread.",
)
"""The ``--processes`` option of ``up`` and ``consume``."""

failed_visibility_option = click.option(
    "--failed-visibility",
    type=click.IntRange(0, SQS_MAX_VISIBILITY_SECONDS),
    default=LOCAL_FAILED_VISIBILITY,
    show_default=True,
    metavar="SECONDS",
    help="Seconds before a record the handler failed comes back; the deployed stack waits its "
    "queue's VisibilityTimeout (see devtools.cloud.redelivery).",
)
"""The ``--failed-visibility`` option of ``up`` and ``consume``."""


def _stopped(pollers: int, stats: ConsumeStats) -> str:
    """What a stopped event source ran and did, for the line a stop prints."""
    return f"event source ({pollers} pollers: {stats})"


@lambda_.command()
@click.option("--port", type=int, default=None, help="Port for the emulator (default: a free one).")
@click.option("--stack-name", default=DEFAULT_STACK, show_default=True)
@click.option(
    "--consume/--no-consume", "consuming", default=True, help="Run the event-source emulator too."
)
@click.option("--concurrency", type=int, default=1, show_default=True, help="Pollers per queue.")
@failed_visibility_option
@processes_option
@target_option
def up(
    port: int | None,
    stack_name: str,
    consuming: bool,
    concurrency: int,
    failed_visibility: int,
    processes: bool,
    target: str,
) -> None:
    """Start the embedded emulator, deploy the template, consume through the Lambda handler."""
    stopped: list[str] = []
    try:
        with local_cloud(port, stack_name, target) as deployment:
            env_file = write_env_file(deployment)
            record_deployment(deployment)
            os.environ.update(deployment.environment)
            click.echo(deployment.exports())
            if target != "localstack" and (kept := snapshot.restore(Settings.from_env())):
                console.print(
                    f"loaded the last demo's {kept} results from {snapshot.SNAPSHOT} "
                    "(`lambda dashboard` shows them; delete the file to start empty)"
                )
            stop = stop_on_signals()  # before "Ctrl-C stops": from then on, it does
            console.print(
                f"[green]emulator up[/] at {deployment.endpoint_url}; in another shell run\n"
                f"  [bold]source {env_file}[/]\n"
                "then publish tasks (and/or run `celery -A tasks worker --loglevel=info`). "
                "Ctrl-C stops."
            )
            if consuming:
                deployed = deployed_redelivery(aws.client("sqs"), deployment.event_sources)
                console.print(redelivery_note(deployed, failed_visibility))
                stats = consume(
                    deployment.event_sources,
                    handler_from_source,
                    concurrency=concurrency,
                    failed_visibility=failed_visibility,
                    stop=stop,
                    processes=processes,
                )
                stopped.append(_stopped(len(deployment.event_sources) * concurrency, stats))
            else:
                stop.wait()
    except ConfigurationError as exc:
        _fail(str(exc))
    if target == "localstack":
        stopped.append(f"LocalStack at {deployment.endpoint_url} keeps running")
    else:
        stopped.append(f"emulator at {deployment.endpoint_url}")
    console.print(f"stopped: {', '.join(stopped)}")


@lambda_.command("consume")
@click.option("--until-empty", is_flag=True, help="Stop once every queue is empty.")
@click.option("--concurrency", type=int, default=1, show_default=True, help="Pollers per queue.")
@failed_visibility_option
@click.option("--stack-name", default=DEFAULT_STACK, show_default=True)
@processes_option
@target_option
def consume_command(
    until_empty: bool,
    concurrency: int,
    failed_visibility: int,
    stack_name: str,
    processes: bool,
    target: str,
) -> None:
    """Play the SQS event source mapping: poll the deployed queues, invoke the handler.

    Reads what `deploy-local` or `up` recorded for this endpoint; never creates anything.
    """
    settings = _settings(target)
    try:
        deployment = recorded_deployment(settings, stack_name)
        for name, value in deployment.environment.items():
            os.environ.setdefault(name, value)  # what the user exported wins
        stop = stop_on_signals()
        pollers = len(deployment.event_sources) * concurrency
        if not until_empty:
            console.print(f"consuming: event source ({pollers} pollers); Ctrl-C stops")
        stats = consume(
            deployment.event_sources,
            handler_from_source,
            concurrency=concurrency,
            until_empty=until_empty,
            failed_visibility=failed_visibility,
            stop=stop,
            processes=processes,
        )
    except CeleryLambdaError as exc:
        _fail(str(exc))
    if stop.is_set():
        console.print(f"stopped: {_stopped(pollers, stats)}")
    else:
        console.print(str(stats))


@lambda_.command()
@target_option
@click.pass_context
def demo(ctx: click.Context, target: str) -> None:
    """Start the emulator, publish the example tasks (add, chain, group, chord, retry, …), run them
    through the Lambda path."""
    # Here, not at the top: the demo imports the handler's Powertools, which would otherwise be
    # paid by every `celery` command (Celery loads its plugins for `celery worker` too).
    from devtools.demo import demo_main

    try:
        demo_main(ctx.obj.app, target=target)
    except ConfigurationError as exc:
        _fail(str(exc))


@lambda_.command()
@click.option("--tasks", "count", type=click.IntRange(min=20), default=300, show_default=True)
@click.option(
    "--pool",
    "pools",
    multiple=True,
    type=click.Choice(sorted(POOLS)),
    help="Plain Celery pool to try; repeatable (default: threads and prefork, the best compared).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead.")
@click.pass_context
def bench(ctx: click.Context, count: int, pools: tuple[str, ...], as_json: bool) -> None:
    """Drain N tasks.add by plain Celery, our worker, the Lambda path, the handler: one table."""
    try:
        bench_main(ctx.obj.app, tasks=count, pools=pools or tuple(POOLS), as_json=as_json)
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
@click.option(
    "--parameter-overrides",
    "overrides",
    multiple=True,
    metavar="'KEY=VALUE ...'",
    help="Parameter values as for sam deploy, over samconfig.toml's parameter_overrides.",
)
@click.pass_context
def doctor(ctx: click.Context, overrides: tuple[str, ...]) -> None:
    """Check template.yaml against the app: consumers, visibility, scaling, DLQs, IAM, limits."""
    try:
        status = doctor_main(ctx.obj.app, parse_overrides(overrides))
    except CeleryLambdaError as exc:
        _fail(str(exc))
    ctx.exit(status)


@lambda_.command("bench-import")
@click.option("--runs", type=click.IntRange(min=1), default=7, show_default=True)
def bench_import(runs: int) -> None:
    """Cold import and init of handlers.sqs against the bare import of its dependencies."""
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


@lambda_.command("dashboard")
@click.option("--port", type=click.IntRange(1, 65535), default=5555, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--stack", metavar="NAME", default=None, help="As for the operator's commands.")
@click.option("--token", default=None, help="The token to require (default: a random one).")
@click.option("--read-only", is_flag=True, help="Hide and refuse revoke, redrive and purge.")
@click.pass_context
def dashboard(
    ctx: click.Context, port: int, host: str, stack: str | None, token: str | None, read_only: bool
) -> None:
    """Serve the web dashboard (tasks, queues, DLQs, schedule); prints the URL to open."""
    # Here, not at the top: Starlette, Jinja2 and uvicorn would otherwise be paid by every
    # `celery` command (Celery loads its plugins for `celery worker` too).
    from devtools.dashboard.server import dashboard_main, make_dashboard
    from devtools.ops.options import resolve

    target = resolve(stack)
    made = make_dashboard(target, ctx.obj.app, token=token, read_only=read_only)
    dashboard_main(made, host, port, say=click.echo)


@lambda_.command("revoke")
@click.argument("ids", nargs=-1, required=True)
@click.option("--reason", default="revoked", show_default=True)
@click.option("--exact", is_flag=True, help="Take the ids as given, none as the start of an id.")
@click.pass_context
def revoke_command(ctx: click.Context, ids: tuple[str, ...], reason: str, exact: bool) -> None:
    """Revoke task, group or workflow-root ids (both consumers check before running).

    A whole id (a UUID) is taken as given, stored or not (a group, a task not sent yet); any other
    is a task id in the results table or the start of one, unique there. --exact takes every id
    as given (a custom task id not stored yet).
    """
    try:
        recorded = revoke(ctx.obj.app, ids if exact else resolve_for_app(ctx.obj.app, ids), reason)
    except UnknownId as exc:
        _fail(f"{exc}; --exact revokes an id as given")
    except CeleryLambdaError as exc:
        _fail(str(exc))
    for task_id in recorded:
        click.echo(f"revoked {task_id}")


@lambda_.command("soak")
@click.option("--tasks", "count", type=click.IntRange(min=1), default=3000, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True, help="Kills' and faults' seed.")
@click.option(
    "--fault-rate",
    type=click.FloatRange(0, 1),
    default=0.05,
    show_default=True,
    help="Share of DynamoDB and SQS requests the proxy answers with a throttle or a 500.",
)
@click.option(
    "--kill-every",
    type=click.FloatRange(min=0),
    default=6.0,
    show_default=True,
    help="Mean seconds between SIGKILLs of a consumer (0: none).",
)
@click.option(
    "--min-kills", type=click.IntRange(min=0), default=0, help="Kill at least this many times."
)
@click.option("--timeout", type=click.FloatRange(min=1), default=None, help="Give up after this.")
@click.pass_context
def soak(
    ctx: click.Context,
    count: int,
    seed: int,
    fault_rate: float,
    kill_every: float,
    min_kills: int,
    timeout: float | None,
) -> None:
    """Both consumers on one queue, killed and faulted: published, succeeded, lost, ran twice."""
    # Here, not at the top: the soak's module defines a Celery app, whose signal handlers every
    # `celery worker` that loads this plugin would otherwise install too.
    from devtools.soak.run import SoakOptions, soak_main

    options = SoakOptions(count, seed, fault_rate, kill_every, min_kills=min_kills, timeout=timeout)
    try:
        run = soak_main(options, console)
    except CeleryLambdaError as exc:
        _fail(str(exc))
    ctx.exit(1 if run.failed else 0)
