"""The web dashboard: ``celery -A tasks lambda dashboard``, the operator's commands in a browser.

What Flower shows, without Celery events (which SQS cannot carry): every page reads the result
store's indexes, the queues' attributes and the DLQs through :mod:`devtools.ops`, and every action
(revoke, redrive, purge) is the function the CLI calls -- one implementation, two faces.

- :mod:`~devtools.dashboard.auth`: the token, the session cookie and the CSRF tokens;
- :mod:`~devtools.dashboard.params`: query parameters checked into :mod:`devtools.ops` values
  (anything else is a 400 saying why);
- :mod:`~devtools.dashboard.charts`: the overview's SVG chart, rendered on the server;
- :mod:`~devtools.dashboard.sources`: what each page reads and each action does, on one
  deployment;
- :mod:`~devtools.dashboard.app`: the Starlette application (routes, templates, headers);
- :mod:`~devtools.dashboard.server`: the command's body: token, printed URL, uvicorn;
- :mod:`~devtools.dashboard.bench`: the task list's server time on a table of 10,000 tasks.

May import: :mod:`devtools.ops`, :mod:`devtools.cloud`, :mod:`infra`, starlette, jinja2 and
uvicorn (the ``cli`` extra).
"""

__all__ = ["app", "auth", "bench", "charts", "params", "server", "sources"]
