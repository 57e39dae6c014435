"""The Starlette application: routes, the token check, templates and the headers of every page.

Pages are rendered on the server by Jinja2 with autoescaping on, so every task argument, result,
traceback and message body is text, never markup; the Content-Security-Policy admits only this
app's own script and styles, so even an escaping slip could run nothing. The overview and the task
list carry ``data-live``: ``static/live.js`` fetches the page again every few seconds and swaps that
part in place. Actions are POST forms with the session's CSRF token, which ``live.js`` asks to
confirm; in read-only mode they are not shown and their routes answer 403.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from devtools.dashboard.auth import COOKIE, Guard, Session
from devtools.dashboard.charts import throughput_svg
from devtools.dashboard.params import (
    BadRequest,
    check_names,
    encode_cursor,
    task_filters,
    task_id,
)
from devtools.dashboard.sources import Sources
from devtools.ops.ids import AmbiguousId, UnknownId, resolve_task_id
from infra.core.errors import CeleryLambdaError

__all__ = ["UNAUTHORIZED", "Dashboard", "create_app"]

HERE: Final = Path(__file__).parent
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
UNAUTHORIZED: Final = (
    "401 Unauthorized: open the URL `celery lambda dashboard` printed (it carries ?token=), "
    "or send Authorization: Bearer <token>\n"
)
LIVE_SECONDS: Final = 5


@dataclass(frozen=True, slots=True)
class Dashboard:
    """What the application serves: a deployment, who may see it, and whether it may act."""

    sources: Sources
    guard: Guard
    read_only: bool = False


def _when(epoch: float | None) -> str:
    if not epoch:
        return ""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _ago(epoch: float | None) -> str:
    if not epoch:
        return ""
    seconds = max(0, int(time.time() - epoch))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["ago"] = _ago
    env.filters["query"] = lambda params: urllib.parse.urlencode(params)
    return env


class _TokenMiddleware(BaseHTTPMiddleware):
    """401 without the token; ``?token=`` swapped for a cookie; security headers everywhere."""

    def __init__(self, app: Any, guard: Guard) -> None:
        super().__init__(app)
        self.guard = guard

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        started = time.perf_counter()
        response = await self._dispatch(request, call_next)
        response.headers.update(SECURITY_HEADERS)
        # The page is rendered by now (the endpoints build whole responses): its server time.
        elapsed_ms = (time.perf_counter() - started) * 1000
        timing = [f"app;dur={elapsed_ms:.1f}"]
        if (store_ms := getattr(request.state, "store_ms", None)) is not None:
            timing.append(f"store;dur={store_ms:.1f}")
        response.headers["Server-Timing"] = ", ".join(timing)
        return response

    async def _dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        given = request.query_params.get("token")
        if given is not None and request.method == "GET":
            if not self.guard.is_token(given):
                return PlainTextResponse(UNAUTHORIZED, status_code=401)
            kept = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
            url = request.url.path + (f"?{urllib.parse.urlencode(kept)}" if kept else "")
            redirect = RedirectResponse(url, status_code=303)
            redirect.set_cookie(COOKIE, self.guard.new_cookie(), httponly=True, samesite="strict")
            return redirect
        session = self.guard.session(request.headers, request.cookies)
        if session is None:
            return PlainTextResponse(
                UNAUTHORIZED, status_code=401, headers={"WWW-Authenticate": "Bearer"}
            )
        request.state.session = session
        return await call_next(request)


Handler = Callable[[Request], Awaitable[Response]]


def create_app(dashboard: Dashboard) -> Starlette:
    """The dashboard's ASGI application."""
    env = _environment()
    sources = dashboard.sources

    def page(request: Request, name: str, status: int = 200, **values: Any) -> HTMLResponse:
        session: Session = request.state.session
        html = env.get_template(name).render(
            request=request,
            csrf=dashboard.guard.csrf(session),
            read_only=dashboard.read_only,
            origin=sources.target.origin,
            table=sources.table,
            live_seconds=LIVE_SECONDS,
            **values,
        )
        return HTMLResponse(html, status_code=status)

    def guarded(handler: Handler) -> Handler:
        """400 for a bad parameter, 404 for an unknown thing, 502 when AWS refuses."""

        async def run(request: Request) -> Response:
            try:
                return await handler(request)
            except BadRequest as exc:
                return page(request, "error.html", 400, title="Bad request", message=str(exc))
            except LookupError as exc:
                return page(request, "error.html", 404, title="Not found", message=str(exc))
            except CeleryLambdaError as exc:
                return page(request, "error.html", 502, title="Deployment error", message=str(exc))

        return run

    def params(request: Request) -> dict[str, str]:
        return dict(request.query_params)

    async def form(request: Request) -> FormData:
        """The POST's form once its CSRF token is checked; 403 in read-only mode or on mismatch."""
        data = await request.form()
        if dashboard.read_only:
            raise _Refused("the dashboard is read-only (--read-only): no action is allowed")
        csrf = data.get("csrf")
        if not dashboard.guard.csrf_ok(
            request.state.session, csrf if isinstance(csrf, str) else None
        ):
            raise _Refused("the form's CSRF token is missing or wrong: reload the page and retry")
        return data

    def refusing(handler: Handler) -> Handler:
        async def run(request: Request) -> Response:
            try:
                return await handler(request)
            except _Refused as exc:
                return page(request, "error.html", 403, title="Forbidden", message=str(exc))

        return guarded(run)

    # ------------------------------------------------------------ pages

    async def overview(request: Request) -> Response:
        check_names(params(request), frozenset())
        data = await run_in_threadpool(sources.overview)
        chart = Markup(throughput_svg(data.chart))  # numbers only: see charts.py
        return page(request, "overview.html", overview=data, chart=chart, nav="overview")

    async def tasks(request: Request) -> Response:
        filters = task_filters(params(request))
        started = time.perf_counter()
        result = await run_in_threadpool(
            sources.task_page,
            filters.query,
            until=filters.until,
            queue=filters.queue,
            id_prefix=filters.id_prefix,
            cursor=filters.cursor,
        )
        request.state.store_ms = (time.perf_counter() - started) * 1000
        base = filters.as_params()
        next_params = (
            {**base, "cursor": encode_cursor(result.next_key)} if result.next_key else None
        )
        return page(
            request,
            "tasks.html",
            rows=result.rows,
            filters=base,
            next_params=next_params,
            first_page=filters.cursor is None,
            nav="tasks",
        )

    async def task(request: Request) -> Response:
        check_names(params(request), frozenset())
        id_ = task_id(request.path_params["task_id"])
        try:  # the start of an id, as the tables show it, is the task it starts: one Query
            full = await run_in_threadpool(
                resolve_task_id, sources.client("dynamodb"), sources.table, id_
            )
        except UnknownId as exc:
            raise LookupError(str(exc)) from exc
        except AmbiguousId as exc:
            raise BadRequest(str(exc)) from exc
        if full != id_:
            return RedirectResponse(f"/tasks/{urllib.parse.quote(full)}", status_code=303)
        found = await run_in_threadpool(sources.task, id_)
        if found is None:
            raise LookupError(
                f"no task {id_} in {sources.table} (unknown id, or its result expired)"
            )
        return page(request, "task.html", found=found, nav="tasks")

    async def dlq(request: Request) -> Response:
        check_names(params(request), frozenset())
        views = await run_in_threadpool(sources.dead_letters)
        return page(request, "dlq.html", dlqs=views, nav="dlq")

    async def schedule(request: Request) -> Response:
        check_names(params(request), frozenset())
        table_rows, problem = await run_in_threadpool(sources.schedule)
        tz = sources.app.timezone

        def local(slot: int) -> str:
            return datetime.fromtimestamp(slot, tz).strftime("%Y-%m-%d %H:%M:%S %Z")

        return page(
            request,
            "schedule.html",
            rows=table_rows,
            problem=problem,
            local=local,
            app_name=sources.app.main,
            nav="schedule",
        )

    # ------------------------------------------------------------ actions

    async def revoke(request: Request) -> Response:
        data = await form(request)
        id_ = task_id(request.path_params["task_id"])
        found = await run_in_threadpool(sources.task, id_)
        if found is None:
            raise LookupError(f"no task {id_} in {sources.table}")
        row = found.view.detail.row
        allowed = {id_, row.group_id, row.root_id} - {None}
        target = str(data.get("target") or id_)
        if target not in allowed:
            raise BadRequest(f"target={target!r} is neither this task, its group nor its root")
        reason = str(data.get("reason") or "revoked from the dashboard")[:200]
        done = await run_in_threadpool(sources.revoke, [target], reason)
        return page(
            request,
            "done.html",
            title="Revoked",
            lines=[f"revoked {i}" for i in done],
            back=f"/tasks/{id_}",
        )

    def _dlq_url(data: FormData) -> str:
        url = data.get("dlq")
        if not isinstance(url, str) or not url:
            raise BadRequest("the form names no dead-letter queue (dlq)")
        return url

    async def redrive(request: Request) -> Response:
        data = await form(request)
        url = _dlq_url(data)
        ids = [str(v) for v in data.getlist("id") if v]
        result = await run_in_threadpool(sources.redrive, url, ids or None)
        lines = [f"{len(result.moved)} message(s) sent back to their queue"]
        lines += [f"kept {message_id}: {reason}" for message_id, reason in result.kept]
        missing = sorted(set(ids) - set(result.moved) - {i for i, _ in result.kept})
        lines += [f"no message {message_id} in the dead-letter queue" for message_id in missing]
        return page(request, "done.html", title="Redrive", lines=lines, back="/dlq")

    async def purge(request: Request) -> Response:
        data = await form(request)
        pair = await run_in_threadpool(sources.purge, _dlq_url(data))
        lines = [f"purged {pair.name}'s DLQ (SQS may take up to 60 s)"]
        return page(request, "done.html", title="Purge", lines=lines, back="/dlq")

    routes = [
        Route("/", guarded(overview)),
        Route("/tasks", guarded(tasks)),
        Route("/tasks/{task_id}", guarded(task)),
        Route("/tasks/{task_id}/revoke", refusing(revoke), methods=["POST"]),
        Route("/dlq", guarded(dlq)),
        Route("/dlq/redrive", refusing(redrive), methods=["POST"]),
        Route("/dlq/purge", refusing(purge), methods=["POST"]),
        Route("/schedule", guarded(schedule)),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    middleware = [Middleware(_TokenMiddleware, guard=dashboard.guard)]
    return Starlette(routes=routes, middleware=middleware)


class _Refused(Exception):
    """An action refused: read-only mode, or a CSRF token that does not match (403)."""
