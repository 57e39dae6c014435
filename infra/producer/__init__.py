"""Publishing: what every ``apply_async`` sends to SQS.

Our kombu SQS transport (:mod:`~infra.producer.transport`), the pure publish request builders
(:mod:`~infra.producer.publish`) and a group's messages sent with SendMessageBatch
(:mod:`~infra.producer.batch`).

May import: :mod:`infra.core`, :mod:`infra.wire`, :mod:`infra.store`.
"""

__all__ = [
    "batch",
    "publish",
    "transport",
]
