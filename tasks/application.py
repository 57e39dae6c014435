"""The Celery application: its own choices in ``tasks/celeryconfig.py`` (queues, routes, beat
schedule), then the one call that makes it ready from the environment."""

from celery import Celery

import infra

app = Celery("tasks")
app.config_from_object("tasks.celeryconfig")
# Our SQS transport and queue URLs, the results table, claims on workers, revoke, batched groups.
infra.configure(app)
