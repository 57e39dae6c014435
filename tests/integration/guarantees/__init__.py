"""Delivery guarantees end to end: duplicates, a killed consumer, store faults, revocation.

The proof of issue 4 against the local cloud. Tasks are published with real ``apply_async`` by
the suite's own Celery app (:mod:`.app`: configured like ``tasks.app``, with ``ClaimingTask`` as
its task base), to queues each test module creates for itself (``conftest.py``) so that no other
test's consumer sees them:

- ``guarantees`` (the app's default queue): only the Lambda path reads it -- this process calling
  ``handlers.sqs.handler`` with events built by the event-source emulator, or the emulator's
  pollers themselves;
- ``guarantees-worker``: a real ``celery -A tests.integration.guarantees.app:app worker``
  subprocess consumes it;
- ``guarantees-crash``: short visibility timeout and function timeout, for the event-source
  emulator that gets SIGKILLed.

Results and claims go to a results table of the test module's own, defined like the template's.
Duplicates are real: a message Celery published is received, and its body sent again with boto3.
Side effects are counted in the users table (``tests.apps.probe.record_call``), so "ran once",
"ran twice" and "never ran" are told apart from outside the process that ran the task.

moto in server mode is not DynamoDB under concurrency: its TransactWriteItems is not isolated
(two simultaneous claims of one task id can both succeed) and a cancelled one restores a copy of
the whole table, erasing writes other requests made meanwhile. The tests are therefore arranged
so that two consumers never claim in the same instant and no claim is refused while another
consumer writes a result (the crash test's restart runs one poller): what they prove is the claim
protocol, with DynamoDB's per-item serialisation taken as given.
"""
