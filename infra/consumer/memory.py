"""Resident-memory protection on the Lambda path: its ``worker_max_memory_per_child``.

A Celery worker replaces a child process whose memory grew past a limit. A Lambda invocation
cannot replace itself mid-batch, so the guard does the next best thing:

1. before each record: if the process's resident memory is over the budget (a share of the
   function's memory size), no further record starts in this invocation — the rest are reported
   back to SQS, nothing is lost — and a warning names the task whose run grew memory the most;
2. at the start of a later invocation on the same container: if memory is still over the budget
   after a collection, the process exits before touching a record, so Lambda starts a fresh
   execution environment (the batch comes back after the queue's visibility timeout).
"""

from __future__ import annotations

import gc
import os
import resource
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

from infra.core.observability import logger

__all__ = ["BUDGET_FRACTION", "MemoryGuard", "budget_bytes", "resident_bytes"]

BUDGET_FRACTION = 0.85
"""Share of the function's memory a process may hold before it stops starting records: the rest
is headroom for the record in progress, the response and the runtime itself."""
GROWTH_FRACTION = 0.10
"""Growth since the first check (share of the function's memory) that must also be exceeded: a
function configured so small that the loaded app alone is over the budget is not recycled
forever for memory no task took."""
_MIB = 1024 * 1024


def resident_bytes() -> int:
    """Current resident set size of this process (Linux ``/proc``; else the peak so far)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak) * (1 if sys.platform == "darwin" else 1024)


def budget_bytes(context: Any) -> int | None:
    """The budget for an invocation: a share of its ``memory_limit_in_mb``; None if unknown."""
    try:
        memory_mb = int(getattr(context, "memory_limit_in_mb", 0) or 0)
    except (TypeError, ValueError):
        return None
    return int(memory_mb * _MIB * BUDGET_FRACTION) if memory_mb > 0 else None


def _exit() -> NoReturn:
    os._exit(1)  # not sys.exit: no cleanup may run code that holds the memory further


@dataclass(slots=True)
class MemoryGuard:
    """Watches resident memory across the records of a container's invocations."""

    measure: Callable[[], int] = resident_bytes
    exit: Callable[[], NoReturn] = _exit
    tripped: bool = False
    baseline: int | None = None
    """Resident bytes at the container's first check, before any task ran."""
    grown_most: tuple[str, int] | None = None
    """The task whose run grew resident memory the most, and by how many bytes."""

    def observe(self, task_name: str, before: int) -> None:
        """Note how much a task's run grew resident memory (``before`` = measured before it)."""
        grown = self.measure() - before
        if grown > 0 and (self.grown_most is None or grown > self.grown_most[1]):
            self.grown_most = (task_name, grown)

    def over_budget(self, context: Any) -> int | None:
        """The resident bytes when they exceed the invocation's budget; None when within it."""
        budget = budget_bytes(context)
        used = self.measure()
        if self.baseline is None:
            self.baseline = used
        if budget is None or used <= budget:
            return None
        if used - self.baseline <= budget / BUDGET_FRACTION * GROWTH_FRACTION:
            return None
        self.tripped = True
        return used

    def recycle_if_still_over(self, context: Any) -> None:
        """At an invocation's start: exit when an earlier one tripped and memory stayed high."""
        if not self.tripped:
            return
        gc.collect()
        used = self.over_budget(context)
        if used is not None:
            logger.warning(
                "resident memory still over budget: exiting for a fresh execution environment",
                resident_mb=used // _MIB,
                budget_mb=(budget_bytes(context) or 0) // _MIB,
            )
            self.exit()
        self.tripped = False
