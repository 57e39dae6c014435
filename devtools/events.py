"""Regenerate ``events/``: real Lambda SQS events whose bodies real Celery produced.

``make events`` (``python -m devtools.events``) starts the embedded emulator, publishes the
brief's examples with plain ``apply_async``, receives them exactly as the event source mapping
does and writes one event per file. The files work with ``sam local invoke -e events/<file>``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from devtools.cloud.deploy import Deployment, EventSource
from devtools.cloud.event_source import build_event
from infra.core import aws

__all__ = ["EVENTS_DIR", "generate"]

EVENTS_DIR = Path(__file__).resolve().parents[1] / "events"


def _examples() -> dict[str, Callable[[], list[Any]]]:
    """Event file name → how to publish its records."""
    from tasks import add, always_fails, dump_context, error_handler, flaky, upload_files

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


def generate(deployment: Deployment, out_dir: Path = EVENTS_DIR) -> list[Path]:
    """Publish every example on the deployment's queues and write its event; the files."""
    source = _celery_source(deployment)
    sqs = aws.client("sqs")
    written = []
    for name, publish in _examples().items():
        count = len(publish())
        event = build_event(_receive_all(sqs, source.queue_url, count), source, deployment.region)
        path = out_dir / name
        path.write_text(json.dumps(event, indent=2) + "\n")
        written.append(path)
    return written


def main() -> None:
    """Entry point of ``make events``."""
    from devtools.cli import local_cloud, point_app_at
    from tasks import app

    with local_cloud() as deployment:
        point_app_at(app, deployment)
        for path in generate(deployment):
            print(f"wrote {path.relative_to(EVENTS_DIR.parent)}", file=sys.stderr)


if __name__ == "__main__":
    main()
