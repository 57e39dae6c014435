"""The local tooling around the engine: nothing here ships to Lambda.

- :mod:`devtools.cloud`: the local cloud (the embedded moto emulator, LocalStack), deploy-local
  and the event-source emulator;
- :mod:`devtools.ops`: the operator's commands (queues, inspect, dlq, stats, schedule);
- :mod:`devtools.dashboard`: ``lambda dashboard``, the same commands as a token-protected web UI;
- :mod:`devtools.bench`: the benchmarks; :mod:`devtools.checks`: doctor, checkov, SAM CLI;
- :mod:`devtools.soak`: the soak, both consumers killed and faulted, counted against a ledger;
- :mod:`devtools.cli`: ``celery -A <app> lambda ...``, the commands over all of them;
  :mod:`devtools.demo`, :mod:`devtools.events` (``make events``) and :mod:`devtools.examples`,
  the example tasks they find by name in the app;
- :mod:`devtools.testing`: ``start_lambda`` and its pytest fixtures, the Lambda path as Celery's
  ``start_worker`` runs a worker for a test.

May import: :mod:`infra` (never the other way), celery, kombu, boto3, rich, click,
localstack-client, moto, aws-sam-translator, pytest (the fixtures), and starlette, jinja2 and
uvicorn (the dashboard)
-- never the example app (``tasks``) nor ``handlers``: the app comes from ``-A``, the handler
from the template, by name.
"""

import importlib.util

__all__ = [
    "bench",
    "checks",
    "cli",
    "cloud",
    "dashboard",
    "demo",
    "events",
    "examples",
    "ops",
    "soak",
    "testing",
]

_CLI_EXTRA = ("rich", "localstack_client", "moto", "samtranslator", "yaml")
if _missing := [name for name in _CLI_EXTRA if importlib.util.find_spec(name) is None]:
    # Celery shows a plugin that fails to load as a broken `celery lambda` command carrying this
    # message; every other `celery` command (`worker` in a production image) still runs.
    raise ModuleNotFoundError(
        "`celery lambda` needs the cli extra: pip install 'celery-lambda[cli]' "
        f"(missing: {', '.join(_missing)})"
    )
