"""kombu's message envelope off the SQS wire, bounded before anything is parsed.

The layers :func:`infra.wire.protocol.decode` peels before the Celery protocol, outermost first, as
kombu 5.7's SQS transport (``Channel._put``) and the virtual transport it builds on
(``Channel.prepare_message`` / ``_inplace_augment_message``) write them:

1. SQS body: base64 of the envelope JSON (default), or the JSON itself when the producer set
   ``sqs_base64_encoding=False``. Told apart by the first character, never by kombu's regex guess.
2. kombu envelope: ``{"body", "content-type", "content-encoding", "headers", "properties"}``,
   parsed with kombu's JSON (so ``__type__``-tagged values come back as Python objects).
3. body: base64 when ``properties.body_encoding == "base64"`` (the virtual transports' default).
4. compression: ``headers.compression`` (Celery's ``task_compression``), kombu's registry.
5. serializer: kombu's registry, which refuses a content type outside ``accept`` before any
   deserializer runs -- pickle never executes unless the operator accepted it.

Each bound (body length, JSON nesting, header count, decompressed size) is checked before the step
that could be made to cost too much. A refusal is :class:`Refused`, with a reason fit for a log.
"""

from __future__ import annotations

import base64
import bz2
import lzma
import re
import reprlib
import zlib
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, Final

from celery.exceptions import SecurityError
from kombu.compression import get_decoder
from kombu.exceptions import ContentDisallowed, DecodeError, SerializerNotInstalled
from kombu.serialization import loads, prepare_accept_content
from kombu.utils.json import loads as kombu_json_loads

from infra.core.errors import ConfigurationError
from infra.core.limits import SQS_MAX_MESSAGE_BYTES

__all__ = [
    "MAX_BODY_CHARS",
    "MAX_DECOMPRESSED_BYTES",
    "MAX_HEADERS",
    "MAX_NESTING",
    "Envelope",
    "Refused",
    "accepted_types",
    "brief",
    "describe",
    "payload_of",
    "read_envelope",
]

MAX_BODY_CHARS: Final = SQS_MAX_MESSAGE_BYTES * 2
"""Longest SQS body :func:`decode` looks at; anything longer cannot have come from SQS."""
MAX_HEADERS: Final = 256
"""Most message headers accepted (Celery sends about 25; the rest are the producer's own)."""
MAX_NESTING: Final = 64
"""Deepest JSON nesting accepted in the envelope and the task body, checked before parsing."""
MAX_DECOMPRESSED_BYTES: Final = 64 * 1024 * 1024
"""Largest body a compressed message may expand to (a 1 MiB zlib bomb could expand to 1 GiB)."""

# kombu ships py.typed but leaves these unannotated; bound here to the types they have.
_prepare_accept: Callable[[Collection[str]], set[str]] = prepare_accept_content
_deserialize: Callable[..., Any] = loads
_compression_decoder: Callable[[str], Callable[[bytes], bytes]] = get_decoder
_json_loads: Callable[[str | bytes], Any] = kombu_json_loads


class Refused(ValueError):
    """One decoding step refused the input; ``decode`` turns it into MessageDecodeError."""


def read_envelope(body: object, max_chars: int) -> Envelope:
    """Layers 1 and 2: the SQS body, at most ``max_chars`` long, as a shape-checked envelope.

    Raises:
        Refused: the body is not a kombu envelope within the bounds.
    """
    return _envelope(_envelope_json(_unwrap_sqs_body(body, max_chars)))


@dataclass(frozen=True, slots=True)
class Envelope:
    """kombu's message envelope, shape-checked."""

    body: str | bytes
    content_type: str
    content_encoding: str
    headers: dict[str, Any]
    properties: dict[str, Any]


def accepted_types(accept: Collection[str]) -> set[str]:
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
        raise Refused(f"SQS body is {type(body).__name__}, not text")
    if len(body) > max_chars:
        raise Refused(f"SQS body of {len(body)} characters is over the {max_chars} limit")
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
            raise Refused(f"{what} is nested deeper than {MAX_NESTING} levels")


def _envelope_json(text: str | bytes) -> Any:
    """Parse the envelope with kombu's JSON, as the SQS transport does."""
    _check_nesting(text, "envelope")
    try:
        return _json_loads(text)
    # kombu's __type__ hook hands values to registered type decoders (Decimal, UUID, datetime,
    # and whatever else a program registered), so the error types are open-ended.
    except Exception as exc:
        raise Refused(f"envelope is not valid JSON: {describe(exc)}") from exc


def _envelope(data: Any) -> Envelope:
    """Check the envelope's shape (kombu's virtual ``Channel.prepare_message``)."""
    if not isinstance(data, dict):
        raise Refused(f"envelope is a JSON {type(data).__name__}, not an object")
    for key in ("body", "properties"):
        if key not in data:
            raise Refused(f"envelope has no {key!r}: not a kombu message")
    fields = {
        "body": (data["body"], str | bytes),
        "content-type": (data.get("content-type"), str),
        "content-encoding": (data.get("content-encoding") or "utf-8", str),
        "headers": (data.get("headers") or {}, dict),
        "properties": (data["properties"], dict),
    }
    for key, (value, kind) in fields.items():
        if not isinstance(value, kind):
            raise Refused(f"envelope {key!r} is {type(value).__name__}: {brief(value)}")
    if len(fields["headers"][0]) > MAX_HEADERS:
        raise Refused(f"message has {len(fields['headers'][0])} headers, over {MAX_HEADERS}")
    return Envelope(*(value for value, _ in fields.values()))  # fields are in Envelope's order


def payload_of(envelope: Envelope, accept: set[str]) -> Any:
    """Undo body encoding and compression, then deserialize with kombu's registry."""
    data = _decompress(_body_bytes(envelope), envelope.headers.get("compression"))
    if envelope.content_type in ("application/json", "application/x-yaml"):
        _check_nesting(data, "task body")
    try:
        return _deserialize(data, envelope.content_type, envelope.content_encoding, accept=accept)
    except ContentDisallowed as exc:
        refused = f"refused content type {envelope.content_type!r}"
        raise Refused(f"{refused}: accepted are {sorted(accept)}") from exc
    except SerializerNotInstalled as exc:
        raise Refused(f"no deserializer installed for {envelope.content_type!r}") from exc
    except DecodeError as exc:
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, SecurityError):  # Celery's auth serializer: signed messages
            raise Refused(f"signature check failed: {describe(cause)}") from exc
        raise Refused(f"body is not valid {envelope.content_type}: {describe(exc)}") from exc


def _body_bytes(envelope: Envelope) -> bytes:
    """Undo ``properties.body_encoding`` (virtual ``Channel.encode_body``): base64 or none."""
    encoding = envelope.properties.get("body_encoding")
    if not isinstance(encoding, str | None):
        raise Refused(f"property 'body_encoding' is not a string: {brief(encoding)}")
    if encoding and encoding.lower() == "base64":
        return _b64decode(envelope.body, "body is not valid base64 (body_encoding base64)")
    if encoding and encoding.lower() != "utf-8":
        raise Refused(f"unsupported body_encoding {encoding!r}")
    if isinstance(envelope.body, bytes):
        return envelope.body
    try:
        return envelope.body.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise Refused("body is not encodable as UTF-8") from exc


def _decompress(data: bytes, compression: Any) -> bytes:
    """Undo ``headers.compression`` with kombu's registry, as ``kombu.compression.decompress``."""
    if compression is None:
        return data
    if not isinstance(compression, str):
        raise Refused(f"header 'compression' is not a string: {brief(compression)}")
    try:
        decompressor = _compression_decoder(compression)
    except KeyError as exc:
        raise Refused(f"unknown compression {compression!r}") from exc
    try:
        result = _bounded_decompress(compression, data) or decompressor(data)
    # Each registered decompressor raises its own type (zlib.error, OSError, LZMAError, ...).
    except Exception as exc:
        raise Refused(f"body is not valid {compression} data: {describe(exc)}") from exc
    if len(result) > MAX_DECOMPRESSED_BYTES:
        raise Refused(f"body expands past {MAX_DECOMPRESSED_BYTES} bytes when decompressed")
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


def _b64decode(data: str | bytes, reason: str) -> bytes:
    """Strict base64: any character outside the alphabet, or bad padding, is an error."""
    try:
        return base64.b64decode(data, validate=True)
    except ValueError as exc:  # binascii.Error, or non-ASCII characters in a str
        raise Refused(reason) from exc


_REASON_REPR: Final = reprlib.Repr()
_REASON_REPR.maxstring = _REASON_REPR.maxother = 100


def brief(value: Any) -> str:
    """A bounded repr for error reasons (the raw body travels separately, in ``raw``)."""
    return _REASON_REPR.repr(value)


def describe(exc: BaseException) -> str:
    """An exception as ``Type: message``, bounded, for error reasons."""
    return f"{type(exc).__name__}: {_REASON_REPR.repr(str(exc))[1:-1]}"
