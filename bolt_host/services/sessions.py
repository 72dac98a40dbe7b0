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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tinydb import Query

from bolt_host.storage import INITIAL_SCHEMA, Database, atomic_write_bytes

SESSIONS = "sessions"
SCHEMAS = {SESSIONS: INITIAL_SCHEMA}
SESSION_SECONDS = 24 * 3600
MAX_FAILURES = 5
FAILURE_WINDOW = 15 * 60
BASE_LOCK_SECONDS = 30.0


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
        row = self._db.table(SESSIONS).get(Query().digest == _digest(session_id))
        if not row or row["expires"] < time.time():
            return None
        return Session(id=session_id, user=row["user"], csrf=row["csrf"], expires=row["expires"])

    def _get_by_digest(self, digest: str) -> dict[str, Any] | None:
        row = self._db.table(SESSIONS).get(Query().digest == digest)
        if not row or row["expires"] < time.time():
            return None
        return dict(row)

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
        payload = self._payload(token)
        if payload is None:
            return None
        row = self._get_by_digest(str(payload.get("s")))
        if row is None or row["user"] != payload.get("u"):
            return None
        return row["user"]

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


class LoginThrottle:
    """Locks a name (or client) out for a growing time after repeated failures."""

    def __init__(self) -> None:
        self._failures: dict[str, list[float]] = {}
        self._locked_until: dict[str, float] = {}
        self._lock_count: dict[str, int] = {}

    def retry_after(self, *keys: str) -> float:
        now = time.monotonic()
        return max((self._locked_until.get(k, 0.0) - now for k in keys), default=0.0)

    def failed(self, *keys: str) -> None:
        now = time.monotonic()
        for key in keys:
            recent = [t for t in self._failures.get(key, []) if now - t < FAILURE_WINDOW]
            recent.append(now)
            self._failures[key] = recent
            if len(recent) >= MAX_FAILURES:
                count = self._lock_count.get(key, 0) + 1
                self._lock_count[key] = count
                self._locked_until[key] = now + BASE_LOCK_SECONDS * 2 ** (count - 1)
                self._failures[key] = []

    def succeeded(self, *keys: str) -> None:
        for key in keys:
            self._failures.pop(key, None)
            self._lock_count.pop(key, None)
            self._locked_until.pop(key, None)
