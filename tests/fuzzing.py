"""How many examples the fuzz tests draw: every one in ``make test``, a tenth in ``make test-fast``
(which sets ``CELERY_LAMBDA_QUICK_FUZZ=1``: the quick loop still fuzzes, just less)."""

from __future__ import annotations

import os

__all__ = ["examples"]


def examples(full: int) -> int:
    """``full``, or a tenth of it (at least 20) in the quick loop."""
    if os.environ.get("CELERY_LAMBDA_QUICK_FUZZ") == "1":
        return max(full // 10, 20)
    return full
