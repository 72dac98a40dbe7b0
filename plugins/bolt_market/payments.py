"""Purchases of priced apps: the Olares payment state machine, kept per user.

An app is priced when its manifest's ``bolt.price`` is set
(``{amount, currency, product_id, developer}``).  Flow, per (user, source, app):

1. ``purchase``: a fresh ``nonce``; signature ``required``; status
   ``signature_required``; the ``fetch_payment_signature`` request is published
   as a ``market-payment`` event (the host's stand-in for the LarePass push).
2. ``submit-signature`` / ``fetch-signature-callback``: a JWS by the source's
   signing keys over the purchase and its nonce -> signature
   ``required_and_signed``; status ``payment_required``.  A bad signature ->
   ``signature_need_resign``.
3. ``frontend-start``: payment ``frontend_started``.
4. ``start-polling`` with the ``tx_hash`` (and the receipt, or the developer's
   ``checkout_url`` is asked once for it): payment ``frontend_completed``; the
   receipt goes through the ``verify_payment`` hook -> ``developer_confirmed``,
   status ``purchased``; refused -> ``payment_retry_required``; no record yet ->
   ``waiting_developer_confirmation``.

Accepted receipts go in the ledger (:mod:`ledger`), keyed by their issuer and id: one
receipt confirms one purchase only.
"""

from __future__ import annotations

import secrets
import time
from typing import TYPE_CHECKING, Any

from tinydb import Query

from bolt_host.plugin import lazy_module

from .envelope import MarketError
from .ledger import ReceiptLedger
from .receipts import SignatureError, check_developers, check_jwks, unverified_claims, verify

if TYPE_CHECKING:
    import httpx
else:
    httpx = lazy_module("httpx")  # at the first hosted checkout

STATES = "market_payments"
CHECKOUT_TIMEOUT = 10.0


def price_of(entry: dict[str, Any]) -> dict[str, Any] | None:
    price = (entry.get("bolt") or {}).get("price")
    return price if isinstance(price, dict) and price else None


def product_of(entry: dict[str, Any]) -> str:
    price = price_of(entry) or {}
    return str(price.get("product_id") or entry["name"])


def frontend_status(row: dict[str, Any] | None, entry: dict[str, Any]) -> str:
    if price_of(entry) is None:
        return "not_required"
    if row is None:
        return "not_buy"
    if row.get("payment_status") == "developer_confirmed":
        return "purchased"
    if row.get("error_status"):
        return row["error_status"]
    if row.get("signature_status") != "required_and_signed":
        return "signature_required"
    if row.get("payment_status") in ("frontend_completed",) and row.get("developer_sync") == "in_progress":
        return "waiting_developer_confirmation"
    return "payment_required"


def row_status(row: dict[str, Any]) -> str:
    """The frontend status of a stored purchase (its app is priced by construction)."""
    return frontend_status(row, {"name": row["app_id"], "bolt": {"price": row.get("price") or {"priced": True}}})


class Payments:
    def __init__(self, market: Any) -> None:
        self.market = market
        self.host = market.host
        self._db = market.host.db
        self._db.migrate(STATES, {1: lambda t: None})
        self.ledger = ReceiptLedger(self._db)

    # configuration -----------------------------------------------------------
    def check_config(self, key: str, value: Any) -> Any:
        if key == "signing_keys":
            return check_jwks(value, "signing_keys")
        return check_developers(value)

    # records -----------------------------------------------------------------
    def _match(self, user: str, source: str, app_id: str) -> Any:
        q = Query()
        return (q.user == user) & (q.source == source) & (q.app_id == app_id)

    def record(self, user: str, source: str, app_id: str) -> dict[str, Any] | None:
        row = self._db.table(STATES).get(self._match(user, source, app_id))
        return dict(row) if row else None

    def _save(self, row: dict[str, Any]) -> dict[str, Any]:
        row["updated_at"] = time.time()
        with self._db.transaction():
            self._db.table(STATES).upsert(row, self._match(row["user"], row["source"], row["app_id"]))
        return row

    def records(self, user: str | None = None) -> list[dict[str, Any]]:
        rows = self._db.table(STATES).all()
        return [self.public(dict(r)) for r in rows if user is None or r["user"] == user]

    def record_count(self) -> int:
        return len(self._db.table(STATES)) + self.ledger.count()

    def cleanup(self) -> int:
        """Forget purchases that were started and never signed (stale challenges)."""
        with self._db.transaction():
            removed = self._db.table(STATES).remove(
                (Query().signature_status != "required_and_signed") & (Query().payment_status != "developer_confirmed")
            )
        return len(removed)

    @staticmethod
    def public(row: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in row.items() if k not in {"jws", "receipt"}}

    # lookups -----------------------------------------------------------------
    async def entry(self, source: str, app_id: str) -> dict[str, Any]:
        handle = self.market.sources.get(source)
        entry = await handle.find(app_id)
        if entry is None:
            raise MarketError(404, f"App not found: {app_id} in source {source}")
        return entry

    async def find_any_source(self, app_id: str) -> tuple[str, dict[str, Any]]:
        fallback = None
        for handle in self.market.sources.all():
            entry = await handle.find(app_id)
            if entry is not None and price_of(entry) is not None:
                return handle.id, entry
            if entry is not None and fallback is None:
                fallback = (handle.id, entry)
        if fallback is None:
            raise MarketError(404, f"App not found: {app_id}")
        return fallback

    def status(self, user: str, source: str, entry: dict[str, Any]) -> dict[str, Any]:
        row = self.record(user, source, entry["name"])
        price = price_of(entry)
        status = frontend_status(row, entry)
        return {
            "app_id": entry["name"],
            "source": source,
            "requires_purchase": price is not None,
            "status": status,
            "message": _MESSAGES.get(status, status),
            "payment_error": (row or {}).get("error") or "",
            "product_id": product_of(entry) if price else None,
            "price": price,
        }

    async def require_purchase(self, user: Any, source: str, entry: dict[str, Any]) -> None:
        price = price_of(entry)
        if price is None:
            return
        row = self.record(user.name, source, entry["name"])
        if row is None or row.get("payment_status") != "developer_confirmed":
            raise MarketError(
                400,
                f"{entry['name']} costs {price.get('amount')} {price.get('currency') or ''}".rstrip()
                + f"; purchase it first (POST /sources/{source}/apps/{entry['name']}/purchase)",
            )

    # flow --------------------------------------------------------------------
    async def purchase(self, user: str, source: str, entry: dict[str, Any], callback_host: str) -> dict[str, Any]:
        price = price_of(entry)
        if price is None:
            raise MarketError(400, f"{entry['name']} is free; it needs no purchase")
        config = self.market.sources.get(source).config
        developer = price.get("developer")
        row = self.record(user, source, entry["name"]) or {}
        if row.get("payment_status") == "developer_confirmed":
            return {**self.status(user, source, entry), "user": user}
        if developer not in (config.get("developers") or {}):
            self._save({**row, "user": user, "source": source, "app_id": entry["name"],
                        "product_id": product_of(entry), "error_status": "error_missing_developer",
                        "error": f"developer {developer!r} is not configured for source {source}"})
            raise MarketError(400, f"Payments for {entry['name']} are unavailable: its developer {developer!r} "
                                   f"has no keys in source {source}")
        if not config.get("signing_keys"):
            raise MarketError(503, f"Payments are not configured for source {source} (no signing_keys)")
        nonce = secrets.token_urlsafe(24)
        row = self._save({
            "user": user, "source": source, "app_id": entry["name"], "product_id": product_of(entry),
            "developer": developer, "price": price, "nonce": nonce, "payment_need": "required",
            "signature_status": "required_but_pending", "payment_status": "not_notified",
            "developer_sync": "not_started", "larepass_sync": "in_progress", "error_status": None, "error": None,
            "created_at": time.time(),
        })
        sign_body = {"user": user, "app_id": entry["name"], "source": source, "product_id": row["product_id"],
                     "nonce": nonce}
        callback = f"https://{callback_host}/app-store/api/v2/payment/submit-signature"
        await self.host.publish("market-payment", {"topic": "fetch_payment_signature", "user": user,
                                                   "sign_body": sign_body, "callback_url": callback}, "market")
        self._save({**row, "payment_status": "notification_sent"})
        self.market.store.log("purchase", user, entry["name"], source=source, status="accepted",
                              message=f"purchase of {row['product_id']} started")
        return {"app_id": entry["name"], "source": source, "user": user, "product_id": row["product_id"],
                "status": "signature_required", "sign_body": sign_body, "callback_url": callback}

    def accept_signature(self, user: str, token: Any) -> dict[str, Any]:
        """Verify a purchase signature for ``user``; returns the updated record (MarketError when refused)."""
        try:
            claims = unverified_claims(token)
        except SignatureError as exc:
            raise MarketError(400, f"Invalid signature: {exc}") from None
        source, app_id = claims.get("source"), claims.get("app_id")
        row = self.record(user, source, app_id) if isinstance(source, str) and isinstance(app_id, str) else None
        if row is None or (not row.get("nonce") and row.get("signature_status") != "required_and_signed"):
            raise MarketError(404, "No purchase is waiting for this signature; start it with /purchase")
        if row.get("signature_status") == "required_and_signed" and row.get("jws") == token:
            return row  # the same signature delivered twice (submit and callback)
        if row.get("payment_status") == "developer_confirmed":  # nothing to sign, and nothing to spoil
            raise MarketError(400, f"{app_id} is already purchased from {source}; no signature is needed")
        try:
            verified = verify(token, self.market.sources.get(source).config.get("signing_keys"))
            for field, wanted in (("user", user), ("app_id", app_id), ("source", source),
                                  ("product_id", row["product_id"]), ("nonce", row.get("nonce"))):
                if verified.get(field) != wanted:
                    raise SignatureError(f"the signed {field} does not match this purchase")
        except SignatureError as exc:
            self._save({**row, "signature_status": "error_need_resign", "error_status": "signature_need_resign",
                        "error": str(exc)})
            self.market.store.log("payment", user, app_id, source=source, status="failed", message=str(exc))
            raise MarketError(400, f"Invalid signature: {exc}") from None
        row = self._save({**row, "jws": token, "nonce": None, "signature_status": "required_and_signed",
                          "larepass_sync": "completed", "error_status": None, "error": None})
        self.market.store.log("payment", user, app_id, source=source, status="succeeded", message="signature accepted")
        return row

    def decline_signature(self, user: str, token: Any) -> dict[str, Any] | None:
        claims = {}
        if token:
            try:
                claims = unverified_claims(token)
            except SignatureError:
                claims = {}
        rows = [r for r in self._db.table(STATES).search(Query().user == user)
                if r.get("signature_status") == "required_but_pending"
                and (not claims or (r["source"], r["app_id"]) == (claims.get("source"), claims.get("app_id")))]
        for row in rows:
            self._save({**dict(row), "larepass_sync": "failed", "signature_status": "error_no_record",
                        "error_status": "signature_no_record", "error": "the signature request was declined"})
        return dict(rows[0]) if rows else None

    def signed_row(self, user: str, source: str, app_id: str, product_id: Any) -> dict[str, Any]:
        row = self.record(user, source, app_id)
        if row is None:
            raise MarketError(404, f"No purchase of {app_id} from {source} was started")
        if product_id not in (None, "", row["product_id"]):
            raise MarketError(400, f"product_id {product_id!r} does not match {row['product_id']!r}")
        if row.get("signature_status") != "required_and_signed":
            raise MarketError(400, f"The purchase of {app_id} is not signed yet (status {row_status(row)})")
        return row

    def frontend_started(self, user: str, source: str, app_id: str, product_id: Any, data: Any) -> dict[str, Any]:
        row = self.signed_row(user, source, app_id, product_id)
        if row.get("payment_status") == "developer_confirmed":
            return row
        return self._save({**row, "payment_status": "frontend_started", "frontend_data": data})

    async def confirm(self, user: str, source: str, entry: dict[str, Any], tx_hash: str,
                      receipt_token: str | None) -> dict[str, Any]:
        """Record the payment's ``tx_hash`` and confirm it with the developer's receipt, if there is one."""
        app_id = entry["name"]
        row = self.signed_row(user, source, app_id, None)
        if row.get("payment_status") == "developer_confirmed":
            return row
        row = self._save({**row, "payment_status": "frontend_completed", "tx_hash": tx_hash,
                          "developer_sync": "in_progress", "error_status": None, "error": None})
        if receipt_token is None:
            receipt_token, outcome = await self._ask_checkout(row)
            if receipt_token is None:
                return self._save({**row, **outcome})
        verified = await self._verify_receipt(user, source, entry, receipt_token, tx_hash)
        if isinstance(verified, str):
            return self._refused(row, verified)
        return await self._confirmed(row, receipt_token, verified, "confirmed")

    async def _verify_receipt(self, user: str, source: str, entry: dict[str, Any], token: str,
                              tx_hash: str | None) -> dict[str, Any] | str:
        """The purchase ``token`` proves (the ``verify_payment`` hook's answer), or why it is refused."""
        receipt = {"vc": token, "tx_hash": tx_hash, "product_id": product_of(entry)}
        verified = await self.host.hooks.call("verify_payment", source=source, app=entry, user=user, receipt=receipt)
        if not isinstance(verified, dict):
            return receipt.get("error") or "no payment verifier accepted the receipt"
        if self.ledger.used_elsewhere(token, verified, (user, source, entry["name"])):
            return "this receipt was already used for another purchase"
        return verified

    async def _confirmed(self, row: dict[str, Any], token: str, verified: dict[str, Any], how: str) -> dict[str, Any]:
        """Record the accepted receipt and the purchase it confirms (``how``: confirmed, restored)."""
        user, source, app_id = row["user"], row["source"], row["app_id"]
        self.ledger.record(token, verified, (user, source, app_id))
        row = self._save({**row, "receipt": token, "verified": verified, "payment_status": "developer_confirmed",
                          "developer_sync": "completed", "error_status": None, "error": None,
                          "purchased_at": row.get("purchased_at") or time.time()})
        self.market.store.log("payment", user, app_id, source=source, status="succeeded",
                              message=f"purchase of {row['product_id']} {how} by {verified.get('developer')}")
        await self.host.publish("market-payment", {"topic": "save_payment_vc", "user": user,
                                                   "product_id": row["product_id"], "vc": token}, "market")
        return row

    async def restore(self, user: str, source: str, entry: dict[str, Any], token: str | None) -> dict[str, Any]:
        """Confirm a purchase made before from its receipt: the one given, or the developer's checkout's.

        For a purchase record lost or never confirmed here (another device, a reset).
        Nothing changes unless the receipt is accepted.
        """
        price = price_of(entry)
        if price is None:
            raise MarketError(400, f"{entry['name']} is free; it needs no purchase")
        row = self.record(user, source, entry["name"]) or {
            "user": user, "source": source, "app_id": entry["name"], "product_id": product_of(entry),
            "developer": price.get("developer"), "price": price, "payment_need": "required",
            "signature_status": "not_required", "created_at": time.time(),
        }
        if row.get("payment_status") == "developer_confirmed":
            return row
        if token is None:
            token, outcome = await self._ask_checkout({**row, "tx_hash": None})
            if token is None:
                reason = outcome.get("error") or "no receipt was sent, and the developer's checkout has none"
                raise MarketError(404, f"No purchase of {entry['name']} by {user} to restore: {reason}")
        verified = await self._verify_receipt(user, source, entry, token, None)
        if isinstance(verified, str):
            self.market.store.log("payment", user, entry["name"], source=source, status="failed",
                                  message=f"restore refused: {verified}")
            raise MarketError(400, f"The receipt was refused: {verified}")
        return await self._confirmed(row, token, verified, "restored")

    def _refused(self, row: dict[str, Any], reason: str) -> dict[str, Any]:
        self.market.store.log("payment", row["user"], row["app_id"], source=row["source"], status="failed",
                              message=reason)
        return self._save({**row, "developer_sync": "failed", "error_status": "payment_retry_required",
                           "error": reason})

    async def _ask_checkout(self, row: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
        """One request to the developer's checkout for the receipt: code 0 ok, 1 no record yet, 2 re-sign."""
        developers = self.market.sources.get(row["source"]).config.get("developers") or {}
        url = (developers.get(row.get("developer")) or {}).get("checkout_url")
        if not url:
            return None, {}
        fields = ("user", "app_id", "source", "product_id", "tx_hash")
        params = {k: row[k] for k in fields if row.get(k) is not None}  # no tx_hash when restoring
        try:
            async with httpx.AsyncClient(timeout=CHECKOUT_TIMEOUT) as client:
                answer = (await client.get(url, params=params)).json()
        except (httpx.HTTPError, ValueError) as exc:
            return None, {"developer_sync": "failed", "error_status": "payment_retry_required",
                          "error": f"the developer's checkout did not answer ({type(exc).__name__})"}
        code = answer.get("code") if isinstance(answer, dict) else None
        if code == 0 and isinstance(answer.get("vc"), str):
            return answer["vc"], {}
        if code == 2:
            return None, {"signature_status": "error_need_resign", "error_status": "signature_need_resign",
                          "error": "the developer asks for a new signature"}
        return None, {}

    async def resend(self, user: str, product_id: str) -> dict[str, Any]:
        rows = [dict(r) for r in self._db.table(STATES).search((Query().user == user)
                                                                & (Query().product_id == product_id))]
        row = next((r for r in rows if r.get("payment_status") == "developer_confirmed" and r.get("receipt")), None)
        if row is None:
            raise MarketError(404, f"No confirmed payment with a receipt for product {product_id}")
        await self.host.publish("market-payment", {"topic": "save_payment_vc", "user": user,
                                                   "product_id": product_id, "vc": row["receipt"]}, "market")
        return row


_MESSAGES = {
    "not_required": "This app is free",
    "not_buy": "Not purchased",
    "signature_required": "Waiting for the purchase signature",
    "payment_required": "Signed; waiting for payment",
    "waiting_developer_confirmation": "Paid; waiting for the developer's receipt",
    "payment_retry_required": "The receipt was refused; retry the confirmation",
    "signature_need_resign": "The signature was refused; sign again",
    "signature_no_record": "The signature request was declined",
    "error_missing_developer": "The developer is not configured for this source",
    "purchased": "Purchased",
}
