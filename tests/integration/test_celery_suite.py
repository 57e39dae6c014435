"""Celery's own ``t/integration/test_tasks.py`` and ``test_canvas.py`` through a stock worker and
through the Lambda path, in ``make test`` (issue 17): ``make celery-suite`` in a subprocess, which
fails on any test that passes on the worker and not on the Lambda path (run once more alone).

It runs in one pytest-xdist process, beside the rest of the suite, with emulators of its own.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(2400)]

ROOT = Path(__file__).resolve().parents[2]
LAST_LINE = re.compile(
    r"celery suite: worker (\d+) passed, lambda (\d+) passed, worker only: (\d+)"
)


def test_celerys_suite_passes_on_the_lambda_path_wherever_it_passes_on_a_worker(
    tmp_path: Path,
) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "tests.celery_suite.run", "--parallel", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=2300,
        check=False,
    )
    report = run.stdout + run.stderr
    found = LAST_LINE.search(report)
    assert found, report
    worker, lambda_, only = (int(n) for n in found.groups())
    assert (run.returncode, only) == (0, 0), report
    assert lambda_ >= worker > 150, report  # the whole suite ran: 170-odd pass on a worker
