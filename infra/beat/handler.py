"""The Lambda entry point for the EventBridge schedule: ``Handler: infra.beat.handler.handler``.

Publishes the ``beat_schedule`` slots now due for the app ``CELERY_APP`` names. It ships in the
installed package, so a project of its own names it in its template; this repository's template
names the thin re-export ``handlers.beat.handler``.
"""

from __future__ import annotations

from typing import Any

from infra.beat.runtime import run_tick
from infra.core.observability import logger, metrics

__all__ = ["handler"]


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """One scheduled tick; returns what it published, skipped and left for the next tick."""
    return run_tick(event, context)
