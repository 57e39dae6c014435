"""The Celery application, configured from ``tasks/celeryconfig.py`` as the brief recommends."""

from celery import Celery

import infra

# ClaimingTask: a worker claims each task id before running it, like the Lambda path does.
app = Celery("tasks", task_cls="infra.worker.task:ClaimingTask")
app.config_from_object("tasks.celeryconfig")
# Our SQS transport (native delays, large bodies in S3, FIFO ids, batched groups) and revoke.
infra.configure(app)
