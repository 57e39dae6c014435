"""The DynamoDB result backend: Celery's own item format, without runtime provisioning.

Selected with ``result_backend = "infra.results:DynamoDBBackend"``. Items keep exactly the shape
Celery's built-in ``dynamodb://`` backend reads (partition key ``id`` holding the literal
``"b'celery-task-meta-<id>'"``, binary ``result``, ``timestamp``, ``ttl``), so a stock Celery client
pointed at the same table reads every state this backend writes.

What differs from the stock backend, and why:

- the table comes from ``template.yaml``; the stock backend calls DescribeTable, CreateTable (a
  1-RCU provisioned table) and UpdateTimeToLive at runtime, which needs IAM rights a least-privilege
  function must not have;
- the client comes from :func:`infra.aws.client` (endpoint switch, retry policy);
- the ``ttl`` attribute follows the app's ``result_expires``.
"""

from __future__ import annotations

from typing import Any

from celery.backends.dynamodb import DynamoDBBackend as _StockDynamoDBBackend

from infra import aws
from infra.settings import Settings

__all__ = ["DynamoDBBackend"]


class DynamoDBBackend(_StockDynamoDBBackend):  # type: ignore[misc]
    """Celery's DynamoDB backend reading its table from settings and never provisioning it."""

    def __init__(self, url: str | None = None, *args: Any, **kwargs: Any) -> None:
        super().__init__(None, *args, **kwargs)
        self.settings = Settings.from_env()
        self.table_name = self.settings.results_table
        self.aws_region = self.settings.region
        expires = self.expires  # result_expires in seconds, None when disabled
        self.time_to_live_seconds = int(expires) if expires else None

    def _get_client(
        self, access_key_id: str | None = None, secret_access_key: str | None = None
    ) -> Any:
        """The shared DynamoDB client; the table is never described, created or altered."""
        client: Any = getattr(self, "_client", None)
        if client is None:
            client = self._client = aws.client("dynamodb", self.settings)
        return client
