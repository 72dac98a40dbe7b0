"""The receipt ledger (``market_receipts``): which purchase each accepted receipt confirmed.

One receipt confirms one purchase, a ``(user, source, app)``, and no other.  A receipt
is known by its issuer and unique id (``developer:jti``, what the verifier names), so a
re-encoded or re-signed copy of the same receipt is still the same receipt; receipts a
verifier gives no id are known by the digest of their bytes.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from tinydb import Query

RECEIPTS = "market_receipts"

Purchase = tuple[str, str, str]  # (user, source, app_id)


def receipt_key(token: str, verified: dict[str, Any]) -> str:
    receipt_id = verified.get("receipt_id")
    if isinstance(receipt_id, str) and receipt_id:
        return f"{verified.get('developer') or ''}:{receipt_id}"
    return "sha256:" + digest_of(token)


def digest_of(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ReceiptLedger:
    def __init__(self, db: Any) -> None:
        self._db = db
        db.migrate(RECEIPTS, {1: lambda t: None})

    def _find(self, token: str, verified: dict[str, Any]) -> dict[str, Any] | None:
        # Receipt ids are not secrets, and the bytes are looked up by their SHA-256.
        key, digest = receipt_key(token, verified), digest_of(token)
        return self._db.table(RECEIPTS).get((Query().key == key) | (Query().digest == digest))

    def used_elsewhere(self, token: str, verified: dict[str, Any], purchase: Purchase) -> bool:
        """Whether this receipt (or a copy of it) already confirmed another purchase than ``purchase``."""
        used = self._find(token, verified)
        return used is not None and (used["user"], used["source"], used["app_id"]) != purchase

    def record(self, token: str, verified: dict[str, Any], purchase: Purchase) -> None:
        user, source, app_id = purchase
        key = receipt_key(token, verified)
        with self._db.transaction():
            self._db.table(RECEIPTS).upsert(
                {"key": key, "digest": digest_of(token), "user": user, "source": source, "app_id": app_id,
                 "receipt_id": verified.get("receipt_id"), "developer": verified.get("developer"), "at": time.time()},
                Query().key == key,
            )

    def count(self) -> int:
        return len(self._db.table(RECEIPTS))
