"""Settings resolved once from the environment into a frozen value.

``Settings.from_env`` is pure: it reads a mapping (``os.environ`` in production, a dict in tests),
validates it and returns a :class:`Settings`. Nothing else in the project reads the environment
for these names. :func:`current` is this process's settings, resolved on first use; the objects
built from them (the Lambda pipeline, the scheduled tick, the result backend) are handed theirs
when they are built and pass them down.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from infra.core.errors import ConfigurationError
from infra.core.limits import S3_MAX_PUT_BYTES, SQS_MAX_MESSAGE_BYTES
from infra.core.queues import is_fifo_queue

__all__ = [
    "DEFAULT_APP",
    "DEFAULT_BEAT_CATCHUP_SECONDS",
    "DEFAULT_BROKER_URL",
    "DEFAULT_FIFO_GROUP",
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "DEFAULT_REGION",
    "DEFAULT_RESULTS_BUCKET",
    "DEFAULT_RESULTS_TABLE",
    "DEFAULT_RESULT_FLUSH_MS",
    "DEFAULT_USERS_TABLE",
    "DEFAULT_WORKER_MAX_MEMORY_KIB",
    "MIN_OFFLOAD_THRESHOLD_BYTES",
    "Settings",
    "current",
]

DEFAULT_REGION = "us-east-1"
DEFAULT_APP = "tasks:app"
DEFAULT_BROKER_URL = "sqs://"
DEFAULT_RESULTS_TABLE = "celery-results"
DEFAULT_RESULTS_BUCKET = "celery-results"
DEFAULT_USERS_TABLE = "celery-users"
DEFAULT_MAX_PAYLOAD_BYTES = 64 * 1024 * 1024
"""Largest message body we offload to S3: a consumer holds it, its base64 and the decoded
arguments in memory at once, and a 128 MB Lambda must survive that."""
MIN_OFFLOAD_THRESHOLD_BYTES = 1024
"""Below this an S3 pointer (about 200 bytes) would not be worth a round trip."""
DEFAULT_FIFO_GROUP = "default"
DEFAULT_BEAT_CATCHUP_SECONDS = 15 * 60
DEFAULT_RESULT_FLUSH_MS = 1000
DEFAULT_WORKER_MAX_MEMORY_KIB = 512 * 1024
"""A worker child holding more than this after a task is replaced (Celery's unit: KiB)."""


def _queue_urls(raw: str | None) -> Mapping[str, str]:
    """Parse ``CELERY_QUEUE_URLS``: a JSON object mapping Celery queue names to SQS queue URLs."""
    if not raw:
        return MappingProxyType({})
    try:
        parsed = json.loads(raw)
    except ValueError as exc:
        raise ConfigurationError(f"CELERY_QUEUE_URLS is not valid JSON: {exc}") from exc
    if not isinstance(parsed, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v for k, v in parsed.items()
    ):
        raise ConfigurationError(
            'CELERY_QUEUE_URLS must be a JSON object of {"queue name": "queue URL"} strings'
        )
    for name, url in parsed.items():
        if is_fifo_queue(name) != is_fifo_queue(url):
            raise ConfigurationError(
                f"CELERY_QUEUE_URLS: queue {name!r} and its URL {url!r} disagree on FIFO "
                "(a FIFO queue's name and URL both end in .fifo)"
            )
    return MappingProxyType(dict(parsed))


def _size(name: str, raw: str | None, *, default: int, low: int, high: int) -> int:
    """A whole number (bytes, seconds) within ``low..high``.

    Raises:
        ConfigurationError: not an integer, or out of range.
    """
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a whole number, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigurationError(f"{name} must be between {low} and {high}, got {value}")
    return value


def _flag(raw: str | None, *, default: bool) -> bool:
    """An on/off variable.

    Raises:
        ConfigurationError: a value that is neither.
    """
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "on", "true", "yes"}:
        return True
    if value in {"0", "off", "false", "no"}:
        return False
    raise ConfigurationError(f"expected on/off, got {raw!r}")


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the runtime needs to know about where it runs."""

    app: str = DEFAULT_APP
    endpoint_url: str | None = None
    region: str = DEFAULT_REGION
    broker_url: str = DEFAULT_BROKER_URL
    queue_urls: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    results_table: str = DEFAULT_RESULTS_TABLE
    results_bucket: str = DEFAULT_RESULTS_BUCKET
    users_table: str = DEFAULT_USERS_TABLE
    service_endpoints: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    claims: bool = True
    """Claim task ids before running them (``CELERY_LAMBDA_CLAIMS=off`` disables it)."""
    offload_threshold: int = SQS_MAX_MESSAGE_BYTES
    """A message body larger than this goes to S3 and an extended-client pointer is sent."""
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    """A message body larger than this is refused at publish."""
    fifo_group: str = DEFAULT_FIFO_GROUP
    """``MessageGroupId`` for FIFO messages whose publisher names none."""
    tenant_header: str | None = None
    """On standard queues, the message header whose value is sent as the ``MessageGroupId``
    (SQS fair queues); None sends no group id unless ``apply_async`` names one."""
    batch_publish: bool = True
    """Publish a group's tasks with SendMessageBatch."""
    result_flush_ms: int = DEFAULT_RESULT_FLUSH_MS
    """On the Lambda path, the longest a finished task's outcome waits to be written together
    with others of its batch (0: each is written as its task ends, an UpdateItem per task)."""
    beat_catchup_seconds: int = DEFAULT_BEAT_CATCHUP_SECONDS
    """The scheduled tick publishes slots it missed up to this far back, and skips older ones."""
    worker_max_tasks_per_child: int = 0
    """A worker child is replaced after this many tasks (0: never)."""
    worker_max_memory_per_child: int = DEFAULT_WORKER_MAX_MEMORY_KIB
    """A worker child over this resident memory (KiB) after a task is replaced (0: never)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Resolve settings from ``env`` (default ``os.environ``).

        Raises:
            ConfigurationError: a variable is set to something that cannot work.
        """
        env = os.environ if env is None else env
        app = env.get("CELERY_APP") or DEFAULT_APP
        if ":" not in app:
            raise ConfigurationError(f"CELERY_APP must be 'module:attribute', got {app!r}")
        prefix = "AWS_ENDPOINT_URL_"
        return cls(
            app=app,
            endpoint_url=env.get("AWS_ENDPOINT_URL") or None,
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or DEFAULT_REGION,
            broker_url=env.get("CELERY_BROKER_URL") or DEFAULT_BROKER_URL,
            queue_urls=_queue_urls(env.get("CELERY_QUEUE_URLS")),
            results_table=env.get("RESULTS_TABLE") or DEFAULT_RESULTS_TABLE,
            results_bucket=env.get("RESULTS_BUCKET") or DEFAULT_RESULTS_BUCKET,
            users_table=env.get("USERS_TABLE") or DEFAULT_USERS_TABLE,
            claims=_flag(env.get("CELERY_LAMBDA_CLAIMS"), default=True),
            offload_threshold=_size(
                "CELERY_LAMBDA_OFFLOAD_BYTES",
                env.get("CELERY_LAMBDA_OFFLOAD_BYTES"),
                default=SQS_MAX_MESSAGE_BYTES,
                low=MIN_OFFLOAD_THRESHOLD_BYTES,
                high=SQS_MAX_MESSAGE_BYTES,
            ),
            max_payload_bytes=_size(
                "CELERY_LAMBDA_MAX_PAYLOAD_BYTES",
                env.get("CELERY_LAMBDA_MAX_PAYLOAD_BYTES"),
                default=DEFAULT_MAX_PAYLOAD_BYTES,
                low=SQS_MAX_MESSAGE_BYTES,
                high=S3_MAX_PUT_BYTES,
            ),
            fifo_group=env.get("CELERY_LAMBDA_FIFO_GROUP") or DEFAULT_FIFO_GROUP,
            tenant_header=(env.get("CELERY_LAMBDA_TENANT_HEADER") or "").strip() or None,
            batch_publish=_flag(env.get("CELERY_LAMBDA_BATCH_PUBLISH"), default=True),
            worker_max_tasks_per_child=_size(
                "CELERY_WORKER_MAX_TASKS_PER_CHILD",
                env.get("CELERY_WORKER_MAX_TASKS_PER_CHILD"),
                default=0,
                low=0,
                high=10**9,
            ),
            worker_max_memory_per_child=_size(
                "CELERY_WORKER_MAX_MEMORY_PER_CHILD",
                env.get("CELERY_WORKER_MAX_MEMORY_PER_CHILD"),
                default=DEFAULT_WORKER_MAX_MEMORY_KIB,
                low=0,
                high=1024**3,
            ),
            result_flush_ms=_size(
                "CELERY_LAMBDA_RESULT_FLUSH_MS",
                env.get("CELERY_LAMBDA_RESULT_FLUSH_MS"),
                default=DEFAULT_RESULT_FLUSH_MS,
                low=0,
                high=15 * 60 * 1000,
            ),
            beat_catchup_seconds=_size(
                "CELERY_LAMBDA_BEAT_CATCHUP",
                env.get("CELERY_LAMBDA_BEAT_CATCHUP"),
                default=DEFAULT_BEAT_CATCHUP_SECONDS,
                low=0,
                high=7 * 24 * 3600,
            ),
            service_endpoints=MappingProxyType(
                {k[len(prefix) :].lower(): v for k, v in env.items() if k.startswith(prefix) and v}
            ),
        )

    def endpoint_for(self, service: str) -> str | None:
        """The endpoint for ``service``: ``AWS_ENDPOINT_URL_<SERVICE>`` first, as boto3 does."""
        return self.service_endpoints.get(service.lower()) or self.endpoint_url


@functools.cache
def current() -> Settings:
    """This process's settings, resolved from ``os.environ`` on first use.

    Tools and tests that re-point the process at another cloud forget them with
    ``current.cache_clear()`` (:func:`infra.core.aws.clear_clients` does it too).

    Raises:
        ConfigurationError: as :meth:`Settings.from_env`.
    """
    return Settings.from_env()
