"""The bench's figures: one row per consumer, the table, the JSON document, DESIGN's budgets.

Pure: rows in, text out (nothing here measures). Ratios are against plain Celery's best row of
the same run; budgets are printed beside the figures, never asserted.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

from devtools.bench import prices
from devtools.bench.prices import Cost, Spend, cost_per_million

__all__ = ["Budget", "Row", "budgets", "document", "emit", "render"]

LAMBDA_KINDS = frozenset({"lambda", "handler", "noop"})
"""Rows billed as Lambda (GB-seconds, invocations); the others as a worker's vCPU time."""


@dataclass(frozen=True, slots=True)
class Row:
    """One consumer's drain: what it did and what it spent doing it."""

    consumer: str
    kind: str
    """``plain``, ``worker``, ``lambda``, ``handler`` or ``noop``."""
    tasks: int
    seconds: float
    counts: Mapping[str, int] = field(default_factory=dict)
    """Billed AWS requests by ``service:Operation`` (the event source's included)."""
    unbilled: Mapping[str, int] = field(default_factory=dict)
    """Requests only the emulator makes (its ``until_empty`` check)."""
    cpu_seconds: float = 0.0
    """The consumer's CPU: a worker's whole process tree; on the Lambda path the handler's."""
    event_source_cpu_seconds: float = 0.0
    init_cpu_seconds: float = 0.0
    """On the Lambda path, each poller's first invocation's setup (beyond its records' CPU)."""
    billed_ms: float = 0.0
    invocations: int = 0
    emulator_cpu_seconds: float = 0.0
    log_bytes: int = 0
    units: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    """DynamoDB (write units, read units) by operation."""
    memory_mb: int = 0
    architecture: str = "x86_64"

    @property
    def rate(self) -> float:
        """Tasks per second."""
        return self.tasks / self.seconds if self.seconds > 0 else 0.0

    def per_task(self) -> dict[str, float]:
        """Billed requests per task by operation, the most frequent first."""
        rates = {op: n / self.tasks for op, n in self.counts.items() if n}
        return dict(sorted(rates.items(), key=lambda item: (-item[1], item[0])))

    @property
    def requests_per_task(self) -> float:
        return sum(self.per_task().values())

    @property
    def cpu_ms(self) -> float:
        return self.cpu_seconds * 1000 / self.tasks

    @property
    def log_bytes_per_task(self) -> float:
        return self.log_bytes / self.tasks

    def spend(self) -> Spend:
        """What it spent, in billing units."""
        lambda_billed = self.kind in LAMBDA_KINDS
        return Spend(
            tasks=self.tasks,
            sqs_requests=sum(n for op, n in self.counts.items() if op.startswith("sqs:")),
            write_units=sum(w for w, _ in self.units.values()),
            read_units=sum(r for _, r in self.units.values()),
            log_bytes=self.log_bytes,
            lambda_billed_ms=self.billed_ms if lambda_billed else 0.0,
            lambda_invocations=self.invocations if lambda_billed else 0,
            lambda_memory_mb=self.memory_mb if lambda_billed else 0,
            lambda_architecture=self.architecture,
            worker_cpu_seconds=0.0 if lambda_billed else self.cpu_seconds,
        )

    def cost(self) -> Cost:
        """Dollars per million tasks."""
        return cost_per_million(self.spend())

    def as_dict(self) -> dict[str, Any]:
        per = 1000 / self.tasks
        return {
            "consumer": self.consumer,
            "kind": self.kind,
            "tasks": self.tasks,
            "seconds": round(self.seconds, 3),
            "tasks_per_second": round(self.rate, 2),
            "requests_per_task": round(self.requests_per_task, 4),
            "requests_per_task_by_operation": {k: round(v, 4) for k, v in self.per_task().items()},
            "requests": dict(self.counts),
            "emulator_only_requests": dict(self.unbilled),
            "cpu_ms_per_task": round(self.cpu_ms, 3),
            "event_source_cpu_ms_per_task": round(self.event_source_cpu_seconds * per, 3),
            "first_invocation_setup_cpu_ms": round(self.init_cpu_seconds * 1000, 1),
            "billed_ms_per_task": round(self.billed_ms / self.tasks, 3),
            "invocations": self.invocations,
            "emulator_cpu_ms_per_task": round(self.emulator_cpu_seconds * per, 3),
            "log_bytes_per_task": round(self.log_bytes_per_task, 1),
            "dynamodb_units_per_task": {
                "write": round(self.spend().write_units / self.tasks, 4),
                "read": round(self.spend().read_units / self.tasks, 4),
            },
            "dynamodb_units_per_task_by_operation": {
                op: [round(w / self.tasks, 4), round(r / self.tasks, 4)]
                for op, (w, r) in sorted(self.units.items())
            },
            "dollars_per_million_tasks": {k: round(v, 4) for k, v in self.cost().as_dict().items()},
        }


def best_plain(rows: Iterable[Row]) -> Row:
    """Plain Celery's fastest row (the baseline)."""
    return max((row for row in rows if row.kind == "plain"), key=lambda row: row.rate)


def _ops(row: Row, limit: int = 4) -> str:
    items = [(op.split(":", 1)[1], rate) for op, rate in row.per_task().items()]
    shown = [f"{op} {rate:.2f}" for op, rate in items[:limit]]
    rest = sum(rate for _, rate in items[limit:])
    return ", ".join(shown) + (f", other {rest:.2f}" if rest >= 0.005 else "")


def _cpu(row: Row) -> str:
    if row.kind in {"lambda", "noop"}:
        init = f", +{row.init_cpu_seconds * 1000:.0f} ms init" if row.init_cpu_seconds else ""
        return f"{row.cpu_ms:.1f} (+{row.event_source_cpu_seconds * 1000 / row.tasks:.1f} ES{init})"
    return f"{row.cpu_ms:.1f}"


def render(rows: list[Row]) -> Table:
    """The one table: every consumer of the run, side by side."""
    best = best_plain(rows)
    table = Table(title=f"drain of {best.tasks} tasks.add per consumer, one run, embedded moto")
    columns = (
        "consumer", "tasks/s", "x plain", "req/task", "requests/task by operation",
        "CPU ms/task", "billed ms/task", "moto ms/task", "log B/task", "$/M tasks",
        "compute / SQS / DynamoDB / logs",
    )  # fmt: skip
    for column in columns:
        left = column in {"consumer", "requests/task by operation", columns[-1]}
        table.add_column(column, justify="left" if left else "right", overflow="fold")
    for row in rows:
        cost = row.cost()
        table.add_row(
            row.consumer + (" (best)" if row is best else ""),
            f"{row.rate:.1f}",
            f"{row.rate / best.rate:.2f}",
            f"{row.requests_per_task:.2f}",
            _ops(row),
            _cpu(row),
            f"{row.billed_ms / row.tasks:.1f}" if row.invocations else "—",
            f"{row.emulator_cpu_seconds * 1000 / row.tasks:.1f}",
            f"{row.log_bytes_per_task:,.0f}",
            f"{cost.total:.2f}",
            f"{cost.compute:.2f} / {cost.sqs:.2f} / {cost.dynamodb:.2f} / {cost.logs:.2f}",
        )
    return table


@dataclass(frozen=True, slots=True)
class Budget:
    """One line of DESIGN's performance budget and what this run measured."""

    name: str
    limit: float
    measured: float
    at_most: bool
    """True when the measure must stay at or below the limit, False at or above."""
    detail: str = ""

    @property
    def met(self) -> bool:
        return self.measured <= self.limit if self.at_most else self.measured >= self.limit

    def line(self) -> str:
        sign = "<=" if self.at_most else ">="
        verdict = "met" if self.met else "NOT met"
        measured = f"measured {self.measured:.2f} ({verdict})"
        return f"budget: {self.name} {sign} {self.limit:g} -- {measured}{self.detail}"


def budgets(rows: list[Row]) -> list[Budget]:
    """DESIGN's budgets (and issue 16's for the worker path) against this run's rows; those of a
    consumer that has no row (it failed) are left out."""
    best = best_plain(rows)
    by_kind = {row.kind: row for row in rows}
    found: list[Budget] = []
    if lam := by_kind.get("lambda"):
        found += _lambda_budgets(lam, best, by_kind.get("handler"), by_kind.get("noop"))
    if worker := by_kind.get("worker"):
        rate, cpu = worker.rate / best.rate, worker.cpu_ms / best.cpu_ms
        found += [
            Budget("worker path tasks/s, x plain Celery's", 1.0, rate, False),
            Budget("worker path CPU/task, x plain Celery's", 1.2, cpu, True),
            Budget("worker path AWS requests/task", 3.2, worker.requests_per_task, True,
                   f"; plain Celery {best.requests_per_task:.2f}"),
            Budget("worker path log bytes/task", 300, worker.log_bytes_per_task, True),
        ]  # fmt: skip
    return found


def _lambda_budgets(lam: Row, best: Row, alone: Row | None, noop: Row | None) -> list[Budget]:
    cap = f"; do-nothing handler: {noop.rate / best.rate:.2f}x (moto's cap)" if noop else ""
    cpu = f"; handler alone {alone.cpu_ms / best.cpu_ms:.2f}x" if alone else ""
    requests = f"; handler alone {alone.requests_per_task:.2f}" if alone else ""
    logs = f"; handler alone {alone.log_bytes_per_task:.0f}" if alone else ""
    return [
        Budget("Lambda path CPU/task, x plain Celery's", 0.5, lam.cpu_ms / best.cpu_ms, True, cpu),
        Budget("Lambda path drain, x plain Celery's best", 1.5, lam.rate / best.rate, False, cap),
        Budget("Lambda path AWS requests/task (event source counted)", 0.45,
               lam.requests_per_task, True,
               f"{requests}; plain Celery {best.requests_per_task:.2f}"),
        Budget("Lambda path log bytes/task", 300, lam.log_bytes_per_task, True,
               f"{logs}; plain Celery {best.log_bytes_per_task:.0f}"),
    ]  # fmt: skip


NOTES = (
    "CPU ms/task: a worker's whole process tree; on the Lambda path the handler's own (+ the "
    "event-source emulator's, ES: on AWS that is the service's, not billed; and each "
    "poller's first-invocation setup, in all). billed ms/task: "
    "each invocation's wall time rounded up to the ms (on moto). Requests from the consumer's "
    "start to an empty queue; the event source's ReceiveMessage and DeleteMessageBatch counted, "
    "its until_empty GetQueueAttributes not. Log bytes: the consumer's stdout and stderr at the "
    "default level. $: Lambda GB-s at the template's memory and architecture plus invocations; "
    "a worker's CPU seconds as Fargate vCPU time (a floor); SQS requests; DynamoDB units per "
    "item (transactions twice); CloudWatch Logs ingest. Cold import: `lambda bench-import`; "
    "flatness: compare two --tasks runs."
)


def document(rows: list[Row], tasks: int) -> dict[str, Any]:
    """The run as one JSON-able document."""
    best = best_plain(rows)
    return {
        "tasks": tasks,
        "baseline": best.consumer,
        "rows": [{**row.as_dict(), "x_plain": round(row.rate / best.rate, 3)} for row in rows],
        "budgets": [
            {"budget": b.name, "limit": b.limit, "measured": round(b.measured, 4), "met": b.met}
            for b in budgets(rows)
        ],
        "prices": {
            "lambda_gb_second": prices.LAMBDA_GB_SECOND,
            "lambda_request": prices.LAMBDA_REQUEST,
            "sqs_request": prices.SQS_REQUEST,
            "dynamodb_write_unit": prices.DYNAMODB_WRITE_UNIT,
            "dynamodb_read_unit": prices.DYNAMODB_READ_UNIT,
            "cloudwatch_logs_ingest_per_gb": prices.CLOUDWATCH_LOGS_INGEST_PER_GB,
            "fargate_vcpu_second": prices.FARGATE_VCPU_SECOND,
        },
    }


def emit(rows: list[Row], tasks: int, *, as_json: bool = False) -> None:
    """Print the table, the notes and the budget lines -- or the JSON document."""
    if as_json:
        json.dump(document(rows, tasks), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    out = Console(width=None if sys.stdout.isatty() else 220)
    out.print(render(rows))
    out.print(NOTES)
    for budget in budgets(rows):
        out.print(budget.line(), highlight=False)
