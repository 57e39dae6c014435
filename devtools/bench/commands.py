"""The benchmarks' commands: ``celery -A tasks lambda bench`` and its ``bench-*`` siblings.

Declared here, not in :mod:`devtools.cli`, so that the ``lambda`` group imports this package only
when one of them runs (or ``lambda --help`` lists them): Celery loads the plugin for every
``celery`` command, and ``lambda consume`` needs nothing of the benchmarks.
"""

from __future__ import annotations

import click

from devtools.bench.drain import POOLS, bench_main
from devtools.bench.imports import bench_import_main
from devtools.bench.publish import bench_publish_main
from devtools.bench.startup import bench_start_main
from infra.core.errors import CeleryLambdaError

__all__ = ["bench", "bench_import", "bench_publish", "bench_start"]


@click.command()
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
        raise click.ClickException(str(exc)) from exc


@click.command("bench-publish")
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
        raise click.ClickException(str(exc)) from exc


@click.command("bench-import")
@click.option("--runs", type=click.IntRange(min=1), default=7, show_default=True)
def bench_import(runs: int) -> None:
    """Cold import and init of handlers.sqs against the bare import of its dependencies."""
    bench_import_main(runs)


@click.command("bench-start")
@click.option("--runs", type=click.IntRange(min=1), default=7, show_default=True)
@click.pass_context
def bench_start(ctx: click.Context, runs: int) -> None:
    """Start and stop of `lambda consume` on empty queues, `lambda --help`, the app's import."""
    app_spec = ctx.find_root().params.get("app")
    if not app_spec:
        raise click.ClickException("bench-start runs `celery -A APP ...`: name the app with -A")
    try:
        bench_start_main(app_spec, runs)
    except CeleryLambdaError as exc:
        raise click.ClickException(str(exc)) from exc
