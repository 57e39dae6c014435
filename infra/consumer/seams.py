"""What the Lambda pipeline talks to, as Protocols: the claim store, the rate limiter, the result
writer of a batch and the queue records are handed back to.

The real ones are :class:`infra.store.claims.BatchClaims`,
:class:`infra.store.ratelimit.RateLimiter`, :class:`infra.store.result_batch.ResultBatch` and a
boto3 SQS client, wired in :mod:`infra.consumer.runtime`; the unit tests drive the pipeline with
in-memory fakes of them (``tests/fakes.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from infra.store.claim_requests import ClaimOutcome, ClaimRequest
from infra.store.ratelimit import HandBack

__all__ = ["Claims", "HandBackQueue", "OutcomeWriter", "Pacer"]


class Claims(Protocol):
    """Claims on task ids for one SQS batch (:class:`~infra.store.claims.BatchClaims`)."""

    def prepare(
        self, items: Sequence[tuple[str, ClaimRequest]], owner: str, lease_until: float
    ) -> None:
        """Claim every ``(message id, request)`` of the batch in one go, before processing."""

    def outcome(
        self, message_id: str, request: ClaimRequest, owner: str, lease_until: float
    ) -> ClaimOutcome:
        """The answer to the record's claim (prepared, or made now).

        Raises:
            StoreError: the claim could not be made.
        """

    def release(self, task_id: str, owner: str) -> bool:
        """Give up ``owner``'s claim on ``task_id``; False when it no longer held one.

        Raises:
            StoreError: the claim could not be released.
        """


class Pacer(Protocol):
    """Turns under tasks' rate limits, shared by every consumer
    (:class:`~infra.store.ratelimit.RateLimiter`)."""

    def take_turn(self, task_name: str, interval: float, budget: float) -> HandBack | None:
        """None once the task may start; else how long its message should go back for.

        Raises:
            StoreError: the turn could not be asked for.
        """


class OutcomeWriter(Protocol):
    """A batch's SUCCESS/FAILURE writes, written together when the batch settles
    (:class:`~infra.store.result_batch.ResultBatch`)."""

    def state_of(self, task_id: str) -> str | None:
        """The state of ``task_id`` waiting to be written, if any."""

    def flush(self) -> dict[str, str]:
        """Write everything pending; the task ids whose write failed, with the reason."""


class HandBackQueue(Protocol):
    """The SQS API records are handed back through (a boto3 SQS client)."""

    def send_message(self, **request: object) -> object:
        """SendMessage."""

    def change_message_visibility(self, **request: object) -> object:
        """ChangeMessageVisibility."""
