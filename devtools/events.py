"""Regenerate ``events/``: real Lambda SQS events whose bodies real Celery produced.

``make events`` (``python -m devtools.events [APP]``) starts the embedded emulator, publishes the
brief's examples with plain ``apply_async``, receives them exactly as the event source mapping
does and writes one event per file. The files work with ``sam local invoke -e events/<file>``.

The app is named as ``celery -A`` names it (``APP``, else ``CELERY_APP``, else ``tasks:app``) and
its example tasks are found by name (:mod:`devtools.examples`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from celery.app.utils import find_app

from devtools.cloud.deploy import Deployment, EventSource
from devtools.cloud.event_source import build_event
from devtools.cloud.session import local_cloud, point_app_at
from devtools.examples import (
    ADD,
    ALWAYS_FAILS,
    DUMP_CONTEXT,
    ERROR_HANDLER,
    FLAKY,
    UPLOAD_FILES,
    example_tasks,
)
from infra.core import aws
from infra.core.errors import CeleryLambdaError

__all__ = ["DEFAULT_APP", "EVENTS_DIR", "generate", "main"]

EVENTS_DIR = Path(__file__).resolve().parents[1] / "events"
DEFAULT_APP = "tasks:app"


def _examples(app: Any) -> dict[str, Callable[[], list[Any]]]:
    """Event file name → how to publish its records."""
    tasks = example_tasks(app, ADD, ALWAYS_FAILS, DUMP_CONTEXT, ERROR_HANDLER, FLAKY, UPLOAD_FILES)
    add, always_fails, dump_context = tasks[ADD], tasks[ALWAYS_FAILS], tasks[DUMP_CONTEXT]
    error_handler, flaky, upload_files = tasks[ERROR_HANDLER], tasks[FLAKY], tasks[UPLOAD_FILES]
    return {
        "add.json": lambda: [add.delay(4, 4)],
        "examples.json": lambda: [
            add.apply_async((2, 2), link=add.s(16)),
            always_fails.apply_async((1, 2), link_error=error_handler.s()),
            upload_files.apply_async((["a.txt", "b.txt"],), queue="celery"),
            flaky.apply_async(kwargs={"failures": 1}),
            dump_context.apply_async((10, 5), kwargs={}),
        ],
        # DelaySeconds=0: published as a producer without our transport would (no native delay),
        # so the record arrives early and shows the handler's re-delay.
        "countdown.json": lambda: [add.apply_async((5, 5), countdown=60, DelaySeconds=0)],
        "expired.json": lambda: [add.apply_async((1, 1), expires=-1)],
    }


def _receive_all(sqs: Any, url: str, count: int) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    while len(messages) < count:
        batch = sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=1,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not batch:
            raise RuntimeError(f"expected {count} messages on {url}, got {len(messages)}")
        messages.extend(batch)
    sqs.delete_message_batch(
        QueueUrl=url,
        Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
        ],
    )
    return messages


def _celery_source(deployment: Deployment) -> EventSource:
    (source,) = (s for s in deployment.event_sources if s.queue_url.endswith("-celery"))
    return source


def generate(app: Any, deployment: Deployment, out_dir: Path = EVENTS_DIR) -> list[Path]:
    """Publish every example with ``app`` on the deployment's queues and write its event; the files.

    Raises:
        ConfigurationError: the app registers not every example task.
    """
    publishers = _examples(app)
    source = _celery_source(deployment)
    sqs = aws.client("sqs")
    written = []
    for name, publish in publishers.items():
        count = len(publish())
        event = build_event(_receive_all(sqs, source.queue_url, count), source, deployment.region)
        path = out_dir / name
        path.write_text(json.dumps(event, indent=2) + "\n")
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``make events``."""
    parser = argparse.ArgumentParser(prog="python -m devtools.events")
    parser.add_argument(
        "app",
        nargs="?",
        default=os.environ.get("CELERY_APP", DEFAULT_APP),
        help="the Celery app, as `celery -A` takes it (default: $CELERY_APP, else tasks:app)",
    )
    name = parser.parse_args(argv).app
    try:
        app = find_app(name)
    except (ImportError, AttributeError) as exc:
        parser.error(f"cannot load the app {name!r}: {exc}")
    try:
        with local_cloud() as deployment:
            point_app_at(app, deployment)
            for path in generate(app, deployment):
                print(f"wrote {path.relative_to(EVENTS_DIR.parent)}", file=sys.stderr)
    except CeleryLambdaError as exc:
        parser.exit(1, f"{parser.prog}: {exc}\n")


if __name__ == "__main__":
    main()
