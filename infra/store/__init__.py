"""The result store: DynamoDB (and S3 for what does not fit an item), in Celery's format.

The item layout (:mod:`~infra.store.items`), the result backend (:mod:`~infra.store.results`)
and its requests (:mod:`~infra.store.result_requests`), chord counting and joins
(:mod:`~infra.store.chords`, :mod:`~infra.store.canvas_backend`), failures reaching the groups
of a chain (:mod:`~infra.store.failed_chains`), a batch's outcomes written together
(:mod:`~infra.store.result_batch`), claims and revocation markers (:mod:`~infra.store.claims`,
:mod:`~infra.store.claim_requests`, :mod:`~infra.store.revoke`), the rate-limit turns
(:mod:`~infra.store.ratelimit`) and the state of a task its consumer does not register
(:mod:`~infra.store.unregistered`).

May import: :mod:`infra.core`, :mod:`infra.wire`.
"""

__all__ = [
    "canvas_backend",
    "chords",
    "claim_requests",
    "claims",
    "failed_chains",
    "items",
    "ratelimit",
    "result_batch",
    "result_requests",
    "results",
    "revoke",
    "unregistered",
]
