"""The last fired slot of each beat entry, in the results table (one item per entry).

The item (``infra.store.items.beat_key``) carries no ``ttl`` -- the record must outlive any result
-- and none of the index attributes. Requests are built by pure functions and sent in one line:

- read: one ``BatchGetItem`` (strongly consistent) for up to 100 entries per tick;
- claim: ``UpdateItem`` with ``attribute_not_exists(last_slot) OR last_slot < :slot``; a refusal
  returns the item, so the tick learns which slot is recorded;
- release: ``UpdateItem`` setting ``last_slot`` to the second before the slot, with
  ``last_slot = :slot``: it never undoes a later tick's claim.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from botocore.exceptions import BotoCoreError, ClientError

from infra.beat.engine import Claim
from infra.core.errors import StoreError
from infra.core.limits import DYNAMODB_MAX_BATCH_GET_ITEMS
from infra.store.items import beat_key

__all__ = [
    "DynamoDBBeatState",
    "batch_get_request",
    "claim_request",
    "release_request",
]

_UNPROCESSED_ROUNDS: Final = 5
"""BatchGetItem rounds for keys DynamoDB left unprocessed (throttling) before giving up."""
_CONDITION_FAILED: Final = "ConditionalCheckFailedException"


def batch_get_request(table: str, names: Sequence[str]) -> dict[str, Any]:
    """The BatchGetItem reading the records of ``names`` (at most 100)."""
    return {
        "RequestItems": {
            table: {
                "Keys": [{"id": {"S": beat_key(name)}} for name in dict.fromkeys(names)],
                "ConsistentRead": True,
                "ProjectionExpression": "id, last_slot",
            }
        }
    }


def claim_request(table: str, name: str, slot: int, now: float) -> dict[str, Any]:
    """The UpdateItem recording ``slot`` unless this or a later slot is recorded."""
    return {
        "TableName": table,
        "Key": {"id": {"S": beat_key(name)}},
        "UpdateExpression": "SET last_slot = :slot, updated_at = :now",
        "ConditionExpression": "attribute_not_exists(last_slot) OR last_slot < :slot",
        "ExpressionAttributeValues": {":slot": {"N": str(slot)}, ":now": {"N": repr(now)}},
        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
    }


def release_request(table: str, name: str, slot: int, now: float) -> dict[str, Any]:
    """The UpdateItem giving ``slot`` back, only while it is the recorded one."""
    return {
        "TableName": table,
        "Key": {"id": {"S": beat_key(name)}},
        "UpdateExpression": "SET last_slot = :before, updated_at = :now",
        "ConditionExpression": "last_slot = :slot",
        "ExpressionAttributeValues": {
            ":slot": {"N": str(slot)},
            ":before": {"N": str(slot - 1)},
            ":now": {"N": repr(now)},
        },
    }


def _slot(item: Mapping[str, Any]) -> int | None:
    value = item.get("last_slot", {}).get("N")
    return None if value is None else int(value)


def _refused(exc: ClientError) -> bool:
    return bool(exc.response.get("Error", {}).get("Code") == _CONDITION_FAILED)


@dataclass(frozen=True, slots=True)
class DynamoDBBeatState:
    """:class:`infra.beat.engine.BeatState` in the results table."""

    dynamodb: Any
    table: str
    clock: Callable[[], float] = time.time

    def last_slots(self, names: Sequence[str]) -> dict[str, int]:
        """The recorded slot of each named entry that has one.

        Raises:
            StoreError: the table could not be read.
        """
        by_key = {beat_key(name): name for name in names}
        found: dict[str, int] = {}
        unique = list(by_key.values())
        for start in range(0, len(unique), DYNAMODB_MAX_BATCH_GET_ITEMS):
            request = batch_get_request(
                self.table, unique[start : start + DYNAMODB_MAX_BATCH_GET_ITEMS]
            )
            for item in self._batch_get(request):
                slot = _slot(item)
                if slot is not None:
                    found[by_key[item["id"]["S"]]] = slot
        return found

    def _batch_get(self, request: dict[str, Any]) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        try:
            for _ in range(_UNPROCESSED_ROUNDS):
                response = self.dynamodb.batch_get_item(**request)
                items += response.get("Responses", {}).get(self.table, [])
                if not response.get("UnprocessedKeys"):
                    return items
                request = {"RequestItems": response["UnprocessedKeys"]}
        except (BotoCoreError, ClientError) as exc:
            raise StoreError(f"beat records in {self.table}: {exc}") from exc
        raise StoreError(f"beat records in {self.table}: keys left unprocessed (throttled)")

    def claim(self, name: str, slot: int) -> Claim:
        """Record ``slot`` unless this or a later slot is recorded.

        Raises:
            StoreError: the table could not be written.
        """
        try:
            self.dynamodb.update_item(**claim_request(self.table, name, slot, self.clock()))
        except ClientError as exc:
            if not _refused(exc):
                raise StoreError(f"claiming {name} at {slot}: {exc}") from exc
            return Claim(won=False, recorded=_slot(exc.response.get("Item", {})))
        except BotoCoreError as exc:
            raise StoreError(f"claiming {name} at {slot}: {exc}") from exc
        return Claim(won=True)

    def release(self, name: str, slot: int) -> bool:
        """Give ``slot`` back; False when a later claim already replaced it.

        Raises:
            StoreError: the table could not be written.
        """
        try:
            self.dynamodb.update_item(**release_request(self.table, name, slot, self.clock()))
        except ClientError as exc:
            if _refused(exc):
                return False
            raise StoreError(f"releasing {name} at {slot}: {exc}") from exc
        except BotoCoreError as exc:
            raise StoreError(f"releasing {name} at {slot}: {exc}") from exc
        return True
