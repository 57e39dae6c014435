"""Celery task messages off the SQS wire: a pure decoder from one SQS body to a frozen value.

:mod:`infra.wire.envelope` peels the SQS body, kombu's envelope, body encoding, compression and the
serializer (refusing a content type outside ``accept`` before any deserializer runs), each within
its bound. What is left is Celery's protocol 2 ``(args, kwargs, embed)`` plus headers, or a
protocol 1 body dict, which is normalised to protocol 2's shape the way
``celery.worker.strategy.hybrid_to_proto2`` does; every field is checked here.

Anything wrong with the input raises :class:`~infra.core.errors.MessageDecodeError` carrying the
message id and the raw body; no other exception escapes :func:`decode` whatever the body (only a bad
``accept`` argument, a caller bug, is a :class:`~infra.core.errors.ConfigurationError`).
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from infra.core.errors import MessageDecodeError
from infra.wire.envelope import (
    MAX_BODY_CHARS,
    Envelope,
    Refused,
    accepted_types,
    brief,
    payload_of,
    read_envelope,
)
from infra.wire.timing import aware, parse_time

__all__ = ["TaskMessage", "decode", "stamped"]

_EMBED_KEYS: Final = ("callbacks", "errbacks", "chain", "chord")

# Protocol 1 body fields that Celery's worker lifts into protocol 2 headers
# (celery/worker/strategy.py hybrid_to_proto2), plus group_index and utc that as_task_v1 sends.
_V1_HEADER_KEYS: Final = (
    "lang", "task", "id", "root_id", "parent_id", "group", "group_index", "meth", "shadow",
    "eta", "expires", "retries", "timelimit", "argsrepr", "kwargsrepr", "origin", "utc",
)  # fmt: skip

# Properties computed from headers; decode() reads each once so a bad header fails there.
_DERIVED: Final = (
    "queue", "eta", "expires", "retries", "root_id", "parent_id", "group", "timelimit",
)  # fmt: skip


def stamped(names: Any, stamps: Any) -> dict[str, Any]:
    """The stamps of ``names`` (a message's ``stamped_headers``), as Celery's worker
    ``Request.stamps`` selects them; none when either is malformed."""
    if not isinstance(names, list) or not isinstance(stamps, dict):
        return {}
    return {n: stamps.get(n) for n in names if isinstance(n, str)}


@dataclass(frozen=True, slots=True)
class TaskMessage:
    """A Celery task message decoded from one SQS record, in protocol 2's shape."""

    message_id: str
    protocol: int
    task_id: str
    task_name: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    embed: dict[str, Any]
    headers: dict[str, Any]
    properties: dict[str, Any]
    content_type: str
    content_encoding: str

    @property
    def queue(self) -> str | None:
        """The Celery queue the producer routed to (kombu's ``delivery_info.routing_key``)."""
        info = self.properties.get("delivery_info")
        if info is None:
            return None
        if not isinstance(info, dict):
            raise Refused(f"property 'delivery_info' is not an object: {brief(info)}")
        return _optional_str(info, "routing_key")

    @property
    def eta(self) -> datetime | None:
        """Earliest time the task may run; naive values are UTC unless the message has utc=False."""
        return _header_time(self.headers, "eta")

    @property
    def expires(self) -> datetime | None:
        """Time after which the task must not run; same time zone rule as :attr:`eta`."""
        return _header_time(self.headers, "expires")

    @property
    def retries(self) -> int:
        """How many times this task has been retried already (0 on the first attempt)."""
        value = self.headers.get("retries")
        if value is None:
            return 0
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise Refused(f"header 'retries' is not a count: {brief(value)}")
        return value

    @property
    def root_id(self) -> str | None:
        """Id of the first task of the workflow this task belongs to."""
        return _optional_str(self.headers, "root_id")

    @property
    def parent_id(self) -> str | None:
        """Id of the task that sent this one, if a task sent it."""
        return _optional_str(self.headers, "parent_id")

    @property
    def group(self) -> str | None:
        """Id of the group (or chord header) this task is a member of."""
        return _optional_str(self.headers, "group")

    @property
    def stamps(self) -> dict[str, Any]:
        """The stamps of its ``stamped_headers``, as Celery's worker ``Request.stamps`` reads them.
        Malformed ones are none (they serve only to match ``revoke_by_stamped_headers``; the
        tracer gets the headers as they are)."""
        return stamped(self.headers.get("stamped_headers"), self.headers.get("stamps"))

    @property
    def timelimit(self) -> tuple[float | None, float | None]:
        """``(hard, soft)`` time limits in seconds as Celery sends them; None means not set."""
        value = self.headers.get("timelimit")
        if value is None:
            return (None, None)
        if not isinstance(value, list | tuple) or len(value) != 2 or not all(map(_limit, value)):
            raise Refused(f"header 'timelimit' is not [hard, soft]: {brief(value)}")
        return (value[0], value[1])


def decode(
    body: str | bytes,
    *,
    message_id: str,
    accept: Collection[str] = ("application/json",),
    max_chars: int = MAX_BODY_CHARS,
) -> TaskMessage:
    """Decode one SQS message body, as kombu's SQS transport sent it, into a TaskMessage.

    ``accept`` takes serializer names or content types, like Celery's ``accept_content``.
    ``max_chars`` bounds the body looked at: what SQS can carry, or for a body fetched through
    an S3 pointer, the largest body the publisher offloads.

    Raises:
        MessageDecodeError: the body is not a Celery task message this consumer may run.
        ConfigurationError: ``accept`` names a serializer kombu does not know (a caller bug,
            raised before the body is looked at).
    """
    allowed = accepted_types(accept)
    try:
        envelope = read_envelope(body, max_chars)
        return _task_message(envelope, payload_of(envelope, allowed), message_id)
    except Refused as exc:
        raise MessageDecodeError(message_id, str(exc), raw=body) from exc.__cause__


def _task_message(envelope: Envelope, payload: Any, message_id: str) -> TaskMessage:
    """Recognise the Celery protocol and build the value."""
    headers = {key: value for key, value in envelope.headers.items() if key != "compression"}
    if isinstance(payload, dict):  # protocol 1, possibly with protocol 2 headers (hybrid)
        v1_headers = {key: payload.get(key) for key in _V1_HEADER_KEYS}
        v1_headers["group"] = payload.get("group") or payload.get("taskset")
        embed = {key: payload.get(key) for key in _EMBED_KEYS if key != "chain"}
        body = (payload.get("args", ()), payload.get("kwargs", {}), embed)
        return _build(1, body, {**v1_headers, **headers}, envelope, message_id)
    if "task" not in headers:
        raise Refused("not a Celery task: no 'task' header and the body is not a protocol 1 dict")
    if not isinstance(payload, list | tuple) or len(payload) != 3:
        raise Refused(f"protocol 2 body is not [args, kwargs, embed]: {brief(payload)}")
    return _build(2, tuple(payload), headers, envelope, message_id)


def _build(
    protocol: int,
    body: tuple[Any, ...],
    headers: dict[str, Any],
    envelope: Envelope,
    message_id: str,
) -> TaskMessage:
    """Check every field and assemble the TaskMessage."""
    args, kwargs, embed = body
    message = TaskMessage(
        message_id=message_id,
        protocol=protocol,
        task_id=_required_str(headers, "id", "task id"),
        task_name=_required_str(headers, "task", "task name"),
        args=_args(args),
        kwargs=_kwargs(kwargs),
        embed=_embed(embed),
        headers=headers,
        properties=dict(envelope.properties),
        content_type=envelope.content_type,
        content_encoding=envelope.content_encoding,
    )
    for name in _DERIVED:
        getattr(message, name)
    return message


def _args(value: Any) -> tuple[Any, ...]:
    """Positional arguments: a list (JSON) or tuple (pickle)."""
    if not isinstance(value, list | tuple):
        raise Refused(f"task args are {type(value).__name__}, not a list: {brief(value)}")
    return tuple(value)


def _kwargs(value: Any) -> dict[str, Any]:
    """Keyword arguments: a dict with string keys (anything else cannot be ``**``-passed)."""
    if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
        raise Refused(f"task kwargs are not an object with string keys: {brief(value)}")
    return dict(value)


def _embed(value: Any) -> dict[str, Any]:
    """Workflow fields: callbacks, errbacks and chain are lists of signatures, chord one or None."""
    value = {} if value is None else value
    if not isinstance(value, dict):
        raise Refused(f"embed is {type(value).__name__}, not an object: {brief(value)}")
    for key in ("callbacks", "errbacks", "chain"):
        items = value.get(key)
        if items is not None and not (
            isinstance(items, list | tuple) and all(isinstance(item, dict) for item in items)
        ):
            raise Refused(f"embed {key!r} is not a list of signatures: {brief(items)}")
    if not isinstance(value.get("chord"), dict | None):
        raise Refused(f"embed 'chord' is not a signature: {brief(value['chord'])}")
    return {**dict.fromkeys(_EMBED_KEYS), **value}


def _required_str(headers: dict[str, Any], key: str, what: str) -> str:
    """A header that must be a non-empty string."""
    value = headers.get(key)
    if not isinstance(value, str) or not value:
        raise Refused(f"missing {what}: header {key!r} is {brief(value)}")
    return value


def _optional_str(mapping: dict[str, Any], key: str) -> str | None:
    """A field that is a string or absent."""
    value = mapping.get(key)
    if not isinstance(value, str | None):
        raise Refused(f"{key!r} is not a string: {brief(value)}")
    return value


def _header_time(headers: dict[str, Any], key: str) -> datetime | None:
    """Parse a time header (:func:`infra.wire.timing.parse_time`); naive means UTC unless utc is
    False."""
    value, utc = headers.get(key), headers.get("utc")
    if not isinstance(utc, bool | None):
        raise Refused(f"header 'utc' is not a boolean: {brief(utc)}")
    if not isinstance(value, str | datetime | None):
        raise Refused(f"header {key!r} is not an ISO 8601 string: {brief(value)}")
    try:
        parsed = parse_time(value)
    except (ValueError, OverflowError) as exc:
        raise Refused(f"header {key!r} is not an ISO 8601 date: {brief(value)}") from exc
    return parsed if utc is False else aware(parsed, UTC)


def _limit(value: Any) -> bool:
    """Whether a value can be a time limit: None or a finite, non-negative number of seconds."""
    if value is None:
        return True
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return number and math.isfinite(value) and value >= 0
