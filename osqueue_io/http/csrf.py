"""Cross-site request forgery defence for the dashboard's POST forms.

A state-changing request is accepted only when both hold:

* it carries this process's form token (drawn once per process, put in every form the
  dashboard renders): another site cannot read the dashboard's pages, so it cannot know
  the token;
* its ``Origin`` header (browsers send it with every POST), or else its ``Referer``,
  names this very server (scheme, host and port as the request reached it). A client
  that sends neither (curl, a script) must still send the token.

Responses also forbid framing (``frame-ancestors 'none'``), so a page cannot be
clickjacked into pressing a button.
"""

from __future__ import annotations

import hmac
import secrets
from urllib.parse import urlsplit

from aiohttp import web

#: The form field that carries the token.
TOKEN_FIELD = "csrf"


class FormGuard:
    """Issues the per-process token and checks POSTs (see the module docstring)."""

    def __init__(self, token: str | None = None) -> None:
        self.token = token or secrets.token_urlsafe(32)

    def refusal(self, request: web.Request, submitted: object) -> str | None:
        """Why ``request`` (with ``submitted`` as its form token) is refused, or None."""
        if not isinstance(submitted, str) or not hmac.compare_digest(
            submitted.encode(), self.token.encode()
        ):
            return "the form token is missing or wrong: reload the page and try again"
        own = f"{request.scheme}://{request.host}".lower()
        origin = request.headers.get("Origin")
        if origin is not None:
            if origin.lower() != own:
                return "the request came from another origin"
            return None
        referer = request.headers.get("Referer")
        if referer is not None:
            parts = urlsplit(referer)
            if f"{parts.scheme}://{parts.netloc}".lower() != own:
                return "the request came from another site"
        return None
