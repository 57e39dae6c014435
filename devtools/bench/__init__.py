"""The benchmarks, on the embedded emulator: a drain by each consumer against plain Celery
(:mod:`~devtools.bench.drain`, plain Celery's app in :mod:`~devtools.bench.plain_app`, what a
consumer spends read by :mod:`~devtools.bench.meter`, priced by :mod:`~devtools.bench.prices`,
shown by :mod:`~devtools.bench.report`), the ways to publish (:mod:`~devtools.bench.publish`),
the handler's cold start (:mod:`~devtools.bench.imports`) and the local event source's start
(:mod:`~devtools.bench.startup`); their commands in :mod:`~devtools.bench.commands`.

May import: :mod:`infra`, :mod:`devtools.cloud` and :mod:`devtools.examples`
(:mod:`~devtools.bench.plain_app` and :mod:`~devtools.bench.meter` nothing of the project).
"""

__all__ = [
    "commands",
    "drain",
    "imports",
    "meter",
    "plain_app",
    "prices",
    "publish",
    "report",
    "startup",
]
