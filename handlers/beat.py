"""Lambda entry point for the EventBridge schedule, as ``template.yaml`` names it: the engine's
:mod:`infra.beat.handler` (the installed package's door), re-exported for this repository's
template and its Lambda package."""

from __future__ import annotations

from infra.beat.handler import handler

__all__ = ["handler"]
