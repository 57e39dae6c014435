"""The Celery application, configured from ``tasks/celeryconfig.py`` as the brief recommends."""

from celery import Celery

from infra import revoke

# ClaimingTask: a worker claims each task id before running it, like the Lambda path does.
app = Celery("tasks", task_cls="infra.worker:ClaimingTask")
app.config_from_object("tasks.celeryconfig")
revoke.install(app)  # AsyncResult.revoke() works on SQS
