"""Checks of the template: against the app (:mod:`~devtools.checks.doctor`), by checkov
(:mod:`~devtools.checks.checkov`) and by SAM CLI (:mod:`~devtools.checks.sam`).

May import: :mod:`infra` and :mod:`devtools.cloud`.
"""

__all__ = ["checkov", "doctor", "sam"]
