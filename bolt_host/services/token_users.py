"""Who a user token speaks for, remembered between requests.

Checking a token each request means an HMAC, a JSON decode, the session's row, the user's
row (a query over the users table) and the roles table: about a tenth of the host's CPU
for a light listing.  :class:`TokenUsers` keeps the answer per token for as long as it
cannot have changed: until anything is written to the host db (a logout, a blocked user,
a changed role or password all are writes; so is a login) and until the token or its
session expires.  Only valid tokens are kept, at most :data:`MAX_TOKENS` of them.
"""

from __future__ import annotations

import time
from typing import Any

from bolt_host.services.sessions import Sessions
from bolt_host.services.users import Users
from bolt_host.storage import Database

MAX_TOKENS = 256


class TokenUsers:
    def __init__(self, db: Database, sessions: Sessions, users: Users) -> None:
        self._db = db
        self._sessions = sessions
        self._users = users
        self._revision = -1
        self._known: dict[str, tuple[float, dict[str, Any], bool]] = {}  # token -> (until, user, is admin)

    def user_for(self, token: str) -> tuple[dict[str, Any], bool] | None:
        """The (unblocked) user ``token`` speaks for, a copy of the record, and whether it is an
        admin; None for a token that is invalid, expired or logged out, or a blocked user."""
        revision = self._db.revision
        if revision != self._revision:
            self._known.clear()
            self._revision = revision
        now = time.time()
        known = self._known.get(token)
        if known is not None and now < known[0]:
            return dict(known[1]), known[2]
        found = self._sessions.token_user(token)
        user = self._users.get(found[0]) if found is not None else None
        if found is None or user is None or user.get("isBlocked"):
            self._known.pop(token, None)
            return None
        is_admin = self._users.is_admin(user)
        if len(self._known) >= MAX_TOKENS:
            self._known.clear()
        self._known[token] = (found[1], user, is_admin)
        return dict(user), is_admin
