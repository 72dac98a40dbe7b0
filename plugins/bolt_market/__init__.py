"""The `market` store backend: the Olares Market API (``/app-store/api/v2``) on bolt-host.

Registered through the `bolt_host` entry-point group like any third-party
plugin (the host registers its :data:`plugin`); it imports only ``bolt_host.plugin``
and declares one hook of its own, ``verify_payment`` (``hookspecs``).  See docs/market.md.

Modules: ``routes*`` (HTTP), ``envelope`` (answers), ``identity`` (who calls),
``market`` (per-host state), ``store`` (tables), ``lifecycle`` (state machine),
``operations`` (task jobs), ``packages`` (installs and clones), ``sources``,
``uploads``, ``views``, ``payments``/``receipts``/``ledger`` (purchases), ``dashboard``.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from bolt_host.plugin import Host, hookimpl

__version__ = "0.2.0"

UPLOAD_PATH = "/app-store/api/v2/apps/upload"


class MarketPlugin:
    """The backend's hooks; its per-host state lives in ``host.state["market"]``."""

    @hookimpl
    def register_hookspecs(self) -> list[ModuleType]:
        from . import hookspecs

        return [hookspecs]

    @hookimpl
    def register_routes(self, host: Host) -> list[Any]:
        from .routes import routes

        return routes()

    @hookimpl
    def register_error_formats(self, host: Host) -> list[tuple[str, Any]]:
        from .envelope import PREFIX, host_error_body

        return [(PREFIX + "/", host_error_body)]

    @hookimpl
    def register_upload_paths(self, host: Host) -> list[str]:
        return [UPLOAD_PATH]

    @hookimpl
    def startup(self, host: Host) -> None:
        from .market import Market
        from .recovery import recover
        from .uploads import clean_partials

        market = Market.create(host)
        host.state["market"] = market
        for handle in market.sources.all():
            clean_partials(handle.folder)
        recover(market)

    @hookimpl
    async def shutdown(self, host: Host) -> None:
        market = host.state.pop("market", None)
        if market is not None:
            await market.close()

    @hookimpl
    def app_environment(self, host: Host, app: dict[str, Any]) -> dict[str, str]:
        """The envs an instance was installed (or upgraded) with through the Market."""
        from .store import envs_for

        market = host.state.get("market")
        row = market.store.instance(app.get("name", "")) if market is not None else None
        if row is None:
            return {}
        return {e["envName"]: e["value"] for e in envs_for(row, app.get("version")) if "envName" in e}

    @hookimpl
    def requested_port(self, host: Host, app: dict[str, Any]) -> int | None:
        """The entrance port a clone was installed with, honoured by the host when it is free."""
        from .packages import requested_port as entrance_port

        market = host.state.get("market")
        row = market.store.instance(app.get("name", "")) if market is not None else None
        return entrance_port(row.get("entrances") or []) if row is not None else None

    @hookimpl(trylast=True)
    def verify_payment(self, host: Host, source: str, app: dict[str, Any], user: str, receipt: Any) -> Any:
        """Built-in verifier: accepts a receipt VC signed by the app developer's key (see receipts.py)."""
        from .receipts import builtin_verify_payment

        return builtin_verify_payment(host, source, app, user, receipt)


plugin = MarketPlugin()
