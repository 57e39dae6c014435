"""User components for the Lambda path: small hook objects around each record.

Bootsteps customise a worker; these customise the handler. Subclass :class:`RecordHook`, override
what you need (the defaults do nothing) and register it for the app, either in its configuration::

    celery_lambda_hooks = ["myproject.hooks:TenantLogKeys"]

or with the decorator::

    @infra.core.hooks.register(app)
    class TenantLogKeys(RecordHook): ...

For each record the pipeline calls ``before_record``, then ``on_decode_error`` if the body is not
a task message we may run, else ``before_task`` once it is decoded; ``on_outcome`` when the task
was settled (ran, expired, revoked, skipped as a duplicate, handed back to wait); and always
``after_record``. A hook that raises is logged with its name and skipped: it never changes what
happens to the record. Celery's own signals (``task_prerun``, ``task_postrun``, ...) fire as on
a worker.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from celery.utils.imports import symbol_by_name

from infra.core.errors import ConfigurationError
from infra.core.observability import logger

__all__ = ["CONFIG_KEY", "Hooks", "RecordHook", "register"]

CONFIG_KEY = "celery_lambda_hooks"
"""The app setting listing hooks: instances, classes, or ``"module:Class"`` strings."""

H = TypeVar("H")


class RecordHook:
    """A Lambda-path hook; every method is a no-op until overridden."""

    def before_record(self, record: Mapping[str, Any], context: Any) -> None:
        """The record (Lambda's SQS record shape) is about to be processed."""

    def on_decode_error(self, record: Mapping[str, Any], error: Exception) -> None:
        """The record is not a task message we may run; it goes back to SQS, then the DLQ."""

    def before_task(self, message: Any, record: Mapping[str, Any]) -> None:
        """The record decoded to ``message`` (an :class:`infra.wire.protocol.TaskMessage`)."""

    def on_outcome(self, message: Any, outcome: Any) -> None:
        """The task was settled; ``outcome`` is an :class:`infra.consumer.runner.Outcome`."""

    def after_record(self, record: Mapping[str, Any], error: BaseException | None) -> None:
        """Processing ended; ``error`` is why the record goes back to SQS, None if acked."""


def register(app: Any) -> Callable[[H], H]:
    """Decorator registering a hook class (instantiated without arguments) or instance."""

    def add(hook: H) -> H:
        app.conf[CONFIG_KEY] = [*(app.conf.get(CONFIG_KEY) or ()), hook]
        return hook

    return add


def _instance(entry: Any) -> Any:
    """A configured hook: a ``"module:Class"`` string or class is instantiated.

    Raises:
        ConfigurationError: the string cannot be imported or the class not instantiated.
    """
    try:
        if isinstance(entry, str):
            entry = symbol_by_name(entry)
        return entry() if isinstance(entry, type) else entry
    except Exception as exc:
        raise ConfigurationError(f"{CONFIG_KEY}: cannot load hook {entry!r}: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Hooks:
    """The hooks of one app, called in order; failures are logged, never propagated."""

    hooks: tuple[Any, ...] = ()

    @classmethod
    def of(cls, app: Any) -> Hooks:
        """The hooks ``app`` configures.

        Raises:
            ConfigurationError: a configured hook cannot be loaded.
        """
        entries: Iterable[Any] = app.conf.get(CONFIG_KEY) or ()
        return cls(tuple(_instance(entry) for entry in entries))

    def call(self, method: str, *args: Any) -> None:
        """Call ``method`` on every hook that has it."""
        for hook in self.hooks:
            function = getattr(hook, method, None)
            if function is None:
                continue
            try:
                function(*args)
            except Exception:
                logger.exception(
                    "hook failed; the record is processed as if it were absent",
                    hook=type(hook).__name__,
                    hook_method=method,
                )
