"""``make demo`` as a newcomer runs it: ``celery -A tasks lambda demo`` in an 80-column terminal,
with nothing of a local cloud in the environment (it starts its own emulator); then what its last
lines say to do next: ``lambda up`` in one shell, the operator's commands in another."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from devtools.cloud.emulator import free_port
from devtools.demo import FAILS_ON_PURPOSE, KEEP_EXPLORING
from tests.shells import CELERY, ROOT, shell, sourced, start, stop

pytestmark = pytest.mark.integration

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


def _rows(table: str) -> dict[str, tuple[str, str]]:
    """The first line of each table row: example -> (task id as shown, state)."""
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if len(cells) == 4 and cells[0] and cells[2]:
            rows[cells[0]] = (cells[1], cells[2])
    return rows


def test_the_demo_runs_every_example_and_says_what_to_do_next(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CELERY_"))}
    env |= {"COLUMNS": "80", "TERM": "dumb", "PYTHONPATH": str(ROOT)}

    out = subprocess.run(
        [*CELERY, "demo"],
        cwd=tmp_path,  # a clone of the user's: .celery-lambda/ is written there
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
    states = {label: rows[label][1] if label in rows else None for label in EXAMPLES}
    assert states == dict.fromkeys(EXAMPLES, "SUCCESS")
    assert rows["link_error=error_handler.s"][1] == "FAILURE"
    lines = out.stdout.splitlines()
    assert lines[-len(KEEP_EXPLORING.splitlines()) :] == KEEP_EXPLORING.splitlines()  # unwrapped
    assert max(len(line) for line in lines) <= 80
    [kept] = re.findall(r"(\d+) results kept in", out.stdout)

    # Keep exploring: `lambda up` starts with the demo's tasks, which the operator's commands
    # (and the dashboard, on the same table) find by the ids the demo's table showed.
    up = start(shell(tmp_path), tmp_path, "up", "--no-consume", "--port", str(free_port()))
    try:
        up.wait_for("Ctrl-C stops")
        assert f"loaded the last demo's {kept} results" in up.output()
        shown_id = rows["add.delay(4, 4)"][0]
        inspect = subprocess.run(
            [*CELERY, "inspect", shown_id, "--json"],
            cwd=tmp_path,
            env=sourced(tmp_path),
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        stop(up)
    assert inspect.returncode == 0, inspect.stderr
    found = json.loads(inspect.stdout)["task"]
    assert (found["task_id"][:8], found["state"], found["result"]) == (shown_id, "SUCCESS", 8)
