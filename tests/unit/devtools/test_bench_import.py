"""The cold-import benchmark measures what it says (timings are printed, never asserted)."""

from __future__ import annotations

from devtools.bench.imports import _ours, measure


def test_it_measures_both_imports_and_names_our_share() -> None:
    times = measure(runs=1)

    assert times.bare > 0 and times.handler > 0 and times.ours_us > 0
    assert times.setup > 0 and times.init == times.handler + times.setup


def test_our_share_counts_only_our_modules() -> None:
    trace = "\n".join(
        [
            "import time: self [us] | cumulative | imported package",
            "import time:       120 |        120 |   infra.wire.protocol",
            "import time:      5000 |       5000 | celery",
            "import time:        30 |         30 |     handlers.sqs",
        ]
    )

    assert _ours(trace) == 150
