"""Celery task messages off the SQS wire: a pure decoder from one SQS body to a frozen value.

The layers, outermost first, as kombu 5.7's SQS transport (``Channel._put``) and the virtual
transport it builds on (``Channel.prepare_message`` / ``_inplace_augment_message``) write them:

1. SQS body: base64 of the envelope JSON (default), or the JSON itself when the producer set
   ``sqs_base64_encoding=False``. Told apart by the first character, never by kombu's regex guess.
2. kombu envelope: ``{"body", "content-type", "content-encoding", "headers", "properties"}``,
   parsed with kombu's JSON (so ``__type__``-tagged values come back as Python objects).
3. body: base64 when ``properties.body_encoding == "base64"`` (the virtual transports' default).
4. compression: ``headers.compression`` (Celery's ``task_compression``), kombu's registry.
5. serializer: kombu's registry, which refuses a content type outside ``accept`` before any
   deserializer runs -- pickle never executes unless the operator accepted it.
6. Celery protocol 2 ``(args, kwargs, embed)`` plus headers, or a protocol 1 body dict, which is
   normalised to protocol 2's shape the way ``celery.worker.strategy.hybrid_to_proto2`` does.

Anything wrong with the input raises :class:`~infra.errors.MessageDecodeError` carrying the message
id and the raw body; no other exception escapes :func:`decode` whatever the body (only a bad
``accept`` argument, a caller bug, is a :class:`~infra.errors.ConfigurationError`).
"""

from __future__ import annotations

import base64
import bz2
import lzma
import math
import re
import reprlib
import zlib
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from celery.exceptions import SecurityError
from celery.utils.time import maybe_iso8601
from kombu.compression import get_decoder
from kombu.exceptions import ContentDisallowed, DecodeError, SerializerNotInstalled
from kombu.serialization import loads, prepare_accept_content
from kombu.utils.json import loads as kombu_json_loads

from infra.errors import ConfigurationError, MessageDecodeError
from infra.limits import SQS_MAX_MESSAGE_BYTES

__all__ = [
    "MAX_BODY_CHARS",
    "MAX_DECOMPRESSED_BYTES",
    "MAX_HEADERS",
    "MAX_NESTING",
    "TaskMessage",
    "decode",
]

MAX_BODY_CHARS: Final = SQS_MAX_MESSAGE_BYTES * 2
"""Longest SQS body :func:`decode` looks at; anything longer cannot have come from SQS."""
MAX_HEADERS: Final = 256
"""Most message headers accepted (Celery sends about 25; the rest are the producer's own)."""
MAX_NESTING: Final = 64
"""Deepest JSON nesting accepted in the envelope and the task body, checked before parsing."""
MAX_DECOMPRESSED_BYTES: Final = 64 * 1024 * 1024
"""Largest body a compressed message may expand to (a 1 MiB zlib bomb could expand to 1 GiB)."""

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

# kombu ships py.typed but leaves these unannotated; bound here to the types they have.
_prepare_accept: Callable[[Collection[str]], set[str]] = prepare_accept_content
_deserialize: Callable[..., Any] = loads
_compression_decoder: Callable[[str], Callable[[bytes], bytes]] = get_decoder
_json_loads: Callable[[str | bytes], Any] = kombu_json_loads


class _Invalid(ValueError):
    """One decoding step refused the input; decode() turns it into MessageDecodeError."""


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
            raise _Invalid(f"property 'delivery_info' is not an object: {_brief(info)}")
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
            raise _Invalid(f"header 'retries' is not a count: {_brief(value)}")
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
    def timelimit(self) -> tuple[float | None, float | None]:
        """``(hard, soft)`` time limits in seconds as Celery sends them; None means not set."""
        value = self.headers.get("timelimit")
        if value is None:
            return (None, None)
        if not isinstance(value, list | tuple) or len(value) != 2 or not all(map(_limit, value)):
            raise _Invalid(f"header 'timelimit' is not [hard, soft]: {_brief(value)}")
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
    allowed = _accepted_types(accept)
    try:
        envelope = _envelope(_envelope_json(_unwrap_sqs_body(body, max_chars)))
        return _task_message(envelope, _payload(envelope, allowed), message_id)
    except _Invalid as exc:
        raise MessageDecodeError(message_id, str(exc), raw=body) from exc.__cause__


@dataclass(frozen=True, slots=True)
class _Envelope:
    """kombu's message envelope, shape-checked."""

    body: str | bytes
    content_type: str
    content_encoding: str
    headers: dict[str, Any]
    properties: dict[str, Any]


def _accepted_types(accept: Collection[str]) -> set[str]:
    """Expand serializer names to content types the way Celery expands ``accept_content``."""
    if isinstance(accept, str | bytes):
        raise ConfigurationError(f"accept must be a collection of content types, not {accept!r}")
    try:
        return set(_prepare_accept(accept))
    except SerializerNotInstalled as exc:
        raise ConfigurationError(f"accept names an unknown serializer: {exc}") from exc


def _unwrap_sqs_body(body: object, max_chars: int) -> str | bytes:
    """Peel the SQS layer: a JSON object as it is, anything else must be strict base64."""
    if not isinstance(body, str | bytes):
        raise _Invalid(f"SQS body is {type(body).__name__}, not text")
    if len(body) > max_chars:
        raise _Invalid(f"SQS body of {len(body)} characters is over the {max_chars} limit")
    text = body.strip()
    if text[:1] in ("{", b"{"):
        return text
    return _b64decode(text, "SQS body is neither a JSON object nor base64")


_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"')
_BRACKETS = re.compile(rb"[\[\]{}]")


def _check_nesting(data: str | bytes, what: str) -> None:
    """Refuse JSON nested deeper than MAX_NESTING, before a parser recurses into it."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    depth = 0
    for bracket in _BRACKETS.findall(_STRINGS.sub(b"", raw)):
        depth += 1 if bracket in (b"[", b"{") else -1
        if depth > MAX_NESTING:
            raise _Invalid(f"{what} is nested deeper than {MAX_NESTING} levels")


def _envelope_json(text: str | bytes) -> Any:
    """Parse the envelope with kombu's JSON, as the SQS transport does."""
    _check_nesting(text, "envelope")
    try:
        return _json_loads(text)
    # kombu's __type__ hook hands values to registered type decoders (Decimal, UUID, datetime,
    # and whatever else a program registered), so the error types are open-ended.
    except Exception as exc:
        raise _Invalid(f"envelope is not valid JSON: {_describe(exc)}") from exc


def _envelope(data: Any) -> _Envelope:
    """Check the envelope's shape (kombu's virtual ``Channel.prepare_message``)."""
    if not isinstance(data, dict):
        raise _Invalid(f"envelope is a JSON {type(data).__name__}, not an object")
    for key in ("body", "properties"):
        if key not in data:
            raise _Invalid(f"envelope has no {key!r}: not a kombu message")
    fields = {
        "body": (data["body"], str | bytes),
        "content-type": (data.get("content-type"), str),
        "content-encoding": (data.get("content-encoding") or "utf-8", str),
        "headers": (data.get("headers") or {}, dict),
        "properties": (data["properties"], dict),
    }
    for key, (value, kind) in fields.items():
        if not isinstance(value, kind):
            raise _Invalid(f"envelope {key!r} is {type(value).__name__}: {_brief(value)}")
    if len(fields["headers"][0]) > MAX_HEADERS:
        raise _Invalid(f"message has {len(fields['headers'][0])} headers, over {MAX_HEADERS}")
    return _Envelope(*(value for value, _ in fields.values()))  # fields are in _Envelope's order


def _payload(envelope: _Envelope, accept: set[str]) -> Any:
    """Undo body encoding and compression, then deserialize with kombu's registry."""
    data = _decompress(_body_bytes(envelope), envelope.headers.get("compression"))
    if envelope.content_type in ("application/json", "application/x-yaml"):
        _check_nesting(data, "task body")
    try:
        return _deserialize(data, envelope.content_type, envelope.content_encoding, accept=accept)
    except ContentDisallowed as exc:
        refused = f"refused content type {envelope.content_type!r}"
        raise _Invalid(f"{refused}: accepted are {sorted(accept)}") from exc
    except SerializerNotInstalled as exc:
        raise _Invalid(f"no deserializer installed for {envelope.content_type!r}") from exc
    except DecodeError as exc:
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, SecurityError):  # Celery's auth serializer: signed messages
            raise _Invalid(f"signature check failed: {_describe(cause)}") from exc
        raise _Invalid(f"body is not valid {envelope.content_type}: {_describe(exc)}") from exc


def _body_bytes(envelope: _Envelope) -> bytes:
    """Undo ``properties.body_encoding`` (virtual ``Channel.encode_body``): base64 or none."""
    encoding = envelope.properties.get("body_encoding")
    if not isinstance(encoding, str | None):
        raise _Invalid(f"property 'body_encoding' is not a string: {_brief(encoding)}")
    if encoding and encoding.lower() == "base64":
        return _b64decode(envelope.body, "body is not valid base64 (body_encoding base64)")
    if encoding and encoding.lower() != "utf-8":
        raise _Invalid(f"unsupported body_encoding {encoding!r}")
    if isinstance(envelope.body, bytes):
        return envelope.body
    try:
        return envelope.body.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _Invalid("body is not encodable as UTF-8") from exc


def _decompress(data: bytes, compression: Any) -> bytes:
    """Undo ``headers.compression`` with kombu's registry, as ``kombu.compression.decompress``."""
    if compression is None:
        return data
    if not isinstance(compression, str):
        raise _Invalid(f"header 'compression' is not a string: {_brief(compression)}")
    try:
        decompressor = _compression_decoder(compression)
    except KeyError as exc:
        raise _Invalid(f"unknown compression {compression!r}") from exc
    try:
        result = _bounded_decompress(compression, data) or decompressor(data)
    # Each registered decompressor raises its own type (zlib.error, OSError, LZMAError, ...).
    except Exception as exc:
        raise _Invalid(f"body is not valid {compression} data: {_describe(exc)}") from exc
    if len(result) > MAX_DECOMPRESSED_BYTES:
        raise _Invalid(f"body expands past {MAX_DECOMPRESSED_BYTES} bytes when decompressed")
    return result


def _bounded_decompress(compression: str, data: bytes) -> bytes | None:
    """Decompress at most one byte past the limit, for the stdlib codecs kombu uses.

    None for codecs without a streaming bound here (brotli, zstd): their output is checked after.
    """
    limit = MAX_DECOMPRESSED_BYTES + 1
    name = compression.lower()
    if name in ("zlib", "application/x-gzip"):
        return zlib.decompressobj().decompress(data, limit)
    if name in ("bzip2", "application/x-bz2"):
        return bz2.BZ2Decompressor().decompress(data, limit)
    if name in ("lzma", "xz", "application/x-lzma", "application/x-xz"):
        return lzma.LZMADecompressor().decompress(data, limit)
    return None


def _task_message(envelope: _Envelope, payload: Any, message_id: str) -> TaskMessage:
    """Recognise the Celery protocol and build the value."""
    headers = {key: value for key, value in envelope.headers.items() if key != "compression"}
    if isinstance(payload, dict):  # protocol 1, possibly with protocol 2 headers (hybrid)
        v1_headers = {key: payload.get(key) for key in _V1_HEADER_KEYS}
        v1_headers["group"] = payload.get("group") or payload.get("taskset")
        embed = {key: payload.get(key) for key in _EMBED_KEYS if key != "chain"}
        body = (payload.get("args", ()), payload.get("kwargs", {}), embed)
        return _build(1, body, {**v1_headers, **headers}, envelope, message_id)
    if "task" not in headers:
        raise _Invalid("not a Celery task: no 'task' header and the body is not a protocol 1 dict")
    if not isinstance(payload, list | tuple) or len(payload) != 3:
        raise _Invalid(f"protocol 2 body is not [args, kwargs, embed]: {_brief(payload)}")
    return _build(2, tuple(payload), headers, envelope, message_id)


def _build(
    protocol: int,
    body: tuple[Any, ...],
    headers: dict[str, Any],
    envelope: _Envelope,
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
        raise _Invalid(f"task args are {type(value).__name__}, not a list: {_brief(value)}")
    return tuple(value)


def _kwargs(value: Any) -> dict[str, Any]:
    """Keyword arguments: a dict with string keys (anything else cannot be ``**``-passed)."""
    if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
        raise _Invalid(f"task kwargs are not an object with string keys: {_brief(value)}")
    return dict(value)


def _embed(value: Any) -> dict[str, Any]:
    """Workflow fields: callbacks, errbacks and chain are lists of signatures, chord one or None."""
    value = {} if value is None else value
    if not isinstance(value, dict):
        raise _Invalid(f"embed is {type(value).__name__}, not an object: {_brief(value)}")
    for key in ("callbacks", "errbacks", "chain"):
        items = value.get(key)
        if items is not None and not (
            isinstance(items, list | tuple) and all(isinstance(item, dict) for item in items)
        ):
            raise _Invalid(f"embed {key!r} is not a list of signatures: {_brief(items)}")
    if not isinstance(value.get("chord"), dict | None):
        raise _Invalid(f"embed 'chord' is not a signature: {_brief(value['chord'])}")
    return {**dict.fromkeys(_EMBED_KEYS), **value}


def _required_str(headers: dict[str, Any], key: str, what: str) -> str:
    """A header that must be a non-empty string."""
    value = headers.get(key)
    if not isinstance(value, str) or not value:
        raise _Invalid(f"missing {what}: header {key!r} is {_brief(value)}")
    return value


def _optional_str(mapping: dict[str, Any], key: str) -> str | None:
    """A field that is a string or absent."""
    value = mapping.get(key)
    if not isinstance(value, str | None):
        raise _Invalid(f"{key!r} is not a string: {_brief(value)}")
    return value


def _header_time(headers: dict[str, Any], key: str) -> datetime | None:
    """Parse an ISO 8601 header with Celery's own parser; naive means UTC unless utc is False."""
    value, utc = headers.get(key), headers.get("utc")
    if not isinstance(utc, bool | None):
        raise _Invalid(f"header 'utc' is not a boolean: {_brief(utc)}")
    if not isinstance(value, str | datetime | None):
        raise _Invalid(f"header {key!r} is not an ISO 8601 string: {_brief(value)}")
    try:
        parsed: datetime | None = maybe_iso8601(value)
    except (ValueError, OverflowError) as exc:
        raise _Invalid(f"header {key!r} is not an ISO 8601 date: {_brief(value)}") from exc
    if parsed is not None and parsed.tzinfo is None and utc is not False:
        return parsed.replace(tzinfo=UTC)
    return parsed


def _limit(value: Any) -> bool:
    """Whether a value can be a time limit: None or a finite, non-negative number of seconds."""
    if value is None:
        return True
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return number and math.isfinite(value) and value >= 0


def _b64decode(data: str | bytes, reason: str) -> bytes:
    """Strict base64: any character outside the alphabet, or bad padding, is an error."""
    try:
        return base64.b64decode(data, validate=True)
    except ValueError as exc:  # binascii.Error, or non-ASCII characters in a str
        raise _Invalid(reason) from exc


_REASON_REPR: Final = reprlib.Repr()
_REASON_REPR.maxstring = _REASON_REPR.maxother = 100


def _brief(value: Any) -> str:
    """A bounded repr for error reasons (the raw body travels separately, in ``raw``)."""
    return _REASON_REPR.repr(value)


def _describe(exc: BaseException) -> str:
    """An exception as ``Type: message``, bounded, for error reasons."""
    return f"{type(exc).__name__}: {_REASON_REPR.repr(str(exc))[1:-1]}"
