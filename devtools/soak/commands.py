"""The soak's command: ``celery -A tasks lambda soak``.

Declared here, not in :mod:`devtools.cli`, so that the ``lambda`` group imports it only when it
runs (or ``lambda --help`` lists it): Celery loads the plugin for every ``celery`` command.
"""

from __future__ import annotations

import click
from rich.console import Console

from infra.core.errors import CeleryLambdaError

__all__ = ["soak"]


@click.command("soak")
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
    # Here, not at the top: the soak's module defines a Celery app, whose signal handlers
    # `lambda --help`, which imports this module to list the command, would otherwise install.
    from devtools.soak.run import SoakOptions, soak_main

    options = SoakOptions(count, seed, fault_rate, kill_every, min_kills=min_kills, timeout=timeout)
    try:
        run = soak_main(options, Console(stderr=True))
    except CeleryLambdaError as exc:
        raise click.ClickException(str(exc)) from exc
    ctx.exit(1 if run.failed else 0)
