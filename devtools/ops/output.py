"""How the operator's commands answer: a rich renderable or one JSON document on stdout, notes for
the human on stderr (out of the way of ``--json``), and a failure as one line and a non-zero exit.
"""

from __future__ import annotations

import json
from typing import Any, NoReturn

import click
from rich.console import Console, RenderableType

__all__ = ["emit", "fail", "note", "show"]


def fail(message: str) -> NoReturn:
    """One clear line on stderr and a non-zero exit."""
    raise click.ClickException(message)


def note(message: str) -> None:
    """A line for the human on stderr, out of the way of ``--json`` on stdout."""
    Console(stderr=True).print(message)


def show(renderable: RenderableType) -> None:
    """A table, panel or tree on stdout."""
    Console().print(renderable)


def emit(data: Any) -> None:
    """``data`` as one JSON document on stdout (what ``--json`` prints)."""
    click.echo(json.dumps(data, indent=2, default=repr))
