"""Celery's own ``t/integration`` suite (``test_tasks.py``, ``test_canvas.py``) on the emulator
with our transport and results table, through a stock worker and through the Lambda path:
``make celery-suite`` runs :mod:`tests.celery_suite.run`; :mod:`tests.celery_suite.overlay` is
what it adds to Celery's ``conftest.py``; ``deselected.txt`` lists what we do not run, and why.
"""
