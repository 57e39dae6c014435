"""``make demo`` as a newcomer runs it: ``celery -A tasks lambda demo`` in an 80-column terminal,
with nothing of a local cloud in the environment (it starts its own emulator); then what its last
lines say to do next: ``lambda up`` in one shell, the operator's commands in another."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
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
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CELERY_", "PYTHON"))}
    env |= {"COLUMNS": "80", "TERM": "dumb"}

    out = subprocess.run(
        [*CELERY, "demo"],
        cwd=ROOT,  # as `make demo` runs it: the clone's root, nothing on PYTHONPATH
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
    user = {k: v for k, v in shell(ROOT).items() if k != "PYTHONPATH"}
    up = start(user, ROOT, "up", "--port", str(free_port()), logs=tmp_path)
    try:
        up.wait_for("failed records:")  # consuming: the template's handler imported
        assert f"loaded the last demo's {kept} results" in up.output()
        sourced_shell = {k: v for k, v in sourced(ROOT).items() if k != "PYTHONPATH"}
        shown_id = rows["add.delay(4, 4)"][0]
        inspect = subprocess.run(
            [*CELERY, "inspect", shown_id, "--json"],
            cwd=ROOT,
            env=sourced_shell,
            capture_output=True,
            text=True,
            timeout=60,
        )
        add = subprocess.run(  # the next line the demo suggests, run by `up`'s Lambda handler
            [sys.executable, "-c", "from tasks import add; print(add.delay(4, 4).get(timeout=60))"],
            cwd=ROOT,
            env=sourced_shell,
            capture_output=True,
            text=True,
            timeout=90,
        )
    finally:
        stop(up)
    assert (add.returncode, add.stdout.strip()) == (0, "8"), add.stderr + up.output()
    assert inspect.returncode == 0, inspect.stderr
    found = json.loads(inspect.stdout)["task"]
    assert (found["task_id"][:8], found["state"], found["result"]) == (shown_id, "SUCCESS", 8)
