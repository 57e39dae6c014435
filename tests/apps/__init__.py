"""Celery apps used only by tests (extra tasks the product examples do not need)."""
