"""The Celery application and the examples from the original brief.

``celery -A tasks worker --loglevel=info`` runs a worker; ``from tasks import add; add.delay(4, 4)``
publishes to SQS; the Lambda handler serves the same app (``CELERY_APP=tasks:app``).
"""

from tasks.application import app
from tasks.examples import (
    add,
    always_fails,
    create_user,
    dump_context,
    error_handler,
    flaky,
    upload_files,
    xsum,
)

__all__ = [
    "add",
    "always_fails",
    "app",
    "create_user",
    "dump_context",
    "error_handler",
    "flaky",
    "upload_files",
    "xsum",
]
