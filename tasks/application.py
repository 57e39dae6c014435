"""The Celery application, configured from ``tasks/celeryconfig.py`` as the brief recommends."""

from celery import Celery

app = Celery("tasks")
app.config_from_object("tasks.celeryconfig")
