"""``celery -A tasks lambda dashboard``: the token, the URL to open, and uvicorn serving the app.

Bound to 127.0.0.1 unless ``--host`` says otherwise (then the printed warning says what that
exposes). The token is the one given, else ``$CELERY_LAMBDA_DASHBOARD_TOKEN``, else a fresh random
one. The printed URL carries a given or random token, as Jupyter's does, but never the
environment's: that one is a deployed dashboard's secret (template.yaml injects it from Secrets
Manager), and what it prints goes to CloudWatch Logs, where more people read than may act.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any, Final

import uvicorn

from devtools.dashboard.app import Dashboard, create_app
from devtools.dashboard.auth import Guard
from devtools.dashboard.sources import Sources
from devtools.ops.target import Target

__all__ = ["LOOPBACK", "TOKEN_VARIABLE", "dashboard_main", "dashboard_url", "make_dashboard"]

LOOPBACK: Final = frozenset({"127.0.0.1", "localhost", "::1"})
TOKEN_VARIABLE: Final = "CELERY_LAMBDA_DASHBOARD_TOKEN"
"""The variable a deployed dashboard's token comes in (an ECS container secret)."""


def dashboard_url(host: str, port: int, token: str) -> str:
    """The URL to open: the dashboard's overview with ``?token=``."""
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/?{urllib.parse.urlencode({'token': token})}"


def make_dashboard(
    target: Target,
    app: Any,
    *,
    token: str | None = None,
    read_only: bool = False,
    env: Mapping[str, str] | None = None,
) -> Dashboard:
    """The dashboard of ``target`` for ``app``: ``token``, else the environment's, else fresh."""
    env = os.environ if env is None else env
    return Dashboard(Sources(target, app), Guard.new(token or env.get(TOKEN_VARIABLE)), read_only)


def dashboard_main(
    dashboard: Dashboard,
    host: str,
    port: int,
    say: Callable[[str], None] = print,
    env: Mapping[str, str] | None = None,
) -> None:
    """Print the URL to open (without the environment's token), then serve until Ctrl-C."""
    env = os.environ if env is None else env
    token = dashboard.guard.token
    say(f"celery-lambda dashboard of {dashboard.sources.target.origin}, open:")
    if token == env.get(TOKEN_VARIABLE):
        say(f"  {dashboard_url(host, port, '')}<the value of ${TOKEN_VARIABLE}>")
    else:
        say(f"  {dashboard_url(host, port, token)}")
    if dashboard.read_only:
        say("read-only: revoke, redrive and purge are hidden and refused")
    if host not in LOOPBACK:
        say(
            f"warning: listening on {host}, not loopback: anyone who can reach it and has the "
            "token can act on the deployment (plain HTTP: put TLS in front, or tunnel over SSH)"
        )
    uvicorn.run(create_app(dashboard), host=host, port=port, log_level="warning")
