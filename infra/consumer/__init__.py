"""The Lambda path: one SQS record through decode, resolve, gate, claim, run, report.

The consumer of a whole SQS event (:mod:`~infra.consumer.batch`), the pipeline
(:mod:`~infra.consumer.pipeline`), what it talks to as Protocols (:mod:`~infra.consumer.seams`:
claims, rate limiter, result writer, queue) and its steps: record bodies
(:mod:`~infra.consumer.bodies`), the gate (:mod:`~infra.consumer.gate`), Celery's tracer under
time limits (:mod:`~infra.consumer.runner`, :mod:`~infra.consumer.timelimits`), a worker's
bookkeeping of each run (:mod:`~infra.consumer.worker_state`), the memory guard
(:mod:`~infra.consumer.memory`), hand-backs (:mod:`~infra.consumer.handback`), unknown tasks
(:mod:`~infra.consumer.unknown`), per-record metrics
(:mod:`~infra.consumer.record_metrics`), a batch's deferred outcomes
(:mod:`~infra.consumer.settlement`), the per-container wiring (:mod:`~infra.consumer.runtime`) and
the Lambda entry point (:mod:`~infra.consumer.handler`).

May import: :mod:`infra.core`, :mod:`infra.wire`, :mod:`infra.store`.
"""

__all__ = [
    "batch",
    "bodies",
    "gate",
    "handback",
    "handler",
    "memory",
    "pipeline",
    "record_metrics",
    "runner",
    "runtime",
    "seams",
    "settlement",
    "timelimits",
    "unknown",
    "worker_state",
]
