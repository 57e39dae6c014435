"""A speed fix to the embedded emulator: moto's answers are unchanged, only how fast it gives them.

moto 5's ``TransactWriteItems`` backs up each table it touches before applying the transaction
(to restore it when the transaction is cancelled) -- once per *item* of the transaction, not per
table: a claim of ten tasks (ten updates, ten revocation-marker checks) deep-copies the results
table twenty times. On a table of 2,000 items that is 0.8 s per transaction; the claim then
dominates every Lambda-path drain and most of the test suite's time. The copies are identical
(the first loop of moto's method makes them all before anything is written), so making each
table's copy once per call gives the same backup. moto's other deep copies are left alone.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from typing import Any

from moto.dynamodb import models
from moto.dynamodb.models.table import Table

__all__ = ["install"]

_FIXED = "_celery_lambda_copies_tables_once"


class _CopyModule:
    """``copy`` for moto's DynamoDB models: a table is deep-copied once per transaction."""

    def __init__(self, table_type: type) -> None:
        self._table_type = table_type
        self._local = threading.local()

    def __getattr__(self, name: str) -> Any:
        return getattr(copy, name)

    def deepcopy(self, value: Any, memo: dict[int, Any] | None = None) -> Any:
        copies: dict[int, tuple[Any, Any]] | None = getattr(self._local, "copies", None)
        if copies is None or memo is not None or not isinstance(value, self._table_type):
            return copy.deepcopy(value, memo)
        if id(value) not in copies:
            copies[id(value)] = (value, copy.deepcopy(value))  # the value keeps its id unique
        return copies[id(value)][1]

    def once_per_call(self, method: Callable[..., Any]) -> Callable[..., Any]:
        def transact_write_items(backend: Any, *args: Any, **kwargs: Any) -> Any:
            self._local.copies = {}
            try:
                return method(backend, *args, **kwargs)
            finally:
                self._local.copies = None

        setattr(transact_write_items, _FIXED, True)
        return transact_write_items


def install() -> None:
    """Patch moto's DynamoDB backend in this process (idempotent)."""
    method = models.DynamoDBBackend.transact_write_items
    if getattr(method, _FIXED, False):
        return
    shim = _CopyModule(Table)
    models.copy = shim  # type: ignore[attr-defined,assignment]
    models.DynamoDBBackend.transact_write_items = shim.once_per_call(method)  # type: ignore[method-assign]
