"""Messages on the SQS wire: pure decode and encode, and the S3 home of offloaded bodies.

The kombu envelope and its bounds (:mod:`~infra.wire.envelope`), Celery's task protocol v1/v2
into a frozen :class:`~infra.wire.protocol.TaskMessage` (:mod:`~infra.wire.protocol`), task
times (:mod:`~infra.wire.timing`), the SQS extended-client pointer to an offloaded body
and the store of those bodies, given its S3 client
(:mod:`~infra.wire.offload`) and the requests that hand a record back to SQS
(:mod:`~infra.wire.requeue`).

May import: :mod:`infra.core`.
"""

__all__ = [
    "envelope",
    "offload",
    "protocol",
    "requeue",
    "timing",
]
