"""moto's server app behind a WSGI middleware that counts AWS requests by service and operation.

The performance budget counts AWS requests per task at the emulator, whoever makes them (boto3,
kombu's pycurl client, Celery's backends), so the count is taken where every request arrives:

- service: the SigV4 credential scope ``<key>/<date>/<region>/<service>/aws4_request``, from the
  ``Authorization`` header or, for a presigned URL, the ``X-Amz-Credential`` query parameter;
- operation: ``X-Amz-Target`` (JSON protocols: DynamoDB, SQS), else ``Action`` (query protocol,
  in the query string or the form body), else for S3 the REST shape (method, bucket/key, the
  sub-resource in the query string).

``GET /_counts`` answers ``{"service:Operation": n}``; ``POST /_counts/reset`` answers the same
and clears it in one step. Neither reaches moto, and moto's own ``/moto-api`` control plane is
not counted: it is not an AWS request. Run as ``python -m devtools.cloud.moto_counting -H HOST -p
PORT`` (what :class:`devtools.cloud.emulator.Emulator` starts).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import sys
import threading
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple

from devtools.cloud import moto_fixes
from devtools.cloud.emulator import COUNTS_PATH, RESET_PATH

__all__ = [
    "CountingMiddleware",
    "main",
    "operation_of",
    "s3_operation",
    "service_of",
]

UNKNOWN = "Unknown"

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

# S3 sub-resources (the query parameter names a request on a bucket or key is about) and the
# noun of their Get/Put/Delete operations, per https://docs.aws.amazon.com/AmazonS3/latest/API/.
_BUCKET_SUBRESOURCES = {
    "accelerate": "BucketAccelerateConfiguration",
    "acl": "BucketAcl",
    "cors": "BucketCors",
    "encryption": "BucketEncryption",
    "lifecycle": "BucketLifecycleConfiguration",
    "location": "BucketLocation",
    "logging": "BucketLogging",
    "notification": "BucketNotificationConfiguration",
    "ownershipControls": "BucketOwnershipControls",
    "policy": "BucketPolicy",
    "publicAccessBlock": "PublicAccessBlock",
    "replication": "BucketReplication",
    "tagging": "BucketTagging",
    "versioning": "BucketVersioning",
    "website": "BucketWebsite",
}
_OBJECT_SUBRESOURCES = {
    "acl": "ObjectAcl",
    "legal-hold": "ObjectLegalHold",
    "retention": "ObjectRetention",
    "tagging": "ObjectTagging",
}
_VERBS = {"GET": "Get", "PUT": "Put", "DELETE": "Delete"}


# ---------------------------------------------------------------- classification (pure)


def _query(environ: Mapping[str, Any]) -> dict[str, str]:
    pairs = urllib.parse.parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    return dict(pairs)


def service_of(environ: Mapping[str, Any]) -> str:
    """The SigV4 signing name of the request's service, or ``"unsigned"``.

    SigV2 (``Authorization: AWS key:signature``, or ``AWSAccessKeyId`` in a URL that boto3
    presigned) is S3's: the only service here that still accepts it.
    """
    auth = str(environ.get("HTTP_AUTHORIZATION", ""))
    query = _query(environ)
    if "Credential=" in auth:
        credential = auth.split("Credential=", 1)[1].split(",", 1)[0].strip()
    else:
        credential = query.get("X-Amz-Credential", "")
    parts = credential.split("/")
    if len(parts) == 5 and parts[4] == "aws4_request":
        return parts[3].lower()
    if auth.startswith("AWS ") or "AWSAccessKeyId" in query:
        return "s3"
    return "unsigned"


def s3_operation(
    method: str, path: str, query: Mapping[str, str], headers: Mapping[str, str]
) -> str:
    """The S3 REST operation a path-style request is (``PutObject``, ``ListObjectsV2``, ...)."""
    bucket, _, key = path.lstrip("/").partition("/")
    copy = "x-amz-copy-source" in {name.lower() for name in headers}
    if not bucket:
        return "ListBuckets" if method == "GET" else UNKNOWN
    if not key:
        return _s3_bucket_operation(method, query)
    if "uploadId" in query:
        return _s3_upload_operation(method, query, copy)
    if method == "POST" and "uploads" in query:
        return "CreateMultipartUpload"
    for name, noun in _OBJECT_SUBRESOURCES.items():
        if name in query and method in _VERBS:
            return _VERBS[method] + noun
    plain = {"GET": "GetObject", "HEAD": "HeadObject", "DELETE": "DeleteObject"}
    if method == "PUT":
        return "CopyObject" if copy else "PutObject"
    return plain.get(method, UNKNOWN)


def _s3_bucket_operation(method: str, query: Mapping[str, str]) -> str:
    for name, noun in _BUCKET_SUBRESOURCES.items():
        if name in query and method in _VERBS:
            return _VERBS[method] + noun
    if method == "GET":
        if query.get("list-type") == "2":
            return "ListObjectsV2"
        if "versions" in query:
            return "ListObjectVersions"
        if "uploads" in query:
            return "ListMultipartUploads"
        return "ListObjects"
    if method == "POST" and "delete" in query:
        return "DeleteObjects"
    plain = {"PUT": "CreateBucket", "HEAD": "HeadBucket", "DELETE": "DeleteBucket"}
    return plain.get(method, UNKNOWN)


def _s3_upload_operation(method: str, query: Mapping[str, str], copy: bool) -> str:
    if method == "PUT":
        return "UploadPartCopy" if copy else "UploadPart"
    parts = {
        "GET": "ListParts",
        "POST": "CompleteMultipartUpload",
        "DELETE": "AbortMultipartUpload",
    }
    return parts.get(method, UNKNOWN)


def _s3_path(environ: Mapping[str, Any]) -> str:
    """The path in path style: a virtual-hosted bucket (``bucket.host``) is moved into it."""
    path = str(environ.get("PATH_INFO", "/"))
    host = str(environ.get("HTTP_HOST", "")).rsplit(":", 1)[0]
    label, dot, rest = host.partition(".")
    if not dot or host.replace(".", "").isdigit() or label.startswith("s3") or not rest:
        return path
    return f"/{label}{path}"


def _headers(environ: Mapping[str, Any]) -> dict[str, str]:
    return {
        name[5:].replace("_", "-").lower(): str(value)
        for name, value in environ.items()
        if name.startswith("HTTP_")
    }


def _form_action(environ: Environ) -> str | None:
    """``Action`` from a form-encoded body, which is read and put back for moto."""
    if not str(environ.get("CONTENT_TYPE", "")).startswith("application/x-www-form-urlencoded"):
        return None
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return None
    body = environ["wsgi.input"].read(length) if length > 0 else b""
    environ["wsgi.input"] = io.BytesIO(body)
    return dict(urllib.parse.parse_qsl(body.decode("utf-8", "replace"))).get("Action")


def operation_of(environ: Environ, service: str) -> str:
    """The API operation of a request; may read (and restore) a form-encoded body."""
    target = str(environ.get("HTTP_X_AMZ_TARGET", ""))
    if target:
        return target.rsplit(".", 1)[-1]
    action = _query(environ).get("Action") or _form_action(environ)
    if action:
        return action
    if service == "s3":
        method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        return s3_operation(method, _s3_path(environ), _query(environ), _headers(environ))
    return UNKNOWN


# ---------------------------------------------------------------- middleware


class CountingMiddleware:
    """WSGI middleware: count each AWS request by ``service:Operation``, then pass it on."""

    def __init__(self, app: WSGIApp) -> None:
        self._app = app
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def counts(self) -> dict[str, int]:
        """A snapshot of the counts."""
        with self._lock:
            return dict(self._counts)

    def reset(self) -> dict[str, int]:
        """Clear the counts; the counts until now."""
        with self._lock:
            counts, self._counts = dict(self._counts), Counter()
        return counts

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        path = str(environ.get("PATH_INFO", ""))
        method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        if path == COUNTS_PATH and method == "GET":
            return _json(start_response, self.counts())
        if path == RESET_PATH and method == "POST":
            return _json(start_response, self.reset())
        if not path.startswith("/moto-api"):
            service = service_of(environ)
            key = f"{service}:{operation_of(environ, service)}"
            with self._lock:
                self._counts[key] += 1
        return self._app(environ, start_response)


def _json(start_response: StartResponse, value: object) -> list[bytes]:
    body = json.dumps(value, sort_keys=True).encode()
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    start_response("200 OK", headers)
    return [body]


# ---------------------------------------------------------------- server


def main(argv: list[str] | None = None) -> None:
    """Serve moto's app, counted, as ``python -m moto.server`` does (threaded werkzeug)."""
    moto_fixes.install()
    parser = argparse.ArgumentParser(prog="python -m devtools.cloud.moto_counting")
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=5000)
    args = parser.parse_args(argv)
    os.environ.setdefault("MOTO_PORT", str(args.port))  # moto's calls to itself, as moto.server
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: sys.exit(0))
    app = CountingMiddleware(DomainDispatcherApplication(create_backend_app))
    run_simple(args.host, args.port, app, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
