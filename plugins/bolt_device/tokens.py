"""Kapua access tokens: an HS256 JWT (``tokenId``, joserfc) plus a refresh token.

The signing key lives under ``<data-dir>/device/`` (mode 0600).  Each token
has a row in ``device_access_tokens`` (only digests of the JWT's id and of
the refresh token are kept); logout and refresh invalidate the row, so a
signed but invalidated JWT is refused.  Only HS256 is accepted (``none`` and
every other algorithm are refused before the signature is looked at), and
``exp``, ``iat`` and ``nbf`` are checked without leeway (the manager signs and checks
with one clock).
Tokens signed before joserfc (same key, same claims, no ``nbf``) verify the same.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from pathlib import Path
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import OctKey
from tinydb import Query

from bolt_host.plugin import load_secret_key

from .kapua import KapuaError, iso, new_id, unauthenticated, user_id

TABLE = "device_access_tokens"
SCHEMA = {1: lambda table: None}
ISSUER = "https://bolt-host/device"
ALGORITHMS = ["HS256"]  # the allow-list: a token naming anything else (``none`` included) is refused


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class AccessTokens:
    def __init__(self, db: Any, data_dir: Path, token_seconds: int, refresh_seconds: int) -> None:
        self._db = db
        self._db.migrate(TABLE, SCHEMA)
        key_dir = data_dir / "device"
        key_dir.mkdir(parents=True, exist_ok=True)
        self._key = OctKey.import_key(load_secret_key(key_dir))
        self._claims = jwt.JWTClaimsRegistry(
            iss={"essential": True, "value": ISSUER},
            exp={"essential": True},
            iat={"essential": True},
            jti={"essential": True},
        )
        self._rows: dict[str, dict[str, Any]] = {row["id"]: dict(row) for row in db.table(TABLE).all()}
        self.token_seconds = token_seconds
        self.refresh_seconds = refresh_seconds

    # issue --------------------------------------------------------------------
    def issue(self, user: str, scope: str) -> dict[str, Any]:
        now = time.time()
        token_id = new_id()
        refresh = str(uuid.uuid4())
        claims = {
            "iss": ISSUER,
            "iat": int(now),
            "nbf": int(now),
            "exp": int(now + self.token_seconds),
            "sub": user,
            "sId": scope,
            "jti": token_id,
        }
        signed = self._encode(claims)
        row: dict[str, Any] = {
            "id": token_id,
            "user": user,
            "scopeId": scope,
            "refreshDigest": _digest(refresh),
            "expires": now + self.token_seconds,
            "refreshExpires": now + self.refresh_seconds,
            "invalidated": None,
            "createdOn": iso(now),
        }
        with self._db.transaction():
            table = self._db.table(TABLE)
            table.remove((Query().refreshExpires < now) | (Query().invalidated != None))  # noqa: E711
            table.insert(row)
            self._rows = {
                key: value for key, value in self._rows.items()
                if value["refreshExpires"] >= now and not value.get("invalidated")
            }
            self._rows[token_id] = dict(row)
        return {
            "type": "accessToken",
            "id": token_id,
            "scopeId": scope,
            "createdOn": row["createdOn"],
            "createdBy": scope,
            "modifiedOn": row["createdOn"],
            "modifiedBy": scope,
            "optlock": 1,
            "tokenId": signed,
            "userId": user_id(user),
            "expiresOn": iso(row["expires"]),
            "refreshToken": refresh,
            "refreshExpiresOn": iso(row["refreshExpires"]),
        }

    # check --------------------------------------------------------------------
    def verify(self, token: str) -> dict[str, Any]:
        """The token's row when ``token`` is well signed, unexpired and not invalidated."""
        claims = self._decode(token)
        try:
            if claims is None:
                raise JoseError("bad signature or algorithm")
            self._claims.validate(claims)
        except JoseError as exc:
            raise unauthenticated("The access token is invalid or has expired") from exc
        row = self._rows.get(str(claims.get("jti")))
        if row is None or row.get("invalidated"):
            raise unauthenticated("The access token has been invalidated")
        return dict(row)

    def refresh(self, token: Any, refresh_token: Any) -> dict[str, Any]:
        """A new token from an old (even expired) one and its still-valid refresh token."""
        if not isinstance(token, str) or not isinstance(refresh_token, str):
            raise unauthenticated("Send tokenId and refreshToken")
        claims = self._decode(token)
        row = self._rows.get(str(claims.get("jti"))) if claims else None
        if (
            row is None
            or row.get("invalidated")
            or row["refreshExpires"] < time.time()
            or not hmac.compare_digest(row["refreshDigest"], _digest(refresh_token))
        ):
            raise unauthenticated("The refresh token is invalid or has expired")
        self.invalidate(row["id"])
        return self.issue(row["user"], row["scopeId"])

    def invalidate(self, token_id: str) -> None:
        with self._db.transaction():
            self._db.table(TABLE).update({"invalidated": time.time()}, Query().id == token_id)
            self._rows.pop(token_id, None)

    def invalidate_user(self, user: str) -> None:
        with self._db.transaction():
            self._db.table(TABLE).update({"invalidated": time.time()}, Query().user == user)
            self._rows = {key: value for key, value in self._rows.items() if value["user"] != user}

    # JWT ----------------------------------------------------------------------
    def _encode(self, claims: dict[str, Any]) -> str:
        return jwt.encode({"alg": "HS256", "typ": "JWT"}, claims, self._key, algorithms=ALGORITHMS)

    def _decode(self, token: str) -> dict[str, Any] | None:
        """The claims of a well-signed HS256 token (not yet checked for time), else None."""
        try:
            claims = jwt.decode(token, self._key, algorithms=ALGORITHMS).claims
        except (JoseError, ValueError, TypeError):
            return None
        return claims if isinstance(claims, dict) else None


def bearer_token(authorization: str | None) -> str:
    if not authorization or not authorization.lower().startswith("bearer "):
        raise unauthenticated()
    token = authorization.split(" ", 1)[1].strip()
    if not token:
        raise unauthenticated()
    return token


__all__ = ["AccessTokens", "KapuaError", "bearer_token"]
