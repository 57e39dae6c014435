"""The brief's example tasks, found by name in the app that ``-A`` names (never imported).

The demo, ``make events`` and the benchmarks publish these; any app that registers tasks under
these names serves (``celery -A tasks`` does: see ``tasks/examples.py``).
"""

from __future__ import annotations

from typing import Any

from infra.core.errors import ConfigurationError

__all__ = [
    "ADD",
    "ALWAYS_FAILS",
    "CREATE_USER",
    "DUMP_CONTEXT",
    "ERROR_HANDLER",
    "FLAKY",
    "UPLOAD_FILES",
    "XSUM",
    "example_tasks",
]

ADD = "tasks.add"
XSUM = "tasks.xsum"
ALWAYS_FAILS = "tasks.always_fails"
ERROR_HANDLER = "tasks.error_handler"
UPLOAD_FILES = "tasks.upload_files"
FLAKY = "tasks.flaky"
DUMP_CONTEXT = "tasks.dump_context"
CREATE_USER = "create_new_user"


def example_tasks(app: Any, *names: str) -> dict[str, Any]:
    """The app's registered tasks of these names, by name.

    Raises:
        ConfigurationError: the app registers not all of them.
    """
    app.loader.import_default_modules()  # the modules of `imports`/`include`, as a worker does
    registered = app.tasks
    missing = sorted(set(names) - set(registered))
    if missing:
        raise ConfigurationError(
            f"the app {app.main!r} has no task {', '.join(missing)}: this command publishes the "
            "example tasks; run it with `celery -A tasks` or an app that registers them"
        )
    return {name: registered[name] for name in names}
