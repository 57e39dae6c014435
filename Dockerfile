# A celery worker for tasks longer than Lambda's 15 minutes: the same app, queues, table and
# bucket as the Lambda consumer (see template.yaml's optional ECS service). Built by CI elsewhere;
# these machines have no Docker engine. `--build-arg EXTRAS=[cli]` builds the web dashboard's image
# instead (template.yaml's WebDashboardImage): the same app with `celery -A tasks lambda dashboard`.
FROM python:3.12-slim

# The worker extra: kombu's asynchronous SQS client (pycurl), which `celery worker` needs on SQS.
ARG EXTRAS="[worker]"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY tasks ./tasks
COPY infra ./infra
COPY handlers ./handlers
COPY devtools ./devtools
RUN pip install --constraint constraints.txt ".${EXTRAS}" \
    && useradd --system --uid 10001 --home-dir /app worker

USER 10001
# Environment (CELERY_QUEUE_URLS, RESULTS_TABLE, RESULTS_BUCKET, AWS_REGION) comes from the task
# definition; credentials from the task role.
CMD ["celery", "-A", "tasks", "worker", "--loglevel=info", "--without-gossip", "--without-mingle", "--without-heartbeat"]
