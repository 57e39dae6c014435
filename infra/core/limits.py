"""AWS service limits this project designs around, each beside the page that states it.

One module so that a limit is changed in one place and every check that depends on it follows.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "DYNAMODB_MAX_BATCH_GET_ITEMS",
    "DYNAMODB_MAX_BATCH_WRITE_ITEMS",
    "DYNAMODB_MAX_ITEM_BYTES",
    "DYNAMODB_MAX_TRANSACT_ITEMS",
    "ESM_MAX_BATCH_SIZE_FIFO",
    "ESM_MAX_BATCH_SIZE_STANDARD",
    "LAMBDA_MAX_SYNC_PAYLOAD_BYTES",
    "LAMBDA_MAX_TIMEOUT_SECONDS",
    "S3_MAX_PUT_BYTES",
    "SQS_BILLING_CHUNK_BYTES",
    "SQS_FIFO_DEDUPLICATION_SECONDS",
    "SQS_MAX_BATCH_ENTRIES",
    "SQS_MAX_BATCH_PAYLOAD_BYTES",
    "SQS_MAX_DELAY_SECONDS",
    "SQS_MAX_MESSAGE_BYTES",
    "SQS_MAX_VISIBILITY_SECONDS",
    "SQS_MAX_WAIT_TIME_SECONDS",
    "VISIBILITY_TIMEOUT_FACTOR",
]

# https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/quotas-messages.html
SQS_MAX_MESSAGE_BYTES: Final = 1024 * 1024
"""Largest SQS message body plus attributes (1 MiB since August 2025)."""
SQS_BILLING_CHUNK_BYTES: Final = 64 * 1024
"""Every 64 KiB chunk of a payload is billed as one request."""
SQS_MAX_DELAY_SECONDS: Final = 900
"""``DelaySeconds`` accepts 0..900 per message or per queue."""
SQS_MAX_VISIBILITY_SECONDS: Final = 12 * 60 * 60
"""A message can be hidden for at most 12 hours from its first receive."""
SQS_MAX_BATCH_ENTRIES: Final = 10
"""SendMessageBatch / DeleteMessageBatch / ChangeMessageVisibilityBatch take at most 10 entries."""
SQS_MAX_WAIT_TIME_SECONDS: Final = 20
"""Long polling waits at most 20 seconds."""
SQS_MAX_BATCH_PAYLOAD_BYTES: Final = 1024 * 1024
"""The sum of all bodies (and attributes) in one SendMessageBatch is capped like one message."""
SQS_FIFO_DEDUPLICATION_SECONDS: Final = 5 * 60
"""FIFO queues drop a message whose deduplication id was seen in the last five minutes."""

# https://docs.aws.amazon.com/AmazonS3/latest/userguide/upload-objects.html
S3_MAX_PUT_BYTES: Final = 5 * 1024 * 1024 * 1024
"""A single PutObject uploads at most 5 GiB."""

# https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html
LAMBDA_MAX_TIMEOUT_SECONDS: Final = 900
LAMBDA_MAX_SYNC_PAYLOAD_BYTES: Final = 6 * 1024 * 1024

# https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-configure.html
ESM_MAX_BATCH_SIZE_STANDARD: Final = 10_000
"""Standard queues: batch sizes over 10 need a batching window."""
ESM_MAX_BATCH_SIZE_FIFO: Final = 10
VISIBILITY_TIMEOUT_FACTOR: Final = 6
"""AWS recommends a queue visibility timeout of at least six times the function timeout."""

# https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/ServiceQuotas.html
DYNAMODB_MAX_ITEM_BYTES: Final = 400 * 1024
DYNAMODB_MAX_BATCH_WRITE_ITEMS: Final = 25
DYNAMODB_MAX_BATCH_GET_ITEMS: Final = 100
DYNAMODB_MAX_TRANSACT_ITEMS: Final = 100
