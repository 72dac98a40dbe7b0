"""Payments (placeholder until the payment flow lands): priced apps need a purchase."""

from __future__ import annotations

from typing import Any

from .envelope import MarketError


def price_of(entry: dict[str, Any]) -> dict[str, Any] | None:
    price = (entry.get("bolt") or {}).get("price")
    return price if isinstance(price, dict) and price else None


class Payments:
    def __init__(self, market: Any) -> None:
        self.market = market

    async def require_purchase(self, user: Any, source: str, entry: dict[str, Any]) -> None:
        if price_of(entry) is not None:
            raise MarketError(400, f"{entry['name']} must be purchased before it is installed")

    def check_config(self, key: str, value: Any) -> Any:
        return value

    def record_count(self) -> int:
        return 0

    def cleanup(self) -> int:
        return 0
