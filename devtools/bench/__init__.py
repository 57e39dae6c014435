"""The benchmarks, on the embedded emulator: a drain by each consumer
(:mod:`~devtools.bench.drain`), the ways to publish (:mod:`~devtools.bench.publish`) and the
handler's cold import (:mod:`~devtools.bench.imports`).

May import: :mod:`infra`, :mod:`devtools.cloud` and :mod:`devtools.examples`.
"""

__all__ = ["drain", "imports", "publish"]
