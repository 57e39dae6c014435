"""The operator's commands on a deployment, local or on AWS: queues, tasks, DLQs, stats, schedule.

Which deployment (:mod:`~devtools.ops.target`, :mod:`~devtools.ops.options`); what is read or done
there, as plain values from injected clients (:mod:`~devtools.ops.queues`,
:mod:`~devtools.ops.tasks`, :mod:`~devtools.ops.detail`, :mod:`~devtools.ops.dlq`,
:mod:`~devtools.ops.redrive`, :mod:`~devtools.ops.stats`, :mod:`~devtools.ops.schedule`); ids as
typed, whole or the start of one (:mod:`~devtools.ops.ids`); how it
looks (:mod:`~devtools.ops.render`, :mod:`~devtools.ops.output`); and the click commands
(:mod:`~devtools.ops.commands`, :mod:`~devtools.ops.dlq_commands`).

May import: :mod:`infra` and :mod:`devtools.cloud`.
"""

__all__ = [
    "commands",
    "detail",
    "dlq",
    "dlq_commands",
    "ids",
    "options",
    "output",
    "queues",
    "redrive",
    "render",
    "schedule",
    "stats",
    "target",
    "tasks",
]
