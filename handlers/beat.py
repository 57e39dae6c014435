"""Lambda entry point for the EventBridge schedule: publish the ``beat_schedule`` slots now due."""

from __future__ import annotations

from typing import Any

from infra.beat.runtime import run_tick
from infra.core.observability import logger, metrics


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """One scheduled tick; returns what it published, skipped and left for the next tick."""
    return run_tick(event, context)
