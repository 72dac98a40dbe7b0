"""Receipts: a third-party ``verify_payment`` plugin, the replay guard, restore-purchase and the developer's checkout.

``Licences`` is a real pluggy plugin loaded into the host: it verifies licences it
issued itself (signed with its own key), valid for one user and app from any source.
Its answer wins over the Market's built-in verifier, and because it does not bind a
licence to a source, only the Market's replay guard stands between one licence and
two purchases.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import ECKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bolt_host import hookimpl
from tests.market_payment_support import (
    Keys,
    client,
    install,
    make_receipt,
    pay,
    payment_status,
    sign,
    signed_purchase,
)
from tests.registry_server import RegistryServer
from tests.servers import serve
from tests.test_market_support import REPO, Market, market_host

pytestmark = pytest.mark.timeout(120)

ISSUER = "licences.example"


class Licences:
    """A payment method of its own: ES256 licences ``{iss, jti, user, app_id}`` signed by ``key``."""

    __name__ = "licences"

    def __init__(self) -> None:
        self.key = ECKey.generate_key("P-256", parameters={"kid": "licences-1"})
        self.asked: list[str] = []

    def issue(self, user: str, app_id: str = "paid-echo", jti: str | None = None) -> str:
        claims = {"iss": ISSUER, "jti": jti or str(uuid.uuid4()), "user": user, "app_id": app_id}
        return sign(self.key, claims)

    @hookimpl
    def verify_payment(self, host: Any, source: str, app: dict[str, Any], user: str, receipt: Any) -> Any:
        token = receipt.get("vc") if isinstance(receipt, dict) else None
        try:
            claims = json.loads(jws.extract_compact(str(token).encode()).payload)
        except (JoseError, ValueError):
            return None  # not ours: abstain, the next verifier decides
        if not isinstance(claims, dict) or claims.get("iss") != ISSUER:
            return None
        self.asked.append(source)
        try:
            jws.deserialize_compact(token, self.key, algorithms=["ES256"])
        except JoseError:
            return False
        if claims.get("user") != user or claims.get("app_id") != app["name"]:
            return False
        return {"developer": ISSUER, "receipt_id": claims["jti"]}


@pytest.fixture
def licences() -> Licences:
    return Licences()


@pytest.fixture
def keys() -> Keys:
    return Keys()


@pytest.fixture
def market(tmp_path: Path, licences: Licences, keys: Keys) -> Iterator[Market]:
    """A host with the Licences plugin and two priced sources: market.bolt and a registry, ``reg``."""
    with RegistryServer() as registry, market_host(tmp_path, plugins=[licences]) as running:
        registry.publish_dir(REPO / "paid-echo")
        added = running.admin.post("/settings/market-source", json={"type": "remote", "base_url": registry.url,
                                                                    **keys.source_config("reg")})
        assert added.status_code == 200, added.text
        assert running.admin.post("/settings/market-source", json=keys.source_config()).status_code == 200
        running.add_user("alice")
        running.add_user("bob")
        yield running


def _states(market: Market, user: str) -> dict[str, dict[str, Any]]:
    rows = client(market, user).get("/payment/states").json()["data"]["states"]
    return {row["source"]: row for row in rows}


def test_a_third_party_verifier_answers_before_the_built_in(market: Market, licences: Licences, keys: Keys) -> None:
    alice, bob = client(market, "alice"), client(market, "bob")

    signed_purchase(alice, keys)
    forged = sign(ECKey.generate_key("P-256", parameters={"kid": "licences-1"}),
                  {"iss": ISSUER, "jti": "forged", "user": "alice", "app_id": "paid-echo"})
    refused = pay(alice, "0x1", forged)
    assert refused["status"] == "payment_retry_required" and licences.asked == ["market.bolt"]
    assert refused["message"] == "no payment verifier accepted the receipt"  # the plugin said no: False decides

    accepted = pay(alice, "0x1", licences.issue("alice"))  # the built-in verifier would refuse its issuer
    assert accepted == {"success": True, "message": "purchased", "status": "purchased"}
    assert _states(market, "alice")["market.bolt"]["verified"]["developer"] == ISSUER
    assert install(alice).status_code == 200, "a licence is as good as a receipt"
    assert alice.post("/apps/stop", json={"appName": "paid-echo"}).status_code == 200

    signed_purchase(bob, keys)  # a developer's receipt: the plugin abstains and the built-in verifier decides
    assert pay(bob, "0x2", make_receipt(keys.developer, "bob", "0x2"))["status"] == "purchased"
    assert licences.asked == ["market.bolt", "market.bolt"]


def test_one_receipt_confirms_one_purchase_only(market: Market, licences: Licences, keys: Keys) -> None:
    alice = client(market, "alice")
    licence = licences.issue("alice", jti="licence-1")
    signed_purchase(alice, keys)
    assert pay(alice, "0x1", licence)["status"] == "purchased"

    # The same user and app from another source: the plugin accepts the licence there too,
    # so only the replay guard can refuse it.
    signed_purchase(alice, keys, "reg")
    again = pay(alice, "0x1", licence, "reg")
    assert again == {"success": False, "message": "this receipt was already used for another purchase",
                     "status": "payment_retry_required"}
    copy = licences.issue("alice", jti="licence-1")  # the same licence, signed again: other bytes, same id
    assert copy != licence
    assert pay(alice, "0x1", copy, "reg")["message"] == "this receipt was already used for another purchase"
    assert licences.asked.count("reg") == 2
    assert payment_status(alice, "reg")["status"] == "payment_retry_required"

    assert pay(alice, "0x1", licences.issue("alice"), "reg")["status"] == "purchased"  # a licence of its own
    assert pay(alice, "0x1", licence)["status"] == "purchased"  # its own purchase again: nothing to refuse


def test_a_signature_for_a_purchased_app_changes_nothing(market: Market, keys: Keys) -> None:
    alice = client(market, "alice")
    signed_purchase(alice, keys)
    assert pay(alice, "0x1", make_receipt(keys.developer, "alice", "0x1"))["status"] == "purchased"
    before = _states(market, "alice")["market.bolt"]

    claims = {"user": "alice", "app_id": "paid-echo", "source": "market.bolt", "product_id": "paid-echo-pro",
              "nonce": "made-up"}
    late = alice.post("/payment/submit-signature", json={"jws": sign(keys.impostor, claims)})
    assert late.status_code == 400
    assert late.json()["message"] == "paid-echo is already purchased from market.bolt; no signature is needed"
    after = _states(market, "alice")["market.bolt"]
    assert after == before and after["signature_status"] == "required_and_signed"


def test_restore_purchase(market: Market, keys: Keys) -> None:
    bob = client(market, "bob")
    restore = "/sources/market.bolt/apps/paid-echo/restore-purchase"

    nothing = bob.post(restore)
    assert nothing.status_code == 404
    assert nothing.json()["message"].startswith("No purchase of paid-echo by bob to restore")
    assert _states(market, "bob") == {}

    alices = make_receipt(keys.developer, "alice", "0xa")
    stolen = bob.post(restore, json={"receipt": alices})
    assert stolen.status_code == 400 and "user" in stolen.json()["message"]
    assert payment_status(bob)["status"] == "not_buy" and _states(market, "bob") == {}

    restored = bob.post(restore, json={"receipt": make_receipt(keys.developer, "bob", "0xb")})
    assert restored.status_code == 200, restored.text
    assert restored.json()["data"]["status"] == "purchased"
    assert install(bob).status_code == 200, "a restored purchase installs"
    assert bob.post("/apps/stop", json={"appName": "paid-echo"}).status_code == 200
    again = bob.post(restore)
    assert again.status_code == 200 and again.json()["data"]["status"] == "purchased"
    assert market.admin.post("/sources/market.bolt/apps/env-echo/restore-purchase",
                             headers={"X-Forwarded-Host": "m"}).status_code == 400  # free


def test_the_developers_checkout_and_a_declined_signature(market: Market, keys: Keys) -> None:
    asked: list[dict[str, str]] = []

    async def checkout(request: Request) -> JSONResponse:
        query = dict(request.query_params)
        asked.append(query)
        if query["user"] != "alice":
            return JSONResponse({"code": 1})  # no record of a payment yet
        return JSONResponse({"code": 0, "vc": make_receipt(keys.developer, "alice", query.get("tx_hash", ""))})

    with serve(Starlette(routes=[Route("/checkout", checkout)])) as developer:
        config = keys.source_config(checkout_url=f"{developer.url}/checkout")
        assert market.admin.post("/settings/market-source", json=config).status_code == 200
        alice, bob = client(market, "alice"), client(market, "bob")

        signed_purchase(alice, keys)
        paid = pay(alice, "0xfeed", None)
        assert paid["status"] == "purchased"
        assert asked[-1] == {"user": "alice", "app_id": "paid-echo", "source": "market.bolt",
                             "product_id": "paid-echo-pro", "tx_hash": "0xfeed"}

        signed_purchase(bob, keys)
        waiting = pay(bob, "0xbeef", None)
        assert waiting["status"] == "waiting_developer_confirmation" and asked[-1]["user"] == "bob"
        missing = bob.post("/sources/market.bolt/apps/paid-echo/restore-purchase")
        assert missing.status_code == 404 and "tx_hash" not in asked[-1]
        assert payment_status(bob)["status"] == "waiting_developer_confirmation"

    started = client(market, "bob").post("/sources/market.bolt/apps/paid-echo/purchase").json()["data"]
    declined = client(market, "bob").post("/payment/fetch-signature-callback", json={"signed": False})
    assert declined.json()["data"] == {"status": "signature_no_record", "user": "bob", "jws_present": False}
    assert payment_status(client(market, "bob"))["status"] == "signature_no_record"
    assert started["status"] == "signature_required"
