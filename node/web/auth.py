"""The admin token: every request presents it, as `Authorization: Bearer` (scripts, Prometheus)
or as the session cookie the login form sets (HttpOnly, SameSite=Strict). Forms that change
state carry a CSRF token as well. Cookie and CSRF values are keyed hashes of the admin token, so
neither is the token itself, and rotating the token file logs every browser out."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from starlette.requests import Request

from node.config import load_or_create_private_token

SESSION_COOKIE = "deid_admin"
PUBLIC_PATHS = frozenset({"/login"})


class AdminToken:
    def __init__(self, token: bytes) -> None:
        if len(token) < 16:
            raise ValueError("the admin token must be at least 16 characters")
        self._token = token

    @classmethod
    def from_file(cls, path: Path) -> "AdminToken":
        return cls(load_or_create_private_token(path))

    def _derived(self, purpose: str) -> str:
        return hmac.new(self._token, purpose.encode(), hashlib.sha256).hexdigest()

    def matches(self, presented: str) -> bool:
        return hmac.compare_digest(presented.encode(), self._token)

    @property
    def session_value(self) -> str:
        return self._derived("session cookie")

    @property
    def csrf(self) -> str:
        return self._derived("csrf")

    def by_bearer(self, request: Request) -> bool:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and self.matches(value.strip())

    def by_cookie(self, request: Request) -> bool:
        return hmac.compare_digest(request.cookies.get(SESSION_COOKIE, ""), self.session_value)

    def csrf_ok(self, request: Request, form_value: str | None) -> bool:
        """A state change from a browser carries the form's CSRF token; a Bearer client needs none
        (browsers never add that header on their own)."""
        return self.by_bearer(request) or hmac.compare_digest(form_value or "", self.csrf)
