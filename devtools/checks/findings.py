"""What every check of ``lambda doctor`` reports: one problem and its fix."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Finding"]


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem: how bad, where, what, and how to fix it."""

    level: str  # "error" | "warning"
    where: str
    problem: str
    fix: str
