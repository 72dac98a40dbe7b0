"""The manager's Kapua access tokens on joserfc: an HS256-only allow-list, exp/iat/nbf
checked, invalidation rows, and tokens signed by the former hand-written encoder
(same key, same claims, no ``nbf``) still accepted until they expire."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import pytest
from bolt_device.kapua import KapuaError
from bolt_device.tokens import AccessTokens
from joserfc import jwt
from joserfc.jwk import OctKey

from bolt_host.services.sessions import load_secret_key
from bolt_host.storage import Database

pytestmark = pytest.mark.timeout(30)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def _sign_like_before(key: bytes, claims: dict[str, Any], alg: str = "HS256") -> str:
    """What tokens.py produced before joserfc: compact JSON header and claims, HMAC-SHA256."""
    header = _b64(json.dumps({"alg": alg, "typ": "JWT"}, separators=(",", ":")).encode())
    payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
    signature = _b64(hmac.new(key, f"{header}.{payload}".encode(), hashlib.sha256).digest())
    return f"{header}.{payload}.{signature}"


@pytest.fixture()
def tokens(tmp_path: Path) -> AccessTokens:
    return AccessTokens(Database(tmp_path / "db.json"), tmp_path, token_seconds=600, refresh_seconds=3600)


def _key(tmp_path: Path) -> bytes:
    return load_secret_key(tmp_path / "device")


def _refused(tokens: AccessTokens, token: str) -> str:
    with pytest.raises(KapuaError) as caught:
        tokens.verify(token)
    assert caught.value.status == 401
    return caught.value.message


def test_a_new_token_carries_the_time_claims_and_verifies(tokens: AccessTokens) -> None:
    issued = tokens.issue("admin", "AQ")
    claims = _claims(issued["tokenId"])
    assert claims["iat"] <= claims["nbf"] <= time.time() < claims["exp"]
    assert tokens.verify(issued["tokenId"])["user"] == "admin"


def test_a_token_signed_before_joserfc_keeps_working_until_it_expires(tokens: AccessTokens, tmp_path: Path) -> None:
    issued = tokens.issue("admin", "AQ")
    old_claims = {k: v for k, v in _claims(issued["tokenId"]).items() if k != "nbf"}
    old_token = _sign_like_before(_key(tmp_path), old_claims)
    assert old_token != issued["tokenId"]
    assert tokens.verify(old_token)["id"] == issued["id"]
    expired = _sign_like_before(_key(tmp_path), {**old_claims, "exp": int(time.time()) - 1})
    assert "expired" in _refused(tokens, expired)


def test_logout_invalidates_tokens_of_either_signer(tokens: AccessTokens, tmp_path: Path) -> None:
    issued = tokens.issue("admin", "AQ")
    old_token = _sign_like_before(_key(tmp_path), {k: v for k, v in _claims(issued["tokenId"]).items() if k != "nbf"})
    tokens.invalidate(issued["id"])
    assert "invalidated" in _refused(tokens, issued["tokenId"])
    assert "invalidated" in _refused(tokens, old_token)


def test_only_hs256_is_accepted(tokens: AccessTokens, tmp_path: Path) -> None:
    claims = _claims(tokens.issue("admin", "AQ")["tokenId"])
    key = _key(tmp_path)
    none_header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    unsigned = f"{none_header}.{_b64(json.dumps(claims).encode())}."
    hs512 = jwt.encode({"alg": "HS512"}, claims, OctKey.import_key(key), algorithms=["HS512"])
    mislabelled = _sign_like_before(key, claims, alg="HS512")  # an HS256 signature under another name
    for token in (unsigned, hs512, mislabelled):
        _refused(tokens, token)


def test_bad_signatures_and_time_claims_are_refused(tokens: AccessTokens, tmp_path: Path) -> None:
    claims = _claims(tokens.issue("admin", "AQ")["tokenId"])
    key = _key(tmp_path)
    now = int(time.time())
    for bad in (
        _sign_like_before(b"another-key-of-at-least-32-bytes!!", claims),
        _sign_like_before(key, {**claims, "nbf": now + 300}),
        _sign_like_before(key, {**claims, "iat": now + 300}),
        _sign_like_before(key, {k: v for k, v in claims.items() if k != "exp"}),
        _sign_like_before(key, {**claims, "iss": "https://elsewhere"}),
        _sign_like_before(key, {**claims, "exp": "tomorrow"}),
    ):
        _refused(tokens, bad)
    assert tokens.verify(_sign_like_before(key, claims))["user"] == "admin"  # the control: same key, same claims


def test_refresh_accepts_an_expired_token_of_either_signer_once(tokens: AccessTokens, tmp_path: Path) -> None:
    issued = tokens.issue("admin", "AQ")
    old_claims = {k: v for k, v in _claims(issued["tokenId"]).items() if k != "nbf"}
    expired = _sign_like_before(_key(tmp_path), {**old_claims, "exp": int(time.time()) - 5})
    renewed = tokens.refresh(expired, issued["refreshToken"])
    assert tokens.verify(renewed["tokenId"])["id"] == renewed["id"] != issued["id"]
    with pytest.raises(KapuaError):
        tokens.refresh(expired, issued["refreshToken"])
