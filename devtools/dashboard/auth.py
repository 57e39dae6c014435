"""Who may use the dashboard: the holder of its token, as Jupyter does it.

The token is printed at start in a ready-to-open URL (``?token=T``). A request carrying it there
gets a session cookie (HttpOnly, SameSite=Strict) and a redirect to the same URL without it, so
the token leaves the address bar and the history; scripts send ``Authorization: Bearer T``
instead. Anything else is a 401 and nothing more.

The cookie is ``<nonce>.<HMAC(key, nonce)>``: stateless, and worthless after a restart (the key is
new each run). A form's CSRF token is ``HMAC(key, "csrf:" + nonce)``, so it is bound to the session
and a page of another origin cannot know it. A Bearer request carries no ambient credential (a
browser never adds that header across origins), so it needs no CSRF token.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

__all__ = [
    "COOKIE",
    "Guard",
    "Session",
]

COOKIE: Final = "celery_lambda_dashboard"


@dataclass(frozen=True, slots=True)
class Session:
    """An authenticated request: through the cookie (``nonce``) or a Bearer header (None)."""

    nonce: str | None


@dataclass(frozen=True, slots=True)
class Guard:
    """The dashboard's token and the key its cookies and CSRF tokens are signed with."""

    token: str
    key: bytes

    @classmethod
    def new(cls, token: str | None = None) -> Guard:
        """A guard for ``token`` (a fresh one when None) with a fresh key."""
        return cls(token or secrets.token_urlsafe(24), secrets.token_bytes(32))

    def _sign(self, text: str) -> str:
        return hmac.new(self.key, text.encode(), hashlib.sha256).hexdigest()

    def is_token(self, candidate: str | None) -> bool:
        return candidate is not None and hmac.compare_digest(candidate, self.token)

    def new_cookie(self) -> str:
        nonce = secrets.token_urlsafe(16)
        return f"{nonce}.{self._sign(nonce)}"

    def session(self, headers: Mapping[str, str], cookies: Mapping[str, str]) -> Session | None:
        """The session a request's Bearer header or cookie proves, None without either."""
        scheme, _, credential = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and self.is_token(credential.strip()):
            return Session(None)
        nonce, _, signature = cookies.get(COOKIE, "").partition(".")
        if nonce and hmac.compare_digest(signature, self._sign(nonce)):
            return Session(nonce)
        return None

    def csrf(self, session: Session) -> str:
        """The CSRF token of a session's forms."""
        return self._sign(f"csrf:{session.nonce}") if session.nonce else ""

    def csrf_ok(self, session: Session, candidate: str | None) -> bool:
        """Whether a POST from ``session`` may act (a Bearer request always may)."""
        if session.nonce is None:
            return True
        return candidate is not None and hmac.compare_digest(candidate, self.csrf(session))
