"""The scheduled tick's wiring: entries, store and publisher, built once per container.

``handlers.beat`` calls :func:`run_tick`; the local tooling and the tests build a
:class:`~infra.beat.engine.Beat` with :func:`beat_for_app` and their own clock.
"""

from __future__ import annotations

import time
from functools import cache
from typing import Any, Final

from celery.beat import BeatLazyFunc

from infra.beat.engine import Beat, Entry, Publisher, entries_of
from infra.beat.report import TickReport, iso
from infra.beat.state import DynamoDBBeatState
from infra.core import aws
from infra.core.apps import load_app
from infra.core.errors import ScheduleError
from infra.core.observability import (
    METRIC_BEAT_FAILED,
    METRIC_BEAT_PUBLISHED,
    METRIC_BEAT_SKIPPED,
    MetricUnit,
    logger,
    metrics,
)
from infra.core.settings import Settings

__all__ = ["DEADLINE_MARGIN_SECONDS", "app_publisher", "beat_for_app", "run_tick", "scheduler"]

DEADLINE_MARGIN_SECONDS: Final = 5.0
"""No slot is started this close to the invocation's timeout (one publish and one give-back)."""


def _lazy(value: Any) -> Any:
    """``BeatLazyFunc`` arguments are evaluated at publish time, as ``celery beat`` does."""
    return value() if isinstance(value, BeatLazyFunc) else value


def app_publisher(app: Any) -> Publisher:
    """Publish an entry as ``celery beat`` does: the registered task's ``apply_async`` (its own
    options and routes) or ``send_task``, with the entry's options and beat's header.
    """

    def publish(entry: Entry, task_id: str) -> None:
        options = dict(entry.options)
        options["headers"] = {**(options.get("headers") or {}), "celery_beat_task": True}
        options["task_id"] = task_id  # the slot's id, so a duplicate publish runs once
        args = [_lazy(value) for value in entry.args]
        kwargs = {key: _lazy(value) for key, value in entry.kwargs.items()}
        task = app.tasks.get(entry.task)
        if task is not None:
            task.apply_async(args, kwargs, **options)
        else:
            app.send_task(entry.task, args, kwargs, **options)

    return publish


def beat_for_app(app: Any, settings: Settings, **overrides: Any) -> Beat:
    """The app's beat over the results table (``overrides``: e.g. a test's ``clock``).

    Raises:
        ConfigurationError: an entry of ``beat_schedule`` names no task or schedule.
    """
    parts: dict[str, Any] = {
        "entries": entries_of(app),
        "state": DynamoDBBeatState(aws.client("dynamodb", settings), settings.results_table),
        "publish": app_publisher(app),
        "catchup_seconds": settings.beat_catchup_seconds,
    }
    return Beat(**{**parts, **overrides})


@cache
def scheduler() -> Beat:
    """This container's beat, built on the first tick (never at import).

    Raises:
        Exception: the app cannot be loaded (a failed load is retried on the next tick).
    """
    settings = Settings.from_env()
    return beat_for_app(load_app(settings), settings)


def _log(report: TickReport) -> None:
    for fired in report.fired:
        logger.info(
            "published scheduled slot",
            extra={"entry": fired.entry, "slot": iso(fired.slot), "task_id": fired.task_id},
        )
    for skipped in report.skipped:
        logger.warning(
            "skipped slots older than the catch-up window",
            extra={
                "entry": skipped.entry,
                "count": skipped.count,
                "first": skipped.first and iso(skipped.first),
                "through": skipped.through and iso(skipped.through),
            },
        )
    for failed in report.failed:
        retried = "the next tick retries it" if failed.released else "the slot is lost"
        logger.error(
            f"scheduled slot not published; {retried}",
            extra={
                "entry": failed.entry,
                "slot": failed.slot and iso(failed.slot),
                "error": failed.error,
            },
        )
    for deferred in report.deferred:
        logger.warning(
            "deadline near: slots left for the next tick",
            extra={"entry": deferred.entry, "slots": len(deferred.slots)},
        )


def run_tick(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """One tick for an EventBridge scheduled event; the report as the response.

    The tick evaluates the clock, not the event's ``time``: a late or retried invocation then
    publishes what is due now, and catch-up covers what it missed.

    Raises:
        ScheduleError: some slot could not be published (logged; given back when possible).
        StoreError: the records could not be read (nothing was published).
    """
    logger.append_keys(scheduled_time=event.get("time"))
    deadline = time.time() + context.get_remaining_time_in_millis() / 1000
    report = scheduler().tick(deadline=deadline - DEADLINE_MARGIN_SECONDS)
    _log(report)
    metrics.add_metric(name=METRIC_BEAT_PUBLISHED, unit=MetricUnit.Count, value=len(report.fired))
    skipped = sum(s.count for s in report.skipped)
    metrics.add_metric(name=METRIC_BEAT_SKIPPED, unit=MetricUnit.Count, value=skipped)
    metrics.add_metric(name=METRIC_BEAT_FAILED, unit=MetricUnit.Count, value=len(report.failed))
    if report.failed:
        names = ", ".join(sorted({f.entry for f in report.failed}))
        raise ScheduleError(f"{len(report.failed)} scheduled slot(s) not published: {names}")
    return report.as_dict()
