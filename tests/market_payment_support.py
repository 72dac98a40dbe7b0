"""Shared helpers for the market payment tests (no tests here): keys, signed documents, the flow's calls."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx
from joserfc import jws
from joserfc.jwk import ECKey, OKPKey

from tests.test_market_support import Market

FORWARDED = {"X-Forwarded-Host": "market.example"}
PASSWORD = "password-for-tests"
SOURCE = "market.bolt"


class Keys:
    def __init__(self) -> None:
        self.wallet = OKPKey.generate_key("Ed25519", parameters={"kid": "wallet-1"})
        self.impostor = OKPKey.generate_key("Ed25519", parameters={"kid": "wallet-1"})
        self.developer = ECKey.generate_key("P-256", parameters={"kid": "dev-1"})
        self.other_developer = ECKey.generate_key("P-256", parameters={"kid": "dev-1"})

    def source_config(self, source: str = SOURCE, **developer: Any) -> dict[str, Any]:
        return {
            "id": source,
            "signing_keys": {"keys": [self.wallet.as_dict(private=False)]},
            "developers": {"dev.example": {"keys": {"keys": [self.developer.as_dict(private=False)]}, **developer}},
        }


def sign(key: Any, claims: dict[str, Any]) -> str:
    alg = "Ed25519" if isinstance(key, OKPKey) else "ES256"
    return jws.serialize_compact({"alg": alg, "kid": key.kid}, json.dumps(claims), key, algorithms=[alg])


def receipt_claims(user: str, tx_hash: str, app_id: str = "paid-echo", issuer: str = "dev.example",
                   source: str = SOURCE) -> dict[str, Any]:
    subject = {"user": user, "app_id": app_id, "source": source, "product_id": "paid-echo-pro", "tx_hash": tx_hash}
    return {"iss": issuer, "jti": str(uuid.uuid4()), "iat": int(time.time()),
            "vc": {"type": ["VerifiableCredential", "AppPurchaseReceipt"], "credentialSubject": subject}}


def make_receipt(key: Any, user: str, tx_hash: str, **claims: Any) -> str:
    return sign(key, receipt_claims(user, tx_hash, **claims))


def client(market: Market, name: str) -> httpx.Client:
    return market.client((name, PASSWORD), **FORWARDED)


def payment_status(client: httpx.Client, source: str = SOURCE) -> dict[str, Any]:
    answer = client.get(f"/sources/{source}/apps/paid-echo/payment-status")
    assert answer.status_code == 200, answer.text
    return answer.json()["data"]


def purchase(client: httpx.Client, source: str = SOURCE) -> dict[str, Any]:
    answer = client.post(f"/sources/{source}/apps/paid-echo/purchase")
    assert answer.status_code == 200, answer.text
    return answer.json()["data"]


def install(client: httpx.Client, source: str = SOURCE) -> httpx.Response:
    return client.post("/apps/paid-echo/install", json={"source": source, "app_name": "paid-echo",
                                                        "version": "1.0.0", "sync": True})


def pay(client: httpx.Client, tx_hash: str, receipt: str | None, source: str = SOURCE) -> dict[str, Any]:
    body = {"source_id": source, "app_id": "paid-echo", "tx_hash": tx_hash, "product_id": "paid-echo-pro"}
    if receipt is not None:
        body["receipt"] = receipt
    answer = client.post("/payment/start-polling", json=body)
    assert answer.status_code == 200, answer.text
    return answer.json()["data"]


def signed_purchase(client: httpx.Client, keys: Keys, source: str = SOURCE) -> str:
    """Start a purchase and submit the wallet's signature over it; the accepted JWS."""
    started = purchase(client, source)
    token = sign(keys.wallet, started["sign_body"])
    answer = client.post("/payment/submit-signature", json={"jws": token})
    assert answer.status_code == 200, answer.text
    return token
