"""The Lambda path: one SQS record through decode, resolve, gate, claim, run, report.

The pipeline (:mod:`~infra.consumer.pipeline`) and its steps: record bodies
(:mod:`~infra.consumer.bodies`), the gate (:mod:`~infra.consumer.gate`), Celery's tracer under
time limits (:mod:`~infra.consumer.runner`, :mod:`~infra.consumer.timelimits`), the memory guard
(:mod:`~infra.consumer.memory`), hand-backs (:mod:`~infra.consumer.handback`), per-record metrics
(:mod:`~infra.consumer.record_metrics`), a batch's deferred outcomes
(:mod:`~infra.consumer.settlement`) and the per-container wiring (:mod:`~infra.consumer.runtime`).

May import: :mod:`infra.core`, :mod:`infra.wire`, :mod:`infra.store`.
"""

__all__ = [
    "bodies",
    "gate",
    "handback",
    "memory",
    "pipeline",
    "record_metrics",
    "runner",
    "runtime",
    "settlement",
    "timelimits",
]
