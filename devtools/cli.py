"""``celery -A <app> lambda ...``: the local cloud and the operator's commands.

Installed as a Celery CLI plugin (entry point group ``celery.commands``), so it runs with the app
that ``-A`` names, like every other ``celery`` subcommand.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import click
from kombu import pools
from rich.console import Console

from devtools.cloud.deploy import DEFAULT_STACK, Deployment, deploy
from devtools.cloud.emulator import LOCAL_CREDENTIALS, Emulator, reachable
from devtools.cloud.event_source import ConsumeStats
from devtools.cloud.targets import DEFAULT_TARGET, localstack_cloud, target_option, use_localstack
from infra.core import aws
from infra.core.config import transport_options
from infra.core.errors import CeleryLambdaError, ConfigurationError
from infra.core.settings import Settings

__all__ = ["lambda_"]

ENV_FILE = Path(".celery-lambda") / "env.sh"
console = Console(stderr=True)


def _fail(message: str) -> NoReturn:
    """One clear line on stderr and a non-zero exit."""
    raise click.ClickException(message)


def point_app_at(app: Any, deployment: Deployment) -> None:
    """Make this process (env, AWS clients, the Celery app) use the deployment's resources."""
    os.environ.update(deployment.environment)
    aws.clear_clients()
    app.conf.broker_transport_options = transport_options(Settings.from_env())
    app.conf.broker_url = deployment.environment.get("CELERY_BROKER_URL", app.conf.broker_url)
    # The backend reads its table from the environment when created, and connections carry the
    # old transport options; Celery caches both per app and has no public reset, so drop them the
    # way its own after-fork hook does.
    app._backend_cache = None
    vars(app._local).pop("backend", None)
    if app._pool is not None:
        app._pool.force_close_all()
        app._pool = None
        app.amqp._producer_pool = None
        pools.reset()  # type: ignore[no-untyped-call]  # else kombu hands back the closed pool


def write_env_file(deployment: Deployment, path: Path = ENV_FILE) -> Path:
    """Write the exports to a file a shell can ``source``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(deployment.exports() + "\n")
    return path


@contextmanager
def local_cloud(
    port: int | None = None, stack_name: str = DEFAULT_STACK, target: str = DEFAULT_TARGET
) -> Iterator[Deployment]:
    """Start the embedded emulator, deploy the template into it, stop it on exit.

    With ``target="localstack"`` the running LocalStack is used instead (``port`` is moto's).
    """
    if target == "localstack":
        with localstack_cloud(stack_name) as deployment:
            yield deployment
        return
    for name, value in LOCAL_CREDENTIALS.items():
        os.environ.setdefault(name, value)
    with Emulator(port=port) as emulator:
        os.environ["AWS_ENDPOINT_URL"] = emulator.endpoint_url
        aws.clear_clients()
        yield deployment_with_credentials(deploy(stack_name=stack_name))


def deployment_with_credentials(deployment: Deployment) -> Deployment:
    """The deployment whose exports also carry the emulator's dummy credentials."""
    env = {**LOCAL_CREDENTIALS, **dict(deployment.environment)}
    return Deployment(
        stack_name=deployment.stack_name,
        region=deployment.region,
        endpoint_url=deployment.endpoint_url,
        resources=deployment.resources,
        environment=env,
        outputs=deployment.outputs,
        event_sources=deployment.event_sources,
        schedules=deployment.schedules,
    )


@click.group(name="lambda")
@click.pass_context
def lambda_(ctx: click.Context) -> None:
    """Run this Celery app on AWS Lambda: local cloud, consumer, operations."""


def _local_settings(target: str = DEFAULT_TARGET) -> Settings:
    """Settings for a command that needs a local endpoint which answers."""
    if target == "localstack":
        try:
            use_localstack()
        except ConfigurationError as exc:
            _fail(str(exc))
    try:
        settings = Settings.from_env()
    except ConfigurationError as exc:
        _fail(str(exc))
    if not settings.endpoint_url:
        _fail(
            "AWS_ENDPOINT_URL is not set: this command only talks to a local emulator "
            "(start one with `celery -A tasks lambda up`); deploy to AWS with `sam deploy`"
        )
    if not reachable(settings.endpoint_url):
        _fail(
            f"nothing answers at AWS_ENDPOINT_URL={settings.endpoint_url}: "
            "start the emulator with `celery -A tasks lambda up`"
        )
    return settings


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
    settings = _local_settings(target)
    try:
        deployment = deploy(settings, stack_name=stack_name, template_path=template_path)
    except CeleryLambdaError as exc:
        _fail(str(exc))
    click.echo(deployment.exports())


@lambda_.command()
@click.option("--port", type=int, default=None, help="Port for the emulator (default: a free one).")
@click.option("--stack-name", default=DEFAULT_STACK, show_default=True)
@click.option("--consume/--no-consume", default=True, help="Run the event-source emulator too.")
@click.option("--concurrency", type=int, default=1, show_default=True)
@target_option
def up(port: int | None, stack_name: str, consume: bool, concurrency: int, target: str) -> None:
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
            stop = _stop_on_signals()
            if consume:
                _consume(deployment, concurrency=concurrency, stop=stop)
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
    settings = _local_settings(target)
    try:
        deployment = deploy(settings, stack_name=stack_name)
        stats = _consume(
            deployment,
            concurrency=concurrency,
            until_empty=until_empty,
            failed_visibility=failed_visibility,
            stop=_stop_on_signals(),
        )
    except CeleryLambdaError as exc:
        _fail(str(exc))
    console.print(f"{stats.batches} batches, {stats.records} records, {stats.failures} failed")


def _consume(
    deployment: Deployment,
    *,
    concurrency: int,
    stop: threading.Event,
    until_empty: bool = False,
    failed_visibility: int | None = None,
) -> ConsumeStats:
    from devtools.cloud.event_source import consume, handler_from_source

    return consume(
        deployment.event_sources,
        handler_from_source,
        concurrency=concurrency,
        until_empty=until_empty,
        failed_visibility=failed_visibility,
        stop=stop,
    )


def _stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT (Ctrl-C), for a clean stop."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    return stop


@lambda_.command()
@target_option
@click.pass_context
def demo(ctx: click.Context, target: str) -> None:
    """Start the emulator, publish the brief's examples, run them through the Lambda path."""
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
    from devtools.bench.drain import POOLS, bench_main

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
    from devtools.bench.publish import bench_publish_main

    try:
        bench_publish_main(ctx.obj.app, tasks=count, round_size=round_size)
    except CeleryLambdaError as exc:
        _fail(str(exc))


@lambda_.command("doctor")
@click.pass_context
def doctor(ctx: click.Context) -> None:
    """Check template.yaml against the app: consumers, visibility, DLQs, IAM, time limits."""
    from devtools.checks.doctor import doctor_main

    try:
        status = doctor_main(ctx.obj.app)
    except CeleryLambdaError as exc:
        _fail(str(exc))
    ctx.exit(status)


@lambda_.command("bench-import")
@click.option("--runs", type=click.IntRange(min=1), default=7, show_default=True)
def bench_import(runs: int) -> None:
    """Cold import of handlers.sqs against the bare import of its dependencies (median)."""
    from devtools.bench.imports import bench_import_main

    bench_import_main(runs)


@lambda_.command("schedule")
@click.option("--count", type=click.IntRange(min=1), default=3, show_default=True)
@click.pass_context
def schedule_command(ctx: click.Context, count: int) -> None:
    """List the app's beat_schedule: schedule, task, queue, next COUNT runs, last fired slot."""
    from devtools.ops.schedule import schedule_main

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
    from infra.store.revoke import revoke

    try:
        recorded = revoke(ctx.obj.app, ids, reason)
    except CeleryLambdaError as exc:
        _fail(str(exc))
    for task_id in recorded:
        click.echo(f"revoked {task_id}")


# The operator's commands (queues, inspect, dlq, stats) live in devtools.ops_*; the one slow
# import they need (Powertools, for `stats`) waits until that command runs.
from devtools.ops.commands import register as _register_operations  # noqa: E402

_register_operations(lambda_)
