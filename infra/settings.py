"""Settings resolved once from the environment into a frozen value.

``Settings.from_env`` is pure: it reads a mapping (``os.environ`` in production, a dict in tests),
validates it and returns a :class:`Settings`. Nothing else in the project reads the environment
for these names.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from infra.errors import ConfigurationError

__all__ = ["DEFAULT_REGION", "Settings"]

DEFAULT_REGION = "us-east-1"
DEFAULT_APP = "tasks:app"
DEFAULT_BROKER_URL = "sqs://"
DEFAULT_RESULTS_TABLE = "celery-results"
DEFAULT_RESULTS_BUCKET = "celery-results"
DEFAULT_USERS_TABLE = "celery-users"


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
        if name.endswith(".fifo") != url.endswith(".fifo"):
            raise ConfigurationError(
                f"CELERY_QUEUE_URLS: queue {name!r} and its URL {url!r} disagree on FIFO "
                "(a FIFO queue's name and URL both end in .fifo)"
            )
    return MappingProxyType(dict(parsed))


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
            service_endpoints=MappingProxyType(
                {k[len(prefix) :].lower(): v for k, v in env.items() if k.startswith(prefix) and v}
            ),
        )

    def endpoint_for(self, service: str) -> str | None:
        """The endpoint for ``service``: ``AWS_ENDPOINT_URL_<SERVICE>`` first, as boto3 does."""
        return self.service_endpoints.get(service.lower()) or self.endpoint_url
