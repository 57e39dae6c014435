"""Celery beat without a beat server: the scheduled tick's engine and its state.

Which slots are due (:mod:`~infra.beat.slots`), the tick (:mod:`~infra.beat.engine`) and its
report (:mod:`~infra.beat.report`), the last fired slot per entry (:mod:`~infra.beat.state`),
the per-container wiring (:mod:`~infra.beat.runtime`) and the Lambda entry point
(:mod:`~infra.beat.handler`).

May import: :mod:`infra.core`, :mod:`infra.wire`, :mod:`infra.store`.
"""

__all__ = [
    "engine",
    "handler",
    "report",
    "runtime",
    "slots",
    "state",
]
