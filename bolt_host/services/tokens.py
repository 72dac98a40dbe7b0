"""App tokens: one fresh secret per running app, revoked when the app stops.

Only a SHA-256 of each token is stored (section ``app_tokens`` of the host's
:class:`~bolt_host.statefile.StateFile`), so the token survives a host restart
for adopted apps without the disk holding a usable secret.  Look-ups compare
digests in constant time, from memory.

:meth:`AppTokens.issue` and :meth:`AppTokens.revoke` change memory only; the
caller (the supervisor) makes them durable with the same ``commit()`` that
writes its process record, so a start costs one write, not two.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from bolt_host.statefile import StateFile

SECTION = "app_tokens"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class AppTokens:
    def __init__(self, state: StateFile) -> None:
        self._state = state
        self._plain: dict[str, str] = {}  # in memory only: for signing events sent to the app

    def remember(self, app_name: str, token: str) -> bool:
        """Keep an adopted app's token (read back from its environment) if it is the current one."""
        if self.app_for(token) != app_name:
            return False
        self._plain[app_name] = token
        return True

    def token_of(self, app_name: str) -> str | None:
        """The live token of a running app, if this host process issued or adopted it."""
        return self._plain.get(app_name)

    def issue(self, app_name: str, key: str | None = None) -> str:
        """A new token for ``app_name`` (held under ``key``: one per instance of the app); any
        earlier one under that key is revoked (durable at the next commit)."""
        token = secrets.token_urlsafe(32)
        self._state.put(SECTION, key or app_name, {"app": app_name, "digest": _digest(token)})
        self._plain[key or app_name] = token
        return token

    def set_aside(self, app_name: str, key: str) -> None:
        """Keep ``app_name``'s current token valid under ``key``, so the next :meth:`issue` does not
        revoke it: the process a rolling restart replaces keeps its token until it stops."""
        self._move(app_name, key)

    def put_back(self, app_name: str, key: str) -> None:
        """Make the token set aside under ``key`` the app's current one again (a rolling restart
        whose new process failed: the old one serves on)."""
        self.revoke(app_name)
        self._move(key, app_name)

    def _move(self, old_key: str, new_key: str) -> None:
        row = self._state.get(SECTION, old_key)
        if row is None:
            return
        self._state.put(SECTION, new_key, row)
        self._state.delete(SECTION, old_key)
        if old_key in self._plain:
            self._plain[new_key] = self._plain.pop(old_key)

    def revoke(self, app_name: str) -> bool:
        """Revoke ``app_name``'s token (or one set aside under that key); True when there was one
        (durable at the next commit)."""
        self._plain.pop(app_name, None)
        return self._state.delete(SECTION, app_name)

    def belongs_to(self, app_name: str, token: str | None) -> bool:
        """Whether ``token`` is an app token the host gave ``app_name``."""
        holder = self.app_for(token)  # the token is compared by its digest in there
        return holder is not None and holder == app_name

    def app_for(self, token: str | None) -> str | None:
        """The app holding ``token``, or None."""
        if not token:
            return None
        wanted = _digest(token)
        found = None
        for row in self._state.shared_rows(SECTION):
            if hmac.compare_digest(row["digest"], wanted):
                found = row["app"]
        return found
