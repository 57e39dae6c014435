"""What a consumer process spends, measured from outside its code: the DynamoDB capacity units
its requests cost, and the CPU time of its process tree.

The emulator counts requests; DynamoDB bills request *units*, per item (a transaction's item
twice). So every consumer of the bench runs with a ``sitecustomize`` (written by
:func:`write_sitecustomize`) that loads this file on its own -- no package, nothing of the
project imported into plain Celery's worker -- and adds :func:`_record` to botocore's built-in
handlers: every boto3 session made afterwards (kombu's, Celery's backend's, ours) reports each
DynamoDB call's units, one line appended to the file :data:`METER_VARIABLE` names.

Units per item follow the on-demand rules: a write of an item up to 1 KB is one write unit, in
a transaction two; an eventually consistent read up to 4 KB half a read unit, a strongly
consistent one a unit, in a transaction two. Item sizes are estimated from the request (an
update's resulting item is taken to be under 1 KB); a Query or Scan is counted as half a unit.
https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/read-write-operations.html

Stdlib only (botocore imported by :func:`install`): this file is loaded outside its package.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "METER_VARIABLE",
    "capacity_units",
    "children",
    "install",
    "read_units",
    "tree_cpu_seconds",
    "write_sitecustomize",
]

METER_VARIABLE = "CELERY_LAMBDA_BENCH_METER"
"""The file each DynamoDB call's units are appended to; unset, nothing is recorded."""
WRITE_UNIT_BYTES = 1024
READ_UNIT_BYTES = 4096
TRANSACTION_FACTOR = 2
_WRITE_KINDS = ("Put", "Update", "Delete", "ConditionCheck")


def _size(item: Mapping[str, Any] | None) -> int:
    """An item's size, estimated as its JSON (names and values, as DynamoDB counts them)."""
    return len(json.dumps(item, separators=(",", ":"), default=str)) if item else 0


def _write(item: Mapping[str, Any] | None = None) -> float:
    return float(max(1, math.ceil(_size(item) / WRITE_UNIT_BYTES)))


def _read(consistent: bool) -> float:
    return 1.0 if consistent else 0.5


def capacity_units(operation: str, params: Mapping[str, Any]) -> tuple[float, float]:
    """(write units, read units) one DynamoDB call costs, from its parameters."""
    if operation in {"PutItem", "UpdateItem", "DeleteItem"}:
        return _write(params.get("Item")), 0.0
    if operation == "BatchWriteItem":
        requests = [r for rs in params.get("RequestItems", {}).values() for r in rs]
        return sum(_write(r.get("PutRequest", {}).get("Item")) for r in requests), 0.0
    if operation == "TransactWriteItems":
        items = params.get("TransactItems", [])
        units = sum(_write(i.get("Put", {}).get("Item")) for i in items if set(i) & {*_WRITE_KINDS})
        return TRANSACTION_FACTOR * units, 0.0
    if operation == "GetItem":
        return 0.0, _read(bool(params.get("ConsistentRead")))
    if operation == "BatchGetItem":
        tables = params.get("RequestItems", {}).values()
        return 0.0, sum(
            len(t.get("Keys", [])) * _read(bool(t.get("ConsistentRead"))) for t in tables
        )
    if operation == "TransactGetItems":
        return 0.0, float(TRANSACTION_FACTOR * len(params.get("TransactItems", [])))
    if operation in {"Query", "Scan"}:
        return 0.0, _read(bool(params.get("ConsistentRead")))
    return 0.0, 0.0  # the control plane (DescribeTable, CreateTable ...) is not billed per unit


def _record(params: Mapping[str, Any], model: Any, **_: Any) -> None:
    """botocore ``before-parameter-build.dynamodb``: append the call's units to the meter file."""
    path = os.environ.get(METER_VARIABLE)
    if not path:
        return
    writes, reads = capacity_units(model.name, params)
    line = f"{model.name} {writes:g} {reads:g}\n".encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)  # one small O_APPEND write: lines of many processes never interleave
    finally:
        os.close(fd)


def install() -> None:
    """Meter every boto3 session made from now on (botocore's built-in handlers)."""
    from botocore import handlers  # only here: this file is loaded before anything else

    entry = ("before-parameter-build.dynamodb", _record)
    if entry not in handlers.BUILTIN_HANDLERS:
        handlers.BUILTIN_HANDLERS.append(entry)


def read_units(path: Path) -> dict[str, tuple[float, float]]:
    """The meter file summed: operation -> (write units, read units)."""
    totals: dict[str, tuple[float, float]] = {}
    if not path.exists():
        return totals
    for line in path.read_text().splitlines():
        operation, writes, reads = line.split()
        before = totals.get(operation, (0.0, 0.0))
        totals[operation] = (before[0] + float(writes), before[1] + float(reads))
    return totals


def write_sitecustomize(directory: Path) -> Path:
    """A ``sitecustomize.py`` in ``directory`` that loads this file alone and installs it."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / "sitecustomize.py"
    target.write_text(
        "import importlib.util\n"
        f"_spec = importlib.util.spec_from_file_location('_bench_meter', {str(Path(__file__))!r})\n"
        "_meter = importlib.util.module_from_spec(_spec)\n"
        "_spec.loader.exec_module(_meter)\n"
        "_meter.install()\n"
    )
    return target


# ---------------------------------------------------------------- CPU of a process tree

_TICKS = os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """The pids of ``pid``'s live children (every thread's)."""
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += [int(c) for c in (task / "children").read_text().split()]
    except OSError:
        pass
    return found


def _own_and_reaped(pid: int) -> int:
    """Clock ticks of ``pid`` (all threads) and of the children it has reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    fields = stat[stat.rindex(")") + 2 :].split()
    return sum(int(value) for value in fields[11:15])  # utime stime cutime cstime


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and every descendant, live or reaped (Linux ``/proc``).

    A reaped child's time moves into its parent's ``cutime``, so the sum over live processes of
    their own and reaped time counts every process once: the difference of two readings is the
    tree's CPU in between, even across children that ended.
    """
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        total += _own_and_reaped(current)
        pending += children(current)
    return total / _TICKS
