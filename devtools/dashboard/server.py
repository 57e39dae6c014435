"""``celery -A tasks lambda dashboard``: the token, the URL to open, and uvicorn serving the app.

Bound to 127.0.0.1 unless ``--host`` says otherwise (then the printed warning says what that
exposes). The token is the one given, else a fresh random one; either way the printed URL carries
it, as Jupyter's does.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from typing import Any, Final

import uvicorn

from devtools.dashboard.app import Dashboard, create_app
from devtools.dashboard.auth import Guard
from devtools.dashboard.sources import Sources
from devtools.ops.target import Target

__all__ = ["LOOPBACK", "dashboard_main", "dashboard_url", "make_dashboard"]

LOOPBACK: Final = frozenset({"127.0.0.1", "localhost", "::1"})


def dashboard_url(host: str, port: int, token: str) -> str:
    """The URL to open: the dashboard's overview with ``?token=``."""
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/?{urllib.parse.urlencode({'token': token})}"


def make_dashboard(
    target: Target, app: Any, *, token: str | None = None, read_only: bool = False
) -> Dashboard:
    """The dashboard of ``target`` for ``app`` (a fresh token when none is given)."""
    return Dashboard(Sources(target, app), Guard.new(token), read_only)


def dashboard_main(
    dashboard: Dashboard, host: str, port: int, say: Callable[[str], None] = print
) -> None:
    """Print the URL to open, then serve until Ctrl-C."""
    say(f"celery-lambda dashboard of {dashboard.sources.target.origin}, open:")
    say(f"  {dashboard_url(host, port, dashboard.guard.token)}")
    if dashboard.read_only:
        say("read-only: revoke, redrive and purge are hidden and refused")
    if host not in LOOPBACK:
        say(
            f"warning: listening on {host}, not loopback: anyone who can reach it and has the "
            "token can act on the deployment (plain HTTP: put TLS in front, or tunnel over SSH)"
        )
    uvicorn.run(create_app(dashboard), host=host, port=port, log_level="warning")
