"""The soak (``celery -A tasks lambda soak``): both consumers on one queue, SIGKILLed at random
and restarted, behind a proxy that answers a share of the AWS requests with throttling and 500
errors; every task's effect is a ledger line, counted at the end against what was published.

- :mod:`~devtools.soak.proxy`: the fault-injecting HTTP proxy in front of the emulator;
- :mod:`~devtools.soak.ledger`: the append-only ledger and its arithmetic (lost, ran twice, DLQ);
- :mod:`~devtools.soak.app`: the soak's Celery app and its one task, which both consumers serve;
- :mod:`~devtools.soak.consumers`: the worker and the event-source emulator as killable groups;
- :mod:`~devtools.soak.run`: the run itself;
- :mod:`~devtools.soak.commands`: ``lambda soak``, loaded by the ``lambda`` group when it runs.

May import: :mod:`infra`, :mod:`devtools.cloud` and :mod:`devtools.ops`, celery, kombu, boto3
and rich.
"""

__all__ = ["app", "commands", "consumers", "ledger", "proxy", "run"]
