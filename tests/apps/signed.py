"""A test-only app whose task messages are signed (Celery's ``auth`` serializer).

Key, certificate and trusted-certificate store come from ``SIGNED_KEY``, ``SIGNED_CERT`` and
``SIGNED_STORE`` (a glob), which the test sets before importing this module.
"""

from __future__ import annotations

import os

from celery import Celery

import infra
from tests.apps.probe import record_call

app = Celery("signed", set_as_current=False, task_cls="infra.worker.task:ClaimingTask")
app.config_from_object("tasks.celeryconfig")
infra.configure(app)
app.conf.update(
    task_serializer="auth",
    accept_content=["auth"],
    result_accept_content=["json"],  # results are not signed; the store is trusted
    security_key=os.environ["SIGNED_KEY"],
    security_certificate=os.environ["SIGNED_CERT"],
    security_cert_store=os.environ["SIGNED_STORE"],
)
app.setup_security(serializer="json")


@app.task(name="signed.record")
def record(marker: str) -> str:
    """Count the call; return the marker."""
    record_call(marker)
    return marker
