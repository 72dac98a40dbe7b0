"""Cross-origin protection for writes: the model of Go 1.25's ``net/http.CrossOriginProtection``.

A browser marks where a request comes from; a page on another site (or on another
port of this machine, which is ``same-site``, not ``same-origin``) cannot forge that.
So a write passes when:

- its method is safe (GET, HEAD, OPTIONS);
- it carries ``Sec-Fetch-Site: same-origin`` or ``none`` (typed in the address bar,
  a bookmark);
- without ``Sec-Fetch-Site``, its ``Origin`` names this host (the ``Host`` header, or
  the host's configured URL);
- it carries neither header: it is not from a browser (curl, scripts, the CLI), and
  no browser can be made to send a request without them;
- it carries the session's CSRF token in ``X-CSRF-Token`` (the token from login).

Everything else is refused.  A token that is presented but wrong refuses the write
whatever the other headers say: a presented credential never falls back.

This is the one implementation: the core's cookie sessions, the app proxy and every
store backend call :func:`write_allowed`; each answers a refusal in its own format.
"""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from starlette.requests import HTTPConnection, Request

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "x-csrf-token"
PASSING_FETCH_SITES = frozenset({"same-origin", "none"})


def write_allowed(request: Request, session_csrf: str | None = None, trusted_origins: tuple[str, ...] = ()) -> bool:
    """Whether this request may write, by the rules in the module docstring.

    ``session_csrf`` is the CSRF token of the session that authenticates the request
    (None when no cookie session does: then ``X-CSRF-Token`` counts for nothing).
    ``trusted_origins`` are extra ``scheme://host[:port]`` origins that pass (Go's
    ``AddTrustedOrigin``), such as the host's public URL behind a proxy.
    """
    if request.method in SAFE_METHODS:
        return True
    supplied = request.headers.get(CSRF_HEADER)
    if session_csrf is not None and supplied is not None:
        return bool(supplied) and hmac.compare_digest(supplied, session_csrf)
    return from_this_origin(request, trusted_origins)


def from_this_origin(request: HTTPConnection, trusted_origins: tuple[str, ...] = ()) -> bool:
    """The browser's word (or its silence) that the request comes from a page of this origin."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site.lower() in PASSING_FETCH_SITES
    origin = request.headers.get("origin")
    if origin is None:
        return True  # not a browser
    if origin.rstrip("/") in {o.rstrip("/") for o in trusted_origins}:
        return True
    parts = urlsplit(origin)
    host = request.headers.get("host", "")
    return bool(parts.scheme and parts.netloc) and parts.netloc.lower() == host.lower()
