"""The payment flow end to end with real keys, and with a bad signature, a wrong key and a replayed receipt."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.market_payment_support import (
    FORWARDED,
    PASSWORD,
    Keys,
    client,
    install,
    make_receipt,
    pay,
    payment_status,
    purchase,
    sign,
)
from tests.test_market_support import market_host

pytestmark = pytest.mark.timeout(120)

def test_purchase_flow_end_to_end(tmp_path: Path) -> None:
    keys = Keys()
    with market_host(tmp_path) as market:
        assert market.admin.post("/settings/market-source", json=keys.source_config()).status_code == 200
        leaked = {**keys.source_config(), "signing_keys": {"keys": [keys.wallet.as_dict(private=True)]}}
        assert market.admin.post("/settings/market-source", json=leaked).status_code == 400
        described = market.admin.get("/settings/market-source").json()["data"]
        assert "signing_keys" not in json.dumps(described)
        market.add_user("alice")
        market.add_user("bob")
        alice, bob = client(market, "alice"), client(market, "bob")

        refused = install(alice)
        assert refused.status_code == 400 and "purchase it first" in refused.json()["message"]
        assert market.client(("alice", PASSWORD)).get(
            "/sources/market.bolt/apps/paid-echo/payment-status").status_code == 400  # no X-Forwarded-Host
        status = payment_status(alice)
        assert status["requires_purchase"] is True and status["status"] == "not_buy"
        assert alice.get("/apps/paid-echo/payment-status").json()["data"]["source"] == "market.bolt"
        free = alice.get("/sources/market.bolt/apps/env-echo/payment-status").json()["data"]
        assert free == {**free, "requires_purchase": False, "status": "not_required"}

        first = purchase(alice)
        assert first["status"] == "signature_required" and first["product_id"] == "paid-echo-pro"
        assert first["callback_url"] == "https://market.example/app-store/api/v2/payment/submit-signature"
        stale_signature = sign(keys.wallet, first["sign_body"])
        second = purchase(alice)
        assert second["sign_body"]["nonce"] != first["sign_body"]["nonce"]

        replayed = alice.post("/payment/submit-signature", json={"jws": stale_signature})
        assert replayed.status_code == 400 and "nonce" in replayed.json()["message"]
        assert payment_status(alice)["status"] == "signature_need_resign"
        forged = alice.post("/payment/submit-signature", json={"jws": sign(keys.impostor, second["sign_body"])})
        assert forged.status_code == 400 and "does not verify" in forged.json()["message"]
        for_bob = {**second["sign_body"], "user": "bob"}
        assert alice.post("/payment/submit-signature", json={"jws": sign(keys.wallet, for_bob)}).status_code in (
            400, 404)
        assert alice.post("/payment/frontend-start", json={"source_id": "market.bolt", "app_id": "paid-echo"}
                          ).status_code == 400  # not signed yet

        third = purchase(alice)
        good = sign(keys.wallet, third["sign_body"])
        signed = alice.post("/payment/submit-signature", json={
            "jws": good, "application_verifiable_credential": {"productId": "paid-echo-pro", "txHash": ""},
            "product_credential_manifest": {}})
        assert signed.status_code == 200, signed.text
        assert signed.json()["data"]["status"] == "payment_required" and signed.json()["data"]["user"] == "alice"
        callback = alice.post("/payment/fetch-signature-callback", json={"signed": True, "jws": good})
        assert callback.json()["data"] == {"status": "payment_required", "user": "alice", "jws_present": True}

        started = alice.post("/payment/frontend-start", json={
            "source_id": "market.bolt", "app_id": "paid-echo", "product_id": "paid-echo-pro",
            "frontend_data": {"wallet": "test"}})
        assert started.status_code == 200 and started.json()["data"]["frontend_data"] == {"wallet": "test"}

        waiting = pay(alice, "0xabc", None)
        assert waiting["status"] == "waiting_developer_confirmation" and waiting["success"] is False
        wrong_key = pay(alice, "0xabc", make_receipt(keys.other_developer, "alice", "0xabc"))
        assert wrong_key["status"] == "payment_retry_required" and "does not verify" in wrong_key["message"]
        wrong_tx = pay(alice, "0xabc", make_receipt(keys.developer, "alice", "0xdef"))
        assert wrong_tx["status"] == "payment_retry_required" and "tx_hash" in wrong_tx["message"]
        not_dev = pay(alice, "0xabc", make_receipt(keys.developer, "alice", "0xabc", issuer="someone.else"))
        assert not_dev["status"] == "payment_retry_required"
        assert install(alice).status_code == 400

        receipt = make_receipt(keys.developer, "alice", "0xabc")
        paid = pay(alice, "0xabc", receipt)
        assert paid == {"success": True, "message": "purchased", "status": "purchased"}
        assert payment_status(alice)["status"] == "purchased"
        installed = install(alice)
        assert installed.status_code == 200, installed.text
        assert alice.post("/payment/resend-vc", json={"product_id": "paid-echo-pro"}).status_code == 200

        # bob cannot ride on alice's purchase or her receipt
        assert payment_status(bob)["status"] == "not_buy"
        assert bob.post("/payment/resend-vc", json={"product_id": "paid-echo-pro"}).status_code == 404
        bob_purchase = purchase(bob)
        assert bob.post("/payment/submit-signature",
                        json={"jws": sign(keys.wallet, bob_purchase["sign_body"])}).status_code == 200
        stolen = pay(bob, "0xabc", receipt)
        assert stolen["status"] == "payment_retry_required" and stolen["success"] is False
        assert stolen["message"] == "the receipt's user is 'alice', expected 'bob'"  # the verifier refuses it first
        assert payment_status(bob)["status"] == "payment_retry_required"

        mine = alice.get("/payment/states").json()["data"]["states"]
        assert [s["payment_status"] for s in mine] == ["developer_confirmed"]
        assert receipt not in json.dumps(mine) and good not in json.dumps(mine)
        logs = market.admin.get("/logs", params={"type": "payment"}).json()["data"]["records"]
        assert any(r["status"] == "failed" for r in logs) and any(r["status"] == "succeeded" for r in logs)
        assert alice.post("/apps/stop", json={"appName": "paid-echo"}).status_code == 200

    with market_host(tmp_path) as market:  # purchases persist across a host restart
        assert payment_status(client(market, "alice"))["status"] == "purchased"
        assert payment_status(client(market, "bob"))["status"] == "payment_retry_required"


def test_purchase_needs_configured_developer_keys(tmp_path: Path) -> None:
    with market_host(tmp_path) as market:
        missing = market.admin.post("/sources/market.bolt/apps/paid-echo/purchase", headers=FORWARDED)
        assert missing.status_code == 400 and "dev.example" in missing.json()["message"]
        status = market.admin.get("/sources/market.bolt/apps/paid-echo/payment-status", headers=FORWARDED)
        assert status.json()["data"]["status"] == "error_missing_developer"
        free = market.admin.post("/sources/market.bolt/apps/env-echo/purchase", headers=FORWARDED)
        assert free.status_code == 400 and "free" in free.json()["message"]
