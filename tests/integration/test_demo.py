"""``make demo`` as a newcomer runs it: ``celery -A tasks lambda demo`` in an 80-column terminal,
with nothing of a local cloud in the environment (it starts its own emulator)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from devtools.demo import FAILS_ON_PURPOSE, KEEP_EXPLORING

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = (
    "add.delay(4, 4)",
    "link=add.s(16)",
    "chain",
    "group",
    "chord",
    "countdown=3",
    "upload_files (PROGRESS)",
    "retry with backoff",
    "create_new_user",
    "beat: add-every-minute",
)


def _rows(table: str) -> dict[str, str]:
    """The first line of each table row: example -> state."""
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if len(cells) == 4 and cells[0] and cells[2]:
            rows[cells[0]] = cells[2]
    return rows


def test_the_demo_runs_every_example_and_says_what_to_do_next() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CELERY_"))}
    env |= {"COLUMNS": "80", "TERM": "dumb"}

    out = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "tasks", "lambda", "demo"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )

    assert out.returncode == 0, out.stderr[-3000:]
    text = re.sub(r"\s+", " ", out.stdout)
    assert re.sub(r"\s+", " ", FAILS_ON_PURPOSE) in text  # the failure is explained
    rows = _rows(out.stdout)
    assert {label: rows.get(label) for label in EXAMPLES} == dict.fromkeys(EXAMPLES, "SUCCESS")
    assert rows["link_error=error_handler.s"] == "FAILURE"
    lines = out.stdout.splitlines()
    assert lines[-len(KEEP_EXPLORING.splitlines()) :] == KEEP_EXPLORING.splitlines()  # unwrapped
    assert max(len(line) for line in lines) <= 80
