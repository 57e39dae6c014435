"""Lambda entry point for SQS batches, as ``template.yaml`` names it: the engine's
:mod:`infra.consumer.handler` (the installed package's door), re-exported for this repository's
template and its Lambda package."""

from __future__ import annotations

from infra.consumer.handler import handler

__all__ = ["handler"]
