"""``celery -A tasks lambda bench-start``: what starting the local event source costs.

Every ``lambda demo``, local session and integration test that consumes pays ``lambda consume``'s
start and stop, so its budget (issue 16) is 1 s wall and 1.5 s CPU on empty queues. Measured as a
user runs it: fresh ``celery`` processes against an emulator of the bench's own with the template
deployed and recorded, each command run several times, the medians kept. CPU is the child's user
+ system time (``RUSAGE_CHILDREN``). Beside it, the floors it stands on: loading the app as
``-A`` does, and ``lambda --help`` (Celery's CLI with the plugin and the app, nothing run).

The figures are a shared machine's: compare them within one run. Tests never assert them.
"""

from __future__ import annotations

import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from devtools.cloud.session import local_cloud, record_deployment

__all__ = ["BUDGET_CPU", "BUDGET_WALL", "Start", "bench_start_main", "measure"]

BUDGET_WALL = 1.0
"""Seconds of wall time ``lambda consume --until-empty`` may take on empty queues."""
BUDGET_CPU = 1.5
"""Seconds of CPU (user + system) it may take."""
READY = "consuming:"
"""The line ``lambda consume`` prints once it polls (without ``--until-empty``)."""
_LOAD_APP = "from celery.app.utils import find_app; find_app({!r})"
"""Load the app as ``celery -A`` does."""


@dataclass(frozen=True, slots=True)
class Start:
    """Median seconds of one command: wall, CPU (user + system), and to :data:`READY` if it
    prints it (before it imports the handler and polls)."""

    command: str
    wall: float
    cpu: float
    ready: float | None = None


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(argv: Sequence[str], env: Mapping[str, str], cwd: Path) -> tuple[float, float, None]:
    """Wall and CPU seconds of one run to its exit.

    Raises:
        subprocess.CalledProcessError: it exited non-zero.
    """
    cpu, wall = _cpu(), time.perf_counter()
    subprocess.run(argv, env=env, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - wall, _cpu() - cpu, None


def _interrupted(
    argv: Sequence[str], env: Mapping[str, str], cwd: Path
) -> tuple[float, float, float]:
    """Wall and CPU seconds of a run stopped by SIGINT once it printed :data:`READY`, and the
    seconds to that line.

    Raises:
        subprocess.CalledProcessError: it exited non-zero or without printing the line.
    """
    cpu, wall = _cpu(), time.perf_counter()
    with subprocess.Popen(
        argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    ) as process:
        assert process.stderr is not None
        ready = None
        for line in process.stderr:
            if line.startswith(READY):
                ready = time.perf_counter() - wall
                process.send_signal(signal.SIGINT)
                break
        rest = process.communicate()[1]
    if ready is None or process.returncode != 0:
        raise subprocess.CalledProcessError(process.returncode or 1, argv, stderr=rest)
    return time.perf_counter() - wall, _cpu() - cpu, ready


Runner = Callable[[Sequence[str], Mapping[str, str], Path], tuple[float, float, float | None]]


def _median(
    label: str, run: Runner, argv: Sequence[str], env: Mapping[str, str], cwd: Path, runs: int
) -> Start:
    samples = [run(argv, env, cwd) for _ in range(runs)]
    ready = [s[2] for s in samples if s[2] is not None]
    return Start(
        label,
        statistics.median(s[0] for s in samples),
        statistics.median(s[1] for s in samples),
        statistics.median(ready) if ready else None,
    )


def measure(app_spec: str, runs: int = 7) -> list[Start]:
    """Start its own emulator, deploy and record the template, and time each command ``runs``
    times (after one warm-up of each, for the OS's file cache): the medians.

    Raises:
        ConfigurationError: the emulator did not start.
        subprocess.CalledProcessError: a command failed.
    """
    celery = [sys.executable, "-m", "celery", "-A", app_spec]
    commands: list[tuple[str, Runner, list[str]]] = [
        (f"load the app ({app_spec})", _run, [sys.executable, "-c", _LOAD_APP.format(app_spec)]),
        ("lambda --help", _run, [*celery, "lambda", "--help"]),
        ("lambda consume --until-empty", _run, [*celery, "lambda", "consume", "--until-empty"]),
        ("lambda consume, Ctrl-C once polling", _interrupted, [*celery, "lambda", "consume"]),
    ]
    with tempfile.TemporaryDirectory() as tmp, local_cloud() as deployment:
        cwd = Path(tmp)
        record_deployment(deployment, cwd / ".celery-lambda" / "deployments")
        path = os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))
        env = {**os.environ, **deployment.environment, "PYTHONPATH": path}
        for _, run, argv in commands:
            run(argv, env, cwd)
        return [_median(label, run, argv, env, cwd, runs) for label, run, argv in commands]


def bench_start_main(app_spec: str, runs: int = 7) -> list[Start]:
    """Measure and print the table and the budget line."""
    starts = measure(app_spec, runs)
    table = Table(title=f"start and stop on empty queues, median of {runs} fresh processes")
    for column in ("command", "wall s", "CPU s", f"to '{READY}' s"):
        table.add_column(column, justify="left" if column == "command" else "right")
    for start in starts:
        ready = "" if start.ready is None else f"{start.ready:.2f}"
        table.add_row(start.command, f"{start.wall:.2f}", f"{start.cpu:.2f}", ready)
    console = Console()
    console.print(table)
    consume = starts[2]
    met = consume.wall <= BUDGET_WALL and consume.cpu <= BUDGET_CPU
    console.print(
        f"budget: consume --until-empty <= {BUDGET_WALL:.1f} s wall and <= {BUDGET_CPU:.1f} s CPU "
        f"-- {consume.wall:.2f} s, {consume.cpu:.2f} s ({'met' if met else 'NOT met'})"
    )
    return starts
