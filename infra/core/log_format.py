"""What one JSON log line of either consumer carries, and what it leaves to CloudWatch.

CloudWatch Logs bills every byte ingested, and it already records, for every event, when it was
written (``@timestamp``) and which function or service wrote it (the log group). Powertools'
default line repeats both, plus where in the code it was written; :class:`LeanLines` writes
neither, so a small task's outcome line is its ids, name, state, duration and queue.
"""

from __future__ import annotations

import logging
from typing import Any, Final, cast

from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter
from aws_lambda_powertools.logging.types import LogRecord

__all__ = ["CONSTANT_KEYS", "QUIET_KEYS", "LeanLines"]

CONSTANT_KEYS: Final = ("service", "sampling_rate")
"""Powertools' keys that are the same on every line of a deployment: never written."""
QUIET_KEYS: Final = ("message_id",)
"""Record keys a line below WARNING goes without (a ``receive_count`` of 1 too)."""
_LEVELS: Final = logging.getLevelNamesMapping()


class LeanLines(LambdaPowertoolsFormatter):
    """Powertools' JSON lines with ``level`` and ``message`` first and no ``timestamp``,
    ``location`` or :data:`CONSTANT_KEYS`.

    A line below WARNING also goes without :data:`QUIET_KEYS` and a ``receive_count`` of 1: the
    task id keys a task that went well, and a receive count is news only when SQS delivered the
    message again. A WARNING or ERROR line keeps every record key (the SQS message id, to find
    the message in its queue or DLQ; the receive count, to tell a first attempt).
    """

    def __init__(self) -> None:
        # No X-Ray id on every line (constant per invocation: on Lambda's REPORT line and the
        # DEBUG batch line), the traceback once as text (no `stack_trace` copy of it).
        super().__init__(
            log_record_order=["level", "message"], serialize_stacktrace=False, xray_trace_id=None
        )

    @staticmethod
    def _build_default_keys() -> dict[str, str]:
        return {"level": "%(levelname)s"}

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """Nothing: no key shows the time, so none is formatted for each line."""
        return ""

    def serialize(self, log: LogRecord) -> str:
        """The line, without the keys this formatter leaves out."""
        line = cast(dict[str, Any], log)
        for key in CONSTANT_KEYS:
            line.pop(key, None)
        if _LEVELS.get(str(line.get("level")), logging.WARNING) < logging.WARNING:
            for key in QUIET_KEYS:
                line.pop(key, None)
            if line.get("receive_count") == "1":
                del line["receive_count"]
        return super().serialize(line)
