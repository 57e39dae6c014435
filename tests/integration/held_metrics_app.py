"""``tests.apps.probe`` for a worker that writes its metrics only when a metric of a (task,
queue) pair holds :data:`~infra.core.observability.MAX_VALUES` values, or at shutdown: never by
age, so how many EMF documents a run writes does not depend on how fast it runs."""

from infra.worker import signals
from tests.apps.probe import app

signals.FLUSH_SECONDS = 24 * 3600.0

__all__ = ["app"]
