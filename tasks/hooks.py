"""An example user component for the Lambda path: every log line names the task's tenant.

Publish with ``add.apply_async((2, 2), headers={"tenant": "acme"})``; while the handler processes
that record, each of its JSON log lines (ours and Celery's) carries ``"tenant": "acme"``.
Registered in ``tasks/celeryconfig.py`` (``celery_lambda_hooks``). With
``CELERY_LAMBDA_TENANT_HEADER=tenant`` the producer also sends the same header as the message's
``MessageGroupId`` on standard queues, so SQS serves the tenants fairly (SQS fair queues).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from infra.core.hooks import RecordHook
from infra.core.observability import logger


class TenantLogKeys(RecordHook):
    """Adds the ``tenant`` message header to the log keys while a record is processed."""

    def before_task(self, message: Any, record: Mapping[str, Any]) -> None:
        tenant = message.headers.get("tenant")
        if tenant:
            logger.append_keys(tenant=str(tenant))

    def after_record(self, record: Mapping[str, Any], error: BaseException | None) -> None:
        logger.remove_keys(["tenant"])
