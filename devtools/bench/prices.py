"""Dollars per million tasks from what a consumer spent: published AWS prices, us-east-1.

Each price is a named constant with where it is published. Pure arithmetic: the bench measures,
:func:`cost_per_million` prices.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

__all__ = [
    "CLOUDWATCH_LOGS_INGEST_PER_GB",
    "DYNAMODB_READ_UNIT",
    "DYNAMODB_WRITE_UNIT",
    "FARGATE_VCPU_SECOND",
    "LAMBDA_GB_SECOND",
    "LAMBDA_REQUEST",
    "SQS_REQUEST",
    "Cost",
    "Spend",
    "cost_per_million",
    "function_sizing",
]

# Prices as published for us-east-1, read 2025-07 (on-demand, after the free tiers).
# https://aws.amazon.com/lambda/pricing/ -- per GB-second of billed duration, by architecture,
# and per invocation.
LAMBDA_GB_SECOND = {"x86_64": 0.0000166667, "arm64": 0.0000133334}
LAMBDA_REQUEST = 0.20 / 1_000_000
# https://aws.amazon.com/sqs/pricing/ -- standard queue, per request (each 64 KB chunk).
SQS_REQUEST = 0.40 / 1_000_000
# https://aws.amazon.com/dynamodb/pricing/on-demand/ -- since 2024-11-01; a transactional item
# costs two units (counted by devtools.bench.meter, not here).
DYNAMODB_WRITE_UNIT = 0.625 / 1_000_000
DYNAMODB_READ_UNIT = 0.125 / 1_000_000
# https://aws.amazon.com/cloudwatch/pricing/ -- Logs, standard class, per GB ingested.
CLOUDWATCH_LOGS_INGEST_PER_GB = 0.50
# https://aws.amazon.com/fargate/pricing/ -- Linux x86, per vCPU-hour: a worker's CPU seconds
# priced as if its container were always busy (a floor: idle time and memory are extra).
FARGATE_VCPU_SECOND = 0.04048 / 3600
GIGABYTE = 1024**3
MILLION = 1_000_000


@dataclass(frozen=True, slots=True)
class Spend:
    """What a consumer spent on ``tasks`` tasks, in billing units."""

    tasks: int
    sqs_requests: int = 0
    write_units: float = 0.0
    read_units: float = 0.0
    log_bytes: int = 0
    lambda_billed_ms: float = 0.0
    lambda_invocations: int = 0
    lambda_memory_mb: int = 0
    lambda_architecture: str = "x86_64"
    worker_cpu_seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class Cost:
    """Dollars per million tasks, by service."""

    compute: float
    sqs: float
    dynamodb: float
    logs: float

    @property
    def total(self) -> float:
        return self.compute + self.sqs + self.dynamodb + self.logs

    def as_dict(self) -> dict[str, float]:
        return {**asdict(self), "total": self.total}


def cost_per_million(spend: Spend) -> Cost:
    """The dollars a million tasks cost at ``spend``'s rate per task."""
    scale = MILLION / spend.tasks
    gb_seconds = spend.lambda_billed_ms / 1000 * spend.lambda_memory_mb / 1024
    compute = (
        gb_seconds * LAMBDA_GB_SECOND[spend.lambda_architecture]
        + spend.lambda_invocations * LAMBDA_REQUEST
        + spend.worker_cpu_seconds * FARGATE_VCPU_SECOND
    )
    return Cost(
        compute=compute * scale,
        sqs=spend.sqs_requests * SQS_REQUEST * scale,
        dynamodb=(spend.write_units * DYNAMODB_WRITE_UNIT + spend.read_units * DYNAMODB_READ_UNIT)
        * scale,
        logs=spend.log_bytes / GIGABYTE * CLOUDWATCH_LOGS_INGEST_PER_GB * scale,
    )


def function_sizing(template: Mapping[str, Any], function: str) -> tuple[int, str]:
    """(MemorySize, architecture) of ``function`` in the template, its Globals as defaults."""
    defaults = template.get("Globals", {}).get("Function", {})
    own = template.get("Resources", {}).get(function, {}).get("Properties", {})
    memory = int(own.get("MemorySize", defaults.get("MemorySize", 128)))
    architectures = own.get("Architectures", defaults.get("Architectures", ["x86_64"]))
    return memory, str(architectures[0])
