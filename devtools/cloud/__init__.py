"""The local cloud: where the template is deployed and consumed without AWS.

The template read and translated offline (:mod:`~devtools.cloud.template`,
:mod:`~devtools.cloud.intrinsics`) and deployed (:mod:`~devtools.cloud.deploy`); the embedded
moto emulator (:mod:`~devtools.cloud.emulator`, served by :mod:`~devtools.cloud.moto_counting`
with :mod:`~devtools.cloud.moto_fixes`) or LocalStack (:mod:`~devtools.cloud.localstack`,
:mod:`~devtools.cloud.targets`); this process pointed at it (:mod:`~devtools.cloud.session`);
and the SQS event source mapping played locally (:mod:`~devtools.cloud.lambda_events`,
:mod:`~devtools.cloud.poller` for one queue, :mod:`~devtools.cloud.event_source` running them).

May import: :mod:`infra`; no other part of ``devtools``.
"""

__all__ = [
    "deploy",
    "emulator",
    "event_source",
    "intrinsics",
    "lambda_events",
    "localstack",
    "moto_counting",
    "moto_fixes",
    "poller",
    "session",
    "targets",
    "template",
]
