"""A local-cloud command killed with SIGTERM (``timeout``, ``kill``, a CI runner) stops what it
started: ``lambda bench`` leaves no emulator or consumer running (devtools.cloud.session)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.shells import ROOT, shell, start

pytestmark = pytest.mark.integration


def descendants(pid: int) -> dict[int, str]:
    """Every process under ``pid``: its id and command line."""
    found: dict[int, str] = {}
    listing = subprocess.run(
        ["ps", "-e", "-o", "pid=,ppid=,args="], capture_output=True, text=True, check=True
    ).stdout
    children: dict[int, list[tuple[int, str]]] = {}
    for line in listing.splitlines():
        child, parent, args = line.strip().split(None, 2)
        children.setdefault(int(parent), []).append((int(child), args))
    todo = [pid]
    while todo:
        for child, args in children.get(todo.pop(), []):
            found[child] = args
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_a_killed_bench_stops_its_emulator_and_consumers(tmp_path: Path) -> None:
    bench = start(shell(tmp_path), ROOT, "bench", "--tasks", "200", logs=tmp_path)
    deadline = time.monotonic() + 120
    started: dict[int, str] = {}
    while not any("celery" in args and "worker" in args for args in started.values()):
        assert bench.process.poll() is None, bench.output()
        assert time.monotonic() < deadline, f"no consumer started:\n{bench.output()}"
        time.sleep(0.2)
        started = descendants(bench.process.pid)
    assert any("moto_counting" in args for args in started.values()), started

    os.kill(bench.process.pid, signal.SIGTERM)  # the command only, as `kill` or `timeout` do
    assert bench.process.wait(timeout=60) != 0

    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in started) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [args for pid, args in started.items() if alive(pid)] == []
