"""Celery configuration for ``tasks.app``, loaded with ``app.config_from_object``.

Values come from the environment (see the configuration table in the README) through
:class:`infra.core.settings.Settings`. Check it the way the brief recommends::

    python -m tasks.celeryconfig
"""

from __future__ import annotations

from kombu.entity import Queue

from infra.core.config import transport_options
from infra.core.settings import Settings

_settings = Settings.from_env()

# Broker: Celery's SQS transport. With CELERY_QUEUE_URLS set (the template and `lambda deploy-local`
# set it) kombu uses `predefined_queues` and never lists or creates queues.
broker_url = _settings.broker_url
broker_connection_retry_on_startup = True
# Only on SQS: on Redis, kombu would read our polling_interval 0 as a BRPOP that never times out
# (an idle worker that never stops).
broker_transport_options = (
    transport_options(_settings) if _settings.broker_url.startswith("sqs") else {}
)

# Results: Celery's DynamoDB item format in the template's table, no runtime provisioning.
result_backend = "infra.store.results:DynamoDBBackend"
result_expires = 24 * 60 * 60

# JSON only: pickle is never accepted from the queue.
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
timezone = "UTC"
enable_utc = True

# A worker that dies mid-task leaves the message to come back, instead of losing it.
task_acks_late = True
task_reject_on_worker_lost = True

# Every queue routed to here exists in template.yaml with its DLQ and a Lambda event source.
task_default_queue = "celery"
task_queues = (Queue("celery"), Queue("high-priority"), Queue("low-priority"))
task_routes = {"tasks.upload_files": {"queue": "low-priority"}}
task_annotations = {"create_new_user": {"rate_limit": "10/s"}}
# rate_limit is enforced across every worker and Lambda invocation through the results table
# (infra.store.ratelimit); the worker's own per-process bucket would only add a second, local delay.
worker_disable_rate_limits = True

# User components of the Lambda path (infra.core.hooks): here, the tenant header in every log line.
celery_lambda_hooks = ["tasks.hooks:TenantLogKeys"]

# Resource protection on workers: replace a pool child after N tasks or once it holds too much
# memory (CELERY_WORKER_MAX_TASKS_PER_CHILD, CELERY_WORKER_MAX_MEMORY_PER_CHILD in KiB; 0 = off).
# The Lambda path has its own guard (infra.consumer.memory), derived from the function's memory
# size.
worker_max_tasks_per_child = _settings.worker_max_tasks_per_child or None
worker_max_memory_per_child = _settings.worker_max_memory_per_child or None

# Periodic tasks: published by the BeatFunction's tick on Lambda (handlers/beat.py) or by a stock
# `celery -A tasks beat` next to the workers -- run one or the other, never both. A sum a minute
# late is worth nothing, so it expires rather than piling up behind a stopped consumer.
beat_schedule = {
    "add-every-minute": {
        "task": "tasks.add",
        "schedule": 60.0,
        "args": (2, 2),
        "options": {"expires": 60},
    },
}

if __name__ == "__main__":
    print(f"broker_url = {broker_url!r}")
    print(f"result_backend = {result_backend!r} (table {_settings.results_table!r})")
    print(f"queues = {[q.name for q in task_queues]}, routes = {task_routes}")
    print(f"beat_schedule = {sorted(beat_schedule)}")
    print("configuration OK")
