"""The result backend's side of Celery's canvas: chord parts, chord joins, failed chains.

:class:`CanvasBackend` is Celery's DynamoDB backend with the methods Celery's canvas calls
replaced; :class:`infra.store.results.DynamoDBBackend` builds on it (the client, the table and
the writes are its). What each method changes, and why, is in :mod:`infra.store.chords` (counting
a part in one request against the header's real size; joins bounded for nested groups) and
:mod:`infra.store.failed_chains` (a failure reaching the groups of a chain).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from typing import Any

from botocore.exceptions import ClientError
from celery.backends.dynamodb import DynamoDBBackend as _StockDynamoDBBackend
from celery.result import ResultSet

from infra.core.errors import is_condition_failure, store_errors
from infra.store.chords import count_part, iter_nested, part_count, size_write, sized_request
from infra.store.failed_chains import expand_groups

__all__ = ["CanvasBackend"]


class CanvasBackend(_StockDynamoDBBackend):  # type: ignore[misc]
    """Celery's DynamoDB backend with its chord counting, chord joins and chain failures ours."""

    table_name: str
    client: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # A part's count, made by on_chord_part_return before Celery's code counts it (incr).
        self._counted = threading.local()

    def incr(self, key: str | bytes) -> int:
        """Atomically increase a chord counter; for the part :meth:`on_chord_part_return`
        counted in this thread, the count it made."""
        item_id = str(key)  # Celery's DynamoDB backend keeps str() of the key as the item's id
        made = self._counted.__dict__.pop(item_id, None)
        if made is not None:
            return int(made)
        with store_errors(f"incrementing {item_id}"):
            count: int = super().incr(key)
        return count

    def set_chord_size(self, group_id: str, chord_size: int) -> None:
        """Record the header's real size on the chord's counter (:mod:`infra.store.chords`).

        Raises:
            StoreError: DynamoDB refused the write (other than its condition) or was unreachable.
        """
        key = str(self.get_key_for_chord(group_id))
        with store_errors(f"recording the size of chord {group_id}"):
            try:
                self.client.update_item(**size_write(self.table_name, key, chord_size))
            except ClientError as exc:
                if not is_condition_failure(exc):  # failed: not a chord's id (a nested group)
                    raise

    def on_chord_part_return(self, request: Any, state: str, result: Any, **kwargs: Any) -> None:
        """Count the part and read the recorded size in one request; only the part reaching the
        size (or any, without one) goes on to Celery's join, sending and clean-up, with the
        body's ``chord_size`` set and its count made.

        Raises:
            StoreError: the part could not be counted.
        """
        group_id, chord = getattr(request, "group", None), getattr(request, "chord", None)
        if not group_id or not isinstance(chord, Mapping):
            super().on_chord_part_return(request, state, result, **kwargs)
            return
        key = str(self.get_key_for_chord(group_id))
        with store_errors(f"counting a part of chord {group_id}"):
            try:
                response = self.client.update_item(**count_part(self.table_name, key))
            except ClientError as exc:
                if not is_condition_failure(exc):
                    raise
                # No counter: the chord has ended. Celery's code says so, on the body.
                super().on_chord_part_return(request, state, result, **kwargs)
                return
        count, size = part_count(response)
        if size is not None and count < size:
            return
        self._counted.__dict__[key] = count
        try:
            sized = request if size is None else sized_request(request, size)
            super().on_chord_part_return(sized, state, result, **kwargs)
        finally:
            self._counted.__dict__.pop(key, None)

    def iter_native(
        self, result: ResultSet, timeout: float | None = None, **options: Any
    ) -> Iterator[tuple[str, Any]]:
        """Celery's native join iterator (``options``: its interval, no_ack, on_message and
        on_interval), nested groups waited for under ``timeout`` too
        (:func:`infra.store.chords.iter_nested`).

        Raises:
            celery.exceptions.TimeoutError: a leaf was not ready within ``timeout``.
        """
        self._ensure_not_eager()
        yield from iter_nested(self.get_many, result.results, timeout=timeout, **options)

    def _fail_chain(self, chain: Any, exc: BaseException, *args: Any, **kwargs: Any) -> None:
        """Celery's failure propagation, into the groups of the chain too (Celery #6437)."""
        super()._fail_chain(expand_groups(chain), exc, *args, **kwargs)
