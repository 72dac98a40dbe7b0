"""App tokens: one fresh secret per running app, revoked when the app stops.

Only a SHA-256 of each token is stored (in the ``app_tokens`` table), so the
token survives a host restart for adopted apps without the db holding a usable
secret.  Look-ups compare digests in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from bolt_host.storage import Database

TABLE = "app_tokens"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class AppTokens:
    def __init__(self, db: Database) -> None:
        self._db = db

    def issue(self, app_name: str) -> str:
        """A new token for ``app_name``; any earlier one is revoked."""
        token = secrets.token_urlsafe(32)
        with self._db.transaction():
            table = self._db.table(TABLE)
            table.remove(lambda row: row["app"] == app_name)
            table.insert({"app": app_name, "digest": _digest(token)})
        return token

    def revoke(self, app_name: str) -> None:
        with self._db.transaction():
            self._db.table(TABLE).remove(lambda row: row["app"] == app_name)

    def app_for(self, token: str | None) -> str | None:
        """The app holding ``token``, or None."""
        if not token:
            return None
        wanted = _digest(token)
        found = None
        for row in self._db.table(TABLE).all():
            if hmac.compare_digest(row["digest"], wanted):
                found = row["app"]
        return found
