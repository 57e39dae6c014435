"""``celery -A tasks lambda bench-start --runs 1`` as a user runs it: its own emulator, every
command it times run for real (a failing one fails the bench), one row each and the budget line.
Never its timings."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration  # real CLI processes and consumers: not in `make test-fast`

ROOT = Path(__file__).resolve().parents[3]
ROWS = (
    "load the app (tasks)",
    "lambda --help",
    "lambda consume --until-empty",
    "lambda consume, Ctrl-C once polling",
)
NUMBER = r"\d+\.\d\d"


def test_bench_start_prints_a_row_per_command_and_the_budget() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CELERY_"))}

    done = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "tasks", "lambda", "bench-start", "--runs", "1"],
        cwd=ROOT,
        env={**env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=240,
    )

    assert done.returncode == 0, done.stderr[-3000:]
    for row in ROWS:
        [line] = [line for line in done.stdout.splitlines() if f" {row} " in line]
        assert len(re.findall(NUMBER, line)) == (3 if "Ctrl-C" in row else 2), line
    assert re.search(
        rf"budget: consume --until-empty <= 1.0 s wall and <= 1.5 s CPU -- {NUMBER} s, "
        rf"{NUMBER} s \((met|NOT met)\)",
        done.stdout,
    ), done.stdout
