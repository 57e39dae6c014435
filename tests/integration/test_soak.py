"""``celery -A tasks lambda soak`` at a small N: both consumers, SIGKILLed and restarted, behind
the fault proxy, on an emulator of its own; nothing is lost."""

from __future__ import annotations

import os
import re
import subprocess
import sys

TASKS = 60
LINE = re.compile(
    r"^soak: published (\d+), succeeded (\d+), lost (\d+), ran twice (\d+), dlq (\d+)$"
)


def test_a_small_soak_loses_nothing() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT_URL")}
    command = [sys.executable, "-m", "celery", "-A", "tasks", "lambda", "soak"]
    options = ["--tasks", str(TASKS), "--seed", "2", "--kill-every", "3", "--min-kills", "2"]

    done = subprocess.run(
        [*command, *options], env=env, capture_output=True, text=True, timeout=600, check=False
    )

    assert done.returncode == 0, done.stderr[-3000:]
    last = done.stdout.strip().splitlines()[-1]
    match = LINE.match(last)
    assert match, done.stdout
    published, succeeded, lost, twice, dlq = map(int, match.groups())
    assert (published, lost) == (TASKS, 0)
    assert twice == done.stderr.count("ran twice ")  # each one listed with its reason
    assert "unrecorded" not in done.stderr
    kills = re.search(r"^kills: (\d+) ", done.stderr, re.MULTILINE)
    assert kills and int(kills.group(1)) >= 2, done.stderr[-3000:]
    assert re.search(r"faults injected: [1-9]", done.stderr), done.stderr[-3000:]
    assert succeeded + dlq >= TASKS
