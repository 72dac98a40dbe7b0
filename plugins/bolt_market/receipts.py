"""JWS checks for payments (joserfc), and the built-in ``verify_payment`` implementation.

Two kinds of signed documents arrive:

* the **purchase signature** (``submit-signature``): a compact JWS by the
  source's signing service (``signing_keys`` of the source, a public JWKS)
  over ``{user, app_id, source, product_id, nonce, iat[, exp]}``; ``nonce`` is
  the challenge the purchase issued, so an old signature cannot be replayed;
* the **receipt**, a verifiable credential as a compact JWS signed by the app's
  developer (``developers[<id>].keys`` of the source) with
  ``{iss: <developer>, jti, iat, vc: {type: [..., "AppPurchaseReceipt"],
  credentialSubject: {user, app_id, source, product_id, tx_hash}}}``.

Only asymmetric algorithms are accepted (never ``none`` or HMAC), keys must be
public and carry a ``kid``.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any, TypeVar, cast
from urllib.parse import urlsplit

from bolt_host.plugin import Host, lazy_module

from .envelope import MarketError

if TYPE_CHECKING:
    from joserfc import errors as jose_errors
    from joserfc import jwk, jws
else:  # joserfc (with cryptography, about 9 MB) is imported at the first signature checked
    jose_errors = lazy_module("joserfc.errors")
    jwk = lazy_module("joserfc.jwk")
    jws = lazy_module("joserfc.jws")

ALGORITHMS = ("ES256", "ES384", "Ed25519", "EdDSA", "RS256", "PS256")
RECEIPT_TYPE = "AppPurchaseReceipt"
CLOCK_SKEW = 300
MAX_TOKEN = 16 * 1024
_PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "k"}


T = TypeVar("T", dict[str, Any], list[Any])

class SignatureError(Exception):
    """A JWS was refused; the message says why (never includes key material)."""


def check_jwks(value: Any, what: str) -> dict[str, Any]:
    """A public JWKS with a ``kid`` on every key; MarketError (400) otherwise."""
    if not isinstance(value, dict) or not isinstance(value.get("keys"), list) or not value["keys"]:
        raise MarketError(400, f"{what} must be a JWKS: {{\"keys\": [public JWK, ...]}}")
    for key in value["keys"]:
        if not isinstance(key, dict) or not isinstance(key.get("kid"), str) or not key["kid"]:
            raise MarketError(400, f"Every key in {what} needs a 'kid'")
        if _PRIVATE_MEMBERS & set(key) or key.get("kty") == "oct":
            raise MarketError(400, f"{what} must hold public keys only (key {key['kid']!r} is private or symmetric)")
    try:
        jwk.KeySet.import_key_set(cast(Any, value))
    except (jose_errors.JoseError, ValueError, TypeError) as exc:
        raise MarketError(400, f"{what} is not a valid JWKS: {exc}") from None
    return {"keys": [dict(k) for k in value["keys"]]}


def check_developers(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MarketError(400, "'developers' must map developer ids to {keys, checkout_url?}")
    checked = {}
    for developer, config in value.items():
        if not isinstance(config, dict):
            raise MarketError(400, f"developer {developer!r} needs {{keys, checkout_url?}}")
        entry: dict[str, Any] = {"keys": check_jwks(config.get("keys"), f"the keys of developer {developer!r}")}
        url = config.get("checkout_url")
        if url is not None:
            parts = urlsplit(url) if isinstance(url, str) else None
            if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
                raise MarketError(400, f"checkout_url of developer {developer!r} must be an http(s) URL")
            entry["checkout_url"] = url
        checked[str(developer)] = entry
    return checked


def unverified_claims(token: Any) -> dict[str, Any]:
    """The payload of ``token`` before verification: only to find which keys to verify it with."""
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN:
        raise SignatureError("the signature is missing or too long")
    try:
        payload = json.loads(jws.extract_compact(token.encode()).payload)
    except (jose_errors.JoseError, ValueError, UnicodeDecodeError) as exc:
        raise SignatureError(f"not a compact JWS ({exc})") from None
    if not isinstance(payload, dict):
        raise SignatureError("the JWS payload is not a JSON object")
    return payload


def verify(token: Any, jwks: dict[str, Any] | None) -> dict[str, Any]:
    """The verified payload of ``token`` signed by one of ``jwks``; SignatureError otherwise."""
    if not jwks:
        raise SignatureError("no keys are configured to verify this signature")
    unverified_claims(token)
    try:
        keys = jwk.KeySet.import_key_set(cast(Any, jwks))
        verified = jws.deserialize_compact(token, keys, algorithms=list(ALGORITHMS))
        payload = json.loads(verified.payload)
    except (jose_errors.JoseError, ValueError, TypeError) as exc:
        raise SignatureError(f"the signature does not verify ({type(exc).__name__})") from None
    if not isinstance(payload, dict):
        raise SignatureError("the JWS payload is not a JSON object")
    now = time.time()
    exp = payload.get("exp")
    if isinstance(exp, int | float) and exp + CLOCK_SKEW < now:
        raise SignatureError("the signature has expired")
    nbf = payload.get("nbf")
    if isinstance(nbf, int | float) and nbf - CLOCK_SKEW > now:
        raise SignatureError("the signature is not valid yet")
    return payload


def _member(obj: dict[str, Any], key: str, kind: type[T]) -> T:
    """``obj[key]`` when it is a ``kind`` (dict or list), else an empty one."""
    value = obj.get(key)
    return value if isinstance(value, kind) else kind()


def check_receipt(
    token: Any, developer: Any, keys: dict[str, Any], expected: dict[str, Any]
) -> dict[str, Any]:
    """Verify a receipt VC against the developer's keys and the purchase it must describe."""
    payload = verify(token, keys)
    if payload.get("iss") != developer:
        raise SignatureError(f"the receipt was issued by {payload.get('iss')!r}, not the developer {developer!r}")
    vc = _member(payload, "vc", dict)
    if RECEIPT_TYPE not in _member(vc, "type", list):
        raise SignatureError(f"the credential is not an {RECEIPT_TYPE}")
    subject = _member(vc, "credentialSubject", dict)
    for field, wanted in expected.items():
        if wanted is not None and subject.get(field) != wanted:
            raise SignatureError(f"the receipt's {field} is {subject.get(field)!r}, expected {wanted!r}")
    if not isinstance(payload.get("jti"), str) or not payload["jti"]:
        raise SignatureError("the receipt has no id (jti)")
    return {
        "developer": developer,
        "receipt_id": payload["jti"],
        "product_id": subject.get("product_id"),
        "tx_hash": subject.get("tx_hash"),
        "issued_at": payload.get("iat"),
    }


def builtin_verify_payment(host: Host, source: str, app: dict[str, Any], user: str, receipt: Any) -> Any:
    """The built-in payment verifier: a receipt VC signed by the app developer's key, for this purchase."""
    market = host.state.get("market")
    if market is None or not isinstance(receipt, dict):
        return None
    price = (app.get("bolt") or {}).get("price") or {}
    developer = price.get("developer")
    config = market.sources.get(source).config.get("developers") or {}
    if developer not in config:
        return False
    expected = {
        "user": user,
        "app_id": app.get("name"),
        "source": source,
        "product_id": price.get("product_id") or app.get("name"),
        "tx_hash": receipt.get("tx_hash"),
    }
    try:
        return check_receipt(receipt.get("vc"), developer, config[developer]["keys"], expected)
    except SignatureError as exc:
        receipt["error"] = str(exc)
        return False
