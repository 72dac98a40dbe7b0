"""Sessions, signed user tokens and login throttling.

A login creates a server-side session (only a digest of its id is stored)
with its own CSRF token.  The user token (``X-Bolt-User-Token``) is an
HMAC-signed, expiring statement bound to that session, so logging out
revokes the cookie and every token issued with it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tinydb import Query

from bolt_host.storage import INITIAL_SCHEMA, Database, atomic_write_bytes

SESSIONS = "sessions"
SCHEMAS = {SESSIONS: INITIAL_SCHEMA}
SESSION_SECONDS = 24 * 3600
MAX_FAILURES = 5  # per (client, name) within the window
CLIENT_MAX_FAILURES = 20  # per client, whatever names it tries
FAILURE_WINDOW = 15 * 60
BASE_LOCK_SECONDS = 30.0
MAX_LOCK_SECONDS = 15 * 60.0
MAX_TRACKED_KEYS = 10_000


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def load_secret_key(data_dir: Path) -> bytes:
    """The host's signing key, made once per data dir and kept mode 0600."""
    path = data_dir / "secret.key"
    try:
        key = path.read_bytes().strip()
        if len(key) >= 32:
            return key
    except FileNotFoundError:
        pass
    key = secrets.token_hex(32).encode()
    atomic_write_bytes(path, key, mode=0o600)
    return key


@dataclass
class Session:
    id: str
    user: str
    csrf: str
    expires: float


class Sessions:
    def __init__(self, db: Database, secret_key: bytes) -> None:
        self._db = db
        db.migrate_all(SCHEMAS)
        self._key = secret_key

    def create(self, user: str) -> Session:
        session = Session(
            id=secrets.token_urlsafe(32),
            user=user,
            csrf=secrets.token_urlsafe(24),
            expires=time.time() + SESSION_SECONDS,
        )
        with self._db.transaction():
            table = self._db.table(SESSIONS)
            table.remove(Query().expires < time.time())
            table.insert(
                {"digest": _digest(session.id), "user": user, "csrf": session.csrf, "expires": session.expires}
            )
        return session

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        row = self._row_by_digest(_digest(session_id))
        if not row or row["expires"] < time.time():
            return None
        return Session(id=session_id, user=row["user"], csrf=row["csrf"], expires=row["expires"])

    def _get_by_digest(self, digest: str) -> dict[str, Any] | None:
        row = self._row_by_digest(digest)  # every request with a user token asks
        if not row or row["expires"] < time.time():
            return None
        return dict(row)

    def _row_by_digest(self, digest: str) -> dict[str, Any] | None:
        """Through the table's index (a ``Query`` evaluated itself on every session row)."""
        doc_id = self._db.ids_by(SESSIONS, "digest").get(digest)
        return self._db.table(SESSIONS).get(doc_id=doc_id) if doc_id is not None else None

    def end(self, session_id: str) -> None:
        with self._db.transaction():
            self._db.table(SESSIONS).remove(Query().digest == _digest(session_id))

    def end_all_for(self, user: str) -> None:
        with self._db.transaction():
            self._db.table(SESSIONS).remove(Query().user == user)

    def end_for_token(self, token: str) -> None:
        """End the session a valid user token belongs to."""
        payload = self._payload(token)
        if payload is not None:
            with self._db.transaction():
                self._db.table(SESSIONS).remove(Query().digest == str(payload.get("s")))

    # user tokens -------------------------------------------------------------
    def issue_token(self, session: Session) -> str:
        payload = {"u": session.user, "s": _digest(session.id), "e": int(session.expires)}
        body = base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()).rstrip(b"=")
        return f"{body.decode()}.{self._sign(body)}"

    def user_for_token(self, token: str | None) -> str | None:
        """The user a valid, unexpired, not-logged-out token speaks for."""
        found = self.token_user(token)
        return found[0] if found is not None else None

    def token_user(self, token: str | None) -> tuple[str, float] | None:
        """The user a valid, unexpired, not-logged-out token speaks for, and until when (the
        earlier of the token's and its session's end, as a ``time.time()``)."""
        payload = self._payload(token)
        if payload is None:
            return None
        row = self._get_by_digest(str(payload.get("s")))
        if row is None or row["user"] != payload.get("u"):
            return None
        return str(row["user"]), min(float(payload["e"]), float(row["expires"]))

    def _payload(self, token: str | None) -> dict[str, Any] | None:
        """The signed, unexpired payload of ``token``, else None."""
        if not token or token.count(".") != 1:
            return None
        body, signature = token.split(".")
        if not hmac.compare_digest(signature, self._sign(body.encode())):
            return None
        try:
            payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        except ValueError:
            return None
        if not isinstance(payload, dict) or payload.get("e", 0) < time.time():
            return None
        return payload

    def _sign(self, body: bytes) -> str:
        return hmac.new(self._key, body, hashlib.sha256).hexdigest()


@dataclass
class _Attempts:
    failures: list[float] = field(default_factory=list)
    locked_until: float = 0.0
    locks: int = 0
    last_failure: float = 0.0

    def stale(self, now: float) -> bool:
        return self.locked_until <= now and now - self.last_failure >= FAILURE_WINDOW


class LoginThrottle:
    """Locks a key out for a growing but capped time after repeated failures.

    Keys are opaque strings; the login check uses one per (client, name) and one
    per client, so a guesser locks out only itself, never the same name used from
    elsewhere.  Memory is bounded: keys idle for a window are dropped, and beyond
    ``max_keys`` the least recently failed go first.
    """

    def __init__(
        self, max_keys: int = MAX_TRACKED_KEYS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._attempts: OrderedDict[str, _Attempts] = OrderedDict()  # least recently failed first
        self._max_keys = max_keys
        self._clock = clock

    def __len__(self) -> int:
        return len(self._attempts)

    def retry_after(self, *keys: str) -> float:
        """Seconds until every one of ``keys`` may try again (0 when none is locked)."""
        now = self._clock()
        return max((self._attempts[k].locked_until - now for k in keys if k in self._attempts), default=0.0)

    def failed(self, *keys: str, limit: int = MAX_FAILURES) -> None:
        """Count a failure for each key; the ``limit``-th within the window locks the key."""
        now = self._clock()
        for key in keys:
            attempts = self._attempts.pop(key, None) or _Attempts()
            self._attempts[key] = attempts  # now the most recent
            attempts.failures = [t for t in attempts.failures if now - t < FAILURE_WINDOW][-limit:]
            attempts.failures.append(now)
            attempts.last_failure = now
            if len(attempts.failures) >= limit:
                attempts.locks += 1
                attempts.locked_until = now + min(BASE_LOCK_SECONDS * 2 ** (attempts.locks - 1), MAX_LOCK_SECONDS)
                attempts.failures = []
        self._prune(now)

    def succeeded(self, *keys: str) -> None:
        for key in keys:
            self._attempts.pop(key, None)

    def _prune(self, now: float) -> None:
        while self._attempts:
            oldest_key, oldest = next(iter(self._attempts.items()))
            if not oldest.stale(now) and len(self._attempts) <= self._max_keys:
                return
            del self._attempts[oldest_key]
