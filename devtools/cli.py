"""``celery -A <app> lambda ...``: the local cloud and the operator's commands.

Installed as a Celery CLI plugin (entry point group ``celery.commands``), so it runs with the app
that ``-A`` names (``ctx.obj.app``), like every other ``celery`` subcommand. Each command here
parses its options, calls the module that does the work and prints; the operator's commands
(``queues``, ``inspect``, ``dlq``, ``stats``) are declared in :mod:`devtools.ops.commands`, the
benchmarks' in :mod:`devtools.bench.commands` and the soak in :mod:`devtools.soak.commands`
(:data:`ELSEWHERE`).

Celery imports every plugin when any ``celery`` command starts (``celery worker`` too), so what
this module imports is paid by all of them. It imports only the constants its options show; each
command imports the modules that do its work when it runs, and the commands declared elsewhere are
imported when one is used (:class:`LazyGroup`). ``lambda consume`` thus starts with the event
source, the deployment record and the handler: nothing of the benchmarks, the dashboard, the
checks or aws-sam-translator (a test holds this).
"""

from __future__ import annotations

import functools
import importlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from devtools.cloud.deploy import DEFAULT_STACK
from devtools.cloud.redelivery import LOCAL_FAILED_VISIBILITY
from devtools.cloud.targets import DEFAULT_TARGET, TARGETS
from infra.core.errors import CeleryLambdaError, ConfigurationError
from infra.core.limits import SQS_MAX_VISIBILITY_SECONDS
from infra.core.settings import Settings

if TYPE_CHECKING:
    from rich.console import Console

    from devtools.cloud.event_source import ConsumeStats

__all__ = ["ELSEWHERE", "LazyGroup", "console", "lambda_"]

ELSEWHERE = {
    "bench": "devtools.bench.commands:bench",
    "bench-import": "devtools.bench.commands:bench_import",
    "bench-publish": "devtools.bench.commands:bench_publish",
    "bench-start": "devtools.bench.commands:bench_start",
    "dlq": "devtools.ops.dlq_commands:dlq",
    "inspect": "devtools.ops.commands:inspect_command",
    "queues": "devtools.ops.commands:queues",
    "soak": "devtools.soak.commands:soak",
    "stats": "devtools.ops.commands:stats",
}
"""The commands declared in other modules (``name -> "module:attribute"``), imported when used."""


@functools.cache
def console() -> Console:
    """The console every command prints its notes to (stderr), made when one first prints."""
    from rich.console import Console

    return Console(stderr=True)


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


class LazyGroup(click.Group):
    """A group whose commands declared in other modules are imported when one is looked up (to
    run it, or for ``--help`` to list it), not when Celery loads the plugin: it does so for every
    ``celery`` command, and ``lambda consume`` needs neither the benchmarks nor the operator's
    commands. Click's documented pattern: https://click.palletsprojects.com/en/stable/complex/."""

    def __init__(self, *args: Any, elsewhere: Mapping[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.elsewhere = dict(elsewhere)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.elsewhere})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The command, imported from its module if it is declared elsewhere.

        Raises:
            TypeError: the module's attribute is not the click command of that name.
        """
        if cmd_name not in self.elsewhere:
            return super().get_command(ctx, cmd_name)
        module, _, attribute = self.elsewhere[cmd_name].partition(":")
        command = getattr(importlib.import_module(module), attribute)
        if not isinstance(command, click.Command) or command.name != cmd_name:
            raise TypeError(f"{self.elsewhere[cmd_name]} is not the command {cmd_name!r}")
        return command


@click.group(name="lambda", cls=LazyGroup, elsewhere=ELSEWHERE)
@click.pass_context
def lambda_(ctx: click.Context) -> None:
    """Run this Celery app on AWS Lambda: local cloud, consumer, operations."""


def _settings(target: str) -> Settings:
    """The local settings (:func:`devtools.cloud.session.local_settings`), or one clear line and
    a non-zero exit."""
    from devtools.cloud.session import local_settings

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
    from devtools.cloud.deploy import deploy
    from devtools.cloud.session import record_deployment

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
    from devtools.cloud import snapshot
    from devtools.cloud.event_source import consume, handler_from_source, stop_on_signals
    from devtools.cloud.redelivery import deployed_redelivery, redelivery_note
    from devtools.cloud.session import local_cloud, record_deployment, write_env_file
    from infra.core import aws

    stopped: list[str] = []
    try:
        with local_cloud(port, stack_name, target) as deployment:
            env_file = write_env_file(deployment)
            record_deployment(deployment)
            os.environ.update(deployment.environment)
            click.echo(deployment.exports())
            if target != "localstack" and (kept := snapshot.restore(Settings.from_env())):
                console().print(
                    f"loaded the last demo's {kept} results from {snapshot.SNAPSHOT} "
                    "(`lambda dashboard` shows them; delete the file to start empty)"
                )
            stop = stop_on_signals()  # before "Ctrl-C stops": from then on, it does
            console().print(
                f"[green]emulator up[/] at {deployment.endpoint_url}; in another shell run\n"
                f"  [bold]source {env_file}[/]\n"
                "then publish tasks (and/or run `celery -A tasks worker --loglevel=info`). "
                "Ctrl-C stops."
            )
            if consuming:
                deployed = deployed_redelivery(aws.client("sqs"), deployment.event_sources)
                console().print(redelivery_note(deployed, failed_visibility))
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
    console().print(f"stopped: {', '.join(stopped)}")


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
    from devtools.cloud.event_source import consume, handler_from_source, stop_on_signals
    from devtools.cloud.session import recorded_deployment

    settings = _settings(target)
    try:
        deployment = recorded_deployment(settings, stack_name)
        for name, value in deployment.environment.items():
            os.environ.setdefault(name, value)  # what the user exported wins
        stop = stop_on_signals()
        pollers = len(deployment.event_sources) * concurrency
        if not until_empty:
            click.echo(f"consuming: event source ({pollers} pollers); Ctrl-C stops", err=True)
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
    # Plain lines: rich's console (40 ms to import) is not needed for them.
    click.echo(f"stopped: {_stopped(pollers, stats)}" if stop.is_set() else str(stats), err=True)


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
    from devtools.checks.doctor import doctor_main
    from devtools.checks.parameters import parse_overrides

    try:
        status = doctor_main(ctx.obj.app, parse_overrides(overrides))
    except CeleryLambdaError as exc:
        _fail(str(exc))
    ctx.exit(status)


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


@lambda_.command("dashboard")
@click.option("--port", type=click.IntRange(1, 65535), default=5555, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--stack", metavar="NAME", default=None, help="As for the operator's commands.")
@click.option(
    "--token",
    default=None,
    help="The token to require (default: $CELERY_LAMBDA_DASHBOARD_TOKEN, else a random one).",
)
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
    from devtools.ops.ids import UnknownId, resolve_for_app
    from infra.store.revoke import revoke

    try:
        recorded = revoke(ctx.obj.app, ids if exact else resolve_for_app(ctx.obj.app, ids), reason)
    except UnknownId as exc:
        _fail(f"{exc}; --exact revokes an id as given")
    except CeleryLambdaError as exc:
        _fail(str(exc))
    for task_id in recorded:
        click.echo(f"revoked {task_id}")
