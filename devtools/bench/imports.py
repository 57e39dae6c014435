"""Cold-start cost of the Lambda handler: its import against the bare import of what it needs,
and its init -- that import plus the first invocation's setup (:data:`SETUP`: the app loaded,
the pipeline and its clients built; no AWS request).

Each measurement is a fresh interpreter (as a cold start is), run several times; the median of
the wall time is kept, and ``-X importtime`` names our own modules' share. Budget (DESIGN.md):
the handler's import at most 1.15x the bare imports of its dependencies, and no AWS call.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

__all__ = ["BARE", "HANDLER", "SETUP", "ImportTimes", "measure", "bench_import_main"]

BARE = (
    "import celery, celery.app.trace, kombu.transport.SQS, boto3, botocore.config; "
    "import aws_lambda_powertools.utilities.batch, aws_lambda_powertools.logging, "
    "aws_lambda_powertools.metrics, aws_lambda_powertools.tracing, aws_xray_sdk.core"
)
"""The dependencies the handler cannot do without, imported bare. The X-Ray SDK is one: the
handler traces through Powertools' Tracer, which loads it."""
HANDLER = "import handlers.sqs"
SETUP = "from infra.consumer.runtime import pipeline; pipeline()"
"""What the handler's first invocation builds before its first record (``functools.cache``)."""
BUDGET = 1.15
OURS = ("handlers", "infra", "tasks")
MARK = "\n-- step done --\n"


@dataclass(frozen=True, slots=True)
class ImportTimes:
    """Median seconds of a fresh interpreter importing the bare dependencies, and the handler."""

    bare: float
    handler: float
    ours_us: int
    """Microseconds ``-X importtime`` attributes to our own modules (self time)."""
    setup: float = 0.0
    """Seconds of the first invocation's setup, after the import, in the same interpreter."""

    @property
    def ratio(self) -> float:
        return self.handler / self.bare

    @property
    def init(self) -> float:
        """The handler's init: its cold import and its first invocation's setup."""
        return self.handler + self.setup


def _run(*steps: str) -> tuple[list[float], str]:
    """Seconds of each step in one fresh interpreter, and the first step's ``-X importtime``."""
    timer = "import sys, time; t = time.perf_counter(); " + "".join(
        f"{step}; print(time.perf_counter() - t); sys.stderr.write({MARK!r}); "
        "t = time.perf_counter(); "
        for step in steps
    )
    env = {**os.environ, "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1")}
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", timer],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    lines = done.stdout.strip().splitlines()[-len(steps) :]
    return [float(line) for line in lines], done.stderr.split(MARK, 1)[0]


def _ours(importtime: str) -> int:
    """Self microseconds of our modules in ``-X importtime`` output."""
    total = 0
    for line in importtime.splitlines():
        parts = [p.strip() for p in line.removeprefix("import time:").split("|")]
        if len(parts) == 3 and parts[0].isdigit() and parts[2].lstrip().startswith(OURS):
            total += int(parts[0])
    return total


def measure(runs: int = 7) -> ImportTimes:
    """Alternate bare and handler imports (then its setup) ``runs`` times each; medians."""
    bare, handler, setup, ours = [], [], [], []
    for _ in range(runs):
        bare.append(_run(BARE)[0][0])
        (seconds, setting_up), trace = _run(HANDLER, SETUP)
        handler.append(seconds)
        setup.append(setting_up)
        ours.append(_ours(trace))
    return ImportTimes(
        statistics.median(bare),
        statistics.median(handler),
        int(statistics.median(ours)),
        statistics.median(setup),
    )


def bench_import_main(runs: int = 7) -> ImportTimes:
    """Measure and print the table and the budget line."""
    times = measure(runs)
    table = Table(title=f"cold import and init, median of {runs} fresh interpreters")
    for column in ("import", "ms", "x bare"):
        table.add_column(column, justify="right" if column != "import" else "left")
    table.add_row("bare dependencies", f"{times.bare * 1000:.0f}", "1.00")
    table.add_row("handlers.sqs", f"{times.handler * 1000:.0f}", f"{times.ratio:.2f}")
    table.add_row("  of which our modules", f"{times.ours_us / 1000:.0f}", "")
    table.add_row("first invocation's setup", f"{times.setup * 1000:.0f}", "")
    table.add_row(
        "handler init (import + setup)",
        f"{times.init * 1000:.0f}",
        f"{times.init / times.bare:.2f}",
    )
    console = Console()
    console.print(table)
    for what, ratio in (("import", times.ratio), ("init", times.init / times.bare)):
        verdict = "met" if ratio <= BUDGET else "NOT met"
        console.print(
            f"budget: handler {what} <= {BUDGET}x the bare imports -- {ratio:.2f}x ({verdict})"
        )
    return times
