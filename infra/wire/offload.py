"""Large message bodies in S3, with a pointer in SQS in the format of AWS's SQS extended client.

The Java (``amazon-sqs-java-extended-client-lib``) and Python (``amazon-sqs-python-extended-
client-lib``) extended clients send, instead of a body too large for SQS::

    ["software.amazon.payloadoffloading.PayloadS3Pointer", {"s3BucketName": "b", "s3Key": "k"}]

with a ``ExtendedPayloadSize`` number attribute holding the original size; the S3 object is the
original body. We write and read exactly that, so either side can be an extended-client program.
Our keys name the task (``payloads/<task id>/<uuid>``): a redelivered pointer whose object is
already gone can still be matched to its task's state.

The format functions are pure; :class:`PayloadStore` does the S3 I/O with an injected client.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from infra.core.errors import CeleryLambdaError, StoreError

__all__ = [
    "POINTER_CLASS",
    "SIZE_ATTRIBUTE",
    "PayloadMissing",
    "PayloadStore",
    "Pointer",
    "parse_pointer",
    "payload_key",
    "size_attribute",
]

POINTER_CLASS = "software.amazon.payloadoffloading.PayloadS3Pointer"
SIZE_ATTRIBUTE = "ExtendedPayloadSize"
KEY_PREFIX = "payloads/"


class PayloadMissing(CeleryLambdaError):
    """The S3 object a pointer names does not exist (already deleted, or expired)."""

    def __init__(self, pointer: Pointer) -> None:
        super().__init__(f"message body s3://{pointer.bucket}/{pointer.key} does not exist")
        self.pointer = pointer


@dataclass(frozen=True, slots=True)
class Pointer:
    """Where an offloaded message body lives."""

    bucket: str
    key: str

    def body(self) -> str:
        """The SQS body that stands for the object: the extended client's pointer JSON."""
        return json.dumps([POINTER_CLASS, {"s3BucketName": self.bucket, "s3Key": self.key}])

    @property
    def task_id(self) -> str | None:
        """The task id our keys carry; None for another producer's key."""
        if not self.key.startswith(KEY_PREFIX):
            return None
        task_id, _, rest = self.key[len(KEY_PREFIX) :].partition("/")
        return task_id if task_id and rest else None


def parse_pointer(body: str | bytes) -> Pointer | None:
    """The pointer an SQS body holds, or None when it is an ordinary body."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if not body.startswith("[") or POINTER_CLASS not in body[:80]:
        return None  # cheap reject: ordinary bodies are base64 or a JSON object
    try:
        value = json.loads(body)
    except ValueError:
        return None
    if not (isinstance(value, list) and len(value) == 2 and value[0] == POINTER_CLASS):
        return None
    location = value[1]
    if not isinstance(location, dict):
        return None
    bucket, key = location.get("s3BucketName"), location.get("s3Key")
    if not (isinstance(bucket, str) and bucket and isinstance(key, str) and key):
        return None
    return Pointer(bucket, key)


def size_attribute(size: int) -> dict[str, dict[str, str]]:
    """The message attribute that marks an offloaded body, as the extended client sets it."""
    return {SIZE_ATTRIBUTE: {"DataType": "Number", "StringValue": str(size)}}


def payload_key(task_id: str | None) -> str:
    """A fresh key for one message body: a re-publish never overwrites an object in use."""
    return f"{KEY_PREFIX}{task_id or 'unknown'}/{uuid.uuid4().hex}"


@dataclass(frozen=True, slots=True)
class PayloadStore:
    """Puts, fetches and deletes offloaded bodies in one bucket."""

    s3: Any
    bucket: str

    def put(self, task_id: str | None, body: str) -> Pointer:
        """Store ``body`` and return its pointer.

        Raises:
            StoreError: S3 refused or could not be reached; nothing was sent to SQS.
        """
        pointer = Pointer(self.bucket, payload_key(task_id))
        try:
            self.s3.put_object(Bucket=pointer.bucket, Key=pointer.key, Body=body.encode())
        except (ClientError, BotoCoreError) as exc:
            raise StoreError(
                f"could not store a large message body in s3://{pointer.bucket}: {exc}"
            ) from exc
        return pointer

    def fetch(self, pointer: Pointer) -> str:
        """The body a pointer names.

        Raises:
            PayloadMissing: the object does not exist.
            StoreError: S3 refused or could not be reached.
        """
        try:
            response = self.s3.get_object(Bucket=pointer.bucket, Key=pointer.key)
            return str(response["Body"].read().decode())
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404"}:
                raise PayloadMissing(pointer) from exc
            raise StoreError(f"could not read s3://{pointer.bucket}/{pointer.key}: {exc}") from exc
        except BotoCoreError as exc:
            raise StoreError(f"could not read s3://{pointer.bucket}/{pointer.key}: {exc}") from exc

    def delete(self, pointer: Pointer) -> None:
        """Delete the object; a failure is left to the bucket's lifecycle rule.

        Raises:
            StoreError: S3 refused or could not be reached.
        """
        try:
            self.s3.delete_object(Bucket=pointer.bucket, Key=pointer.key)
        except (ClientError, BotoCoreError) as exc:
            where = f"s3://{pointer.bucket}/{pointer.key}"
            raise StoreError(f"could not delete {where}: {exc}") from exc
