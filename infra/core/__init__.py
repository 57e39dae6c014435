"""The ground floor of the engine: what every other part stands on.

Settings resolved once from the environment (:mod:`~infra.core.settings`), the one error tree
(:mod:`~infra.core.errors`), the AWS limits we design around (:mod:`~infra.core.limits`), the one
factory of AWS clients (:mod:`~infra.core.aws`), the metric and log vocabulary
(:mod:`~infra.core.observability`) and what a JSON log line leaves out
(:mod:`~infra.core.log_format`), SQS queue identities (:mod:`~infra.core.queues`: FIFO or
not), user record hooks (:mod:`~infra.core.hooks`), the Celery
settings every served app gets (:mod:`~infra.core.config`), the loader of the served app
(:mod:`~infra.core.apps`) and OpenTelemetry tracing when its extra is installed
(:mod:`~infra.core.tracing`, which loads :mod:`~infra.core.otel`).

May import: the standard library, celery, kombu, boto3/botocore, Powertools, pydantic,
opentelemetry (``otel`` only, and only :mod:`~infra.core.tracing` imports that) -- and no other
part of ``infra``.
"""

__all__ = [
    "apps",
    "aws",
    "config",
    "errors",
    "hooks",
    "limits",
    "log_format",
    "observability",
    "otel",
    "queues",
    "settings",
    "tracing",
]
