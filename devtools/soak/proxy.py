"""A fault-injecting HTTP proxy on 127.0.0.1 in front of the emulator.

Every request is forwarded to the upstream endpoint (moto) unchanged, except that a seeded share
of the DynamoDB and SQS requests is answered by the proxy itself with a throttling (HTTP 400) or
an internal (HTTP 500) error, in the shape that service's protocol uses, so botocore parses,
classifies and retries it exactly as it would a real AWS throttle:

- DynamoDB (JSON 1.0, ``X-Amz-Target: DynamoDB_20120810.PutItem``):
  ``ProvisionedThroughputExceededException``, ``ThrottlingException`` or ``InternalServerError``;
- SQS JSON (``X-Amz-Target: AmazonSQS.ReceiveMessage``): ``RequestThrottled``,
  ``ThrottlingException`` or ``InternalError``, with the ``x-amzn-query-error`` header that
  query-compatible services send;
- SQS query (``Action=ReceiveMessage`` in the form body or URL): the same codes in the XML
  ``ErrorResponse``.

The service is read from the SigV4 credential scope of the ``Authorization`` header, else from
the ``X-Amz-Target`` prefix. See https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/Programming.Errors.html
and https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/CommonErrors.html.

Which request is faulted follows one ``random.Random(seed)`` in arrival order: a single-threaded
client sees the same faults on every run; concurrent clients see the same number per request
count, not necessarily on the same requests.
"""

from __future__ import annotations

import http.client
import json
import random
import re
import threading
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Final
from urllib.parse import parse_qs, urlsplit

__all__ = [
    "FAULT_KINDS",
    "FAULTED_SERVICES",
    "Fault",
    "FaultPlan",
    "FaultProxy",
    "Target",
    "fault_response",
    "target_of",
]

FAULT_KINDS: Final = ("throttled", "throttling", "internal")
"""``throttled``: the service's own throttle (DynamoDB ``ProvisionedThroughputExceededException``,
SQS ``RequestThrottled``); ``throttling``: the generic ``ThrottlingException``; ``internal``:
HTTP 500."""
FAULTED_SERVICES: Final = frozenset({"dynamodb", "sqs"})
UPSTREAM_TIMEOUT: Final = 65.0
"""Longer than SQS's longest poll (20 s) with room for a slow emulator."""
_HOP_BY_HOP: Final = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te"}
)
_SCOPE = re.compile(r"Credential=[^/]+/[^/]+/[^/]+/([^/]+)/aws4_request")
_DYNAMODB_TYPES: Final = {
    "throttled": "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
    "throttling": "com.amazon.coral.availability#ThrottlingException",
    "internal": "com.amazonaws.dynamodb.v20120810#InternalServerError",
}
_SQS_CODES: Final = {
    "throttled": "RequestThrottled",
    "throttling": "ThrottlingException",
    "internal": "InternalError",
}


@dataclass(frozen=True, slots=True)
class Target:
    """What a request asks for: service, operation and wire protocol (``json`` or ``query``)."""

    service: str
    operation: str
    protocol: str


@dataclass(frozen=True, slots=True)
class Fault:
    """An error answer: status, headers and body."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


def _header(headers: Mapping[str, str], name: str) -> str:
    wanted = name.lower()
    return next((v for k, v in headers.items() if k.lower() == wanted), "")


def target_of(headers: Mapping[str, str], path: str, body: bytes) -> Target | None:
    """The service and operation of a request; None when it names neither (S3, moto's API)."""
    scope = _SCOPE.search(_header(headers, "Authorization"))
    amz_target = _header(headers, "X-Amz-Target")
    prefix, _, operation = amz_target.partition(".")
    service = scope.group(1) if scope else ""
    if not service and prefix:
        service = "dynamodb" if prefix.startswith("DynamoDB_") else prefix.removeprefix("Amazon")
    service = service.lower()
    if operation:
        return Target(service, operation, "json")
    form = parse_qs(urlsplit(path).query)
    if "x-www-form-urlencoded" in _header(headers, "Content-Type"):
        form.update(parse_qs(body.decode("utf-8", "replace")))
    action = form.get("Action")
    return Target(service, action[0], "query") if action and service else None


def fault_response(target: Target, kind: str, request_id: str) -> Fault:
    """The error ``target``'s service answers for ``kind`` (one of :data:`FAULT_KINDS`).

    Raises:
        ValueError: an unknown kind, or a service other than DynamoDB and SQS.
    """
    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown fault kind {kind!r}")
    status = 500 if kind == "internal" else 400
    message = "Rate exceeded (injected by the soak's proxy)"
    if target.service == "dynamodb":
        body = {"__type": _DYNAMODB_TYPES[kind], "message": message}
        return Fault(status, _json_headers(request_id), json.dumps(body).encode())
    if target.service != "sqs":
        raise ValueError(f"no error shape for service {target.service!r}")
    code, side = _SQS_CODES[kind], "Receiver" if kind == "internal" else "Sender"
    if target.protocol == "json":
        headers = (*_json_headers(request_id), ("x-amzn-query-error", f"{code};{side}"))
        body = {"__type": f"com.amazonaws.sqs#{code}", "message": message}
        return Fault(status, headers, json.dumps(body).encode())
    xml = (
        '<?xml version="1.0"?><ErrorResponse xmlns="http://queue.amazonaws.com/doc/2012-11-05/">'
        f"<Error><Type>{side}</Type><Code>{code}</Code><Message>{message}</Message><Detail/>"
        f"</Error><RequestId>{request_id}</RequestId></ErrorResponse>"
    )
    return Fault(
        status, (("Content-Type", "text/xml"), ("x-amzn-RequestId", request_id)), xml.encode()
    )


def _json_headers(request_id: str) -> tuple[tuple[str, str], ...]:
    return (("Content-Type", "application/x-amz-json-1.0"), ("x-amzn-RequestId", request_id))


class FaultPlan:
    """Which requests to fault: ``rate`` of those to ``services``, kinds drawn from ``kinds``."""

    def __init__(
        self,
        rate: float,
        seed: int,
        *,
        services: Iterable[str] = FAULTED_SERVICES,
        kinds: Iterable[str] = FAULT_KINDS,
    ) -> None:
        """Raises: ValueError: a rate outside 0..1 or an unknown kind."""
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"fault rate must be 0..1, got {rate}")
        self.rate = rate
        self.services = frozenset(services)
        self.kinds = tuple(kinds)
        if unknown := set(self.kinds) - set(FAULT_KINDS) or not self.kinds:
            raise ValueError(f"fault kinds must be some of {FAULT_KINDS}, got {unknown or 'none'}")
        self._random = random.Random(seed)
        self._lock = threading.Lock()

    def decide(self, target: Target | None) -> str | None:
        """The kind of fault to answer ``target`` with, or None to forward it."""
        if target is None or target.service not in self.services:
            return None
        with self._lock:
            if self._random.random() >= self.rate:
                return None
            return self._random.choice(self.kinds)


class FaultProxy:
    """A threaded HTTP proxy on ``host``: forwards to ``upstream``, faults what ``plan`` says.

    ``injected`` counts the faults by ``(service, operation, kind)``, ``forwarded`` the requests
    passed on by service (``""`` for those that name none).
    """

    def __init__(self, upstream: str, plan: FaultPlan, host: str = "127.0.0.1", port: int = 0):
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream must be an http:// URL, got {upstream!r}")
        self.upstream = (parts.hostname, parts.port or 80)
        self.plan = plan
        self.injected: Counter[tuple[str, str, str]] = Counter()
        self.forwarded: Counter[str] = Counter()
        self._counts_lock = threading.Lock()
        self._server = _QuietServer((host, port), _handler_class(self))
        self._thread: threading.Thread | None = None

    @property
    def endpoint_url(self) -> str:
        """The URL clients point at instead of the upstream's."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FaultProxy:
        """Serve in a daemon thread."""
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def count(self, target: Target | None, kind: str | None) -> None:
        """Count one request: injected (``kind``) or forwarded."""
        with self._counts_lock:
            if kind is not None and target is not None:
                self.injected[(target.service, target.operation, kind)] += 1
            else:
                self.forwarded[target.service if target else ""] += 1

    def summary(self) -> str:
        """``faults injected: 123 (dynamodb 70, sqs 53) of 2,460 requests``."""
        with self._counts_lock:
            by_service: Counter[str] = Counter()
            for (service, _, _), n in self.injected.items():
                by_service[service] += n
            total = sum(by_service.values())
            seen = total + sum(self.forwarded.values())
        services = ", ".join(f"{s} {n}" for s, n in sorted(by_service.items()))
        return f"faults injected: {total} ({services or 'none'}) of {seen:,} requests"


class _QuietServer(ThreadingHTTPServer):
    """Clients of the soak are SIGKILLed mid-request: a dropped connection is no error here."""

    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        """Say nothing (http.server prints a traceback to stderr)."""


def _handler_class(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    """The request handler bound to ``proxy`` (http.server builds one per connection)."""

    class _Relay(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        upstream: http.client.HTTPConnection | None = None

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002  # stdlib's name
            """Quiet: the soak reports counts, not one line per request."""

        def do_request(self) -> None:
            body = self._body()
            headers = {k: v for k, v in self.headers.items()}
            target = target_of(headers, self.path, body)
            kind = proxy.plan.decide(target)
            proxy.count(target, kind)
            if kind is not None and target is not None:
                fault = fault_response(target, kind, str(uuid.uuid4()))
                self._answer(fault.status, fault.headers, fault.body)
                return
            try:
                status, answer_headers, answer = self._forward(headers, body)
            except (OSError, http.client.HTTPException) as exc:  # the emulator went away
                status, answer_headers, answer = 502, [], f"upstream: {exc}".encode()
            try:
                self._answer(status, answer_headers, answer)
            except OSError:
                self.close_connection = True  # the client went away (a killed consumer)

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_request

        def _body(self) -> bytes:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                chunks = []
                while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                self.rfile.readline()
                return b"".join(chunks)
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _forward(
            self, headers: Mapping[str, str], body: bytes
        ) -> tuple[int, list[tuple[str, str]], bytes]:
            sent = {k: v for k, v in headers.items() if k.lower() not in _HOP_BY_HOP}
            sent["Content-Length"] = str(len(body))
            while True:
                reused = self.upstream is not None
                connection = self._connection()
                try:
                    connection.request(self.command, self.path, body=body, headers=sent)
                    response = connection.getresponse()
                    data = response.read()
                except (ConnectionError, http.client.HTTPException):
                    connection.close()
                    self.upstream = None
                    if reused:  # the emulator closed an idle kept-alive connection: once more
                        continue
                    raise
                kept = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP]
                return response.status, kept, data

        def _connection(self) -> http.client.HTTPConnection:
            if self.upstream is None:
                host, port = proxy.upstream
                self.upstream = http.client.HTTPConnection(host, port, timeout=UPSTREAM_TIMEOUT)
            return self.upstream

        def _answer(self, status: int, headers: Iterable[tuple[str, str]], body: bytes) -> None:
            self.send_response_only(status)
            for name, value in headers:
                if name.lower() not in {"content-length", "date", "server"}:
                    self.send_header(name, value)
            length = dict((k.lower(), v) for k, v in headers).get("content-length")
            head = self.command == "HEAD"
            self.send_header("Content-Length", (length or "0") if head else str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)

    return _Relay
