"""The served Celery app: ``CELERY_APP`` imported and prepared once, as a worker prepares its app.

Both Lambda entry points (the SQS consumer and the scheduled tick) serve the app this names.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from celery.utils.imports import symbol_by_name

from infra.core.errors import ConfigurationError
from infra.core.observability import logger
from infra.core.settings import Settings

__all__ = ["load_app"]


def load_app(settings: Settings) -> Any:
    """Import ``CELERY_APP`` and prepare it as a worker prepares its app.

    Raises:
        ConfigurationError: the module or attribute cannot be imported.
    """
    try:
        app = symbol_by_name(settings.app)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"CELERY_APP={settings.app!r} cannot be imported: {exc}") from exc
    # Celery's own lines ("Task ... succeeded", tracebacks) in the same JSON, with the record keys.
    copy_config_to_registered_loggers(source_logger=logger, include={"celery"})
    app.loader.import_default_modules()
    app.finalize(auto=True)
    app.set_current()
    return app
