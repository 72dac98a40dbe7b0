"""The `market` store backend: the Olares Market API (``/app-store/api/v2``) on bolt-host.

Registered through the `bolt_host` entry-point group like any third-party
plugin; it uses only the Host's public services (apps, catalog, tasks,
supervisor, users, sessions, db).  See docs/market.md.

Modules: ``routes*`` (HTTP), ``envelope`` (answers), ``identity`` (who calls),
``market`` (per-host state), ``store`` (tables), ``lifecycle`` (state machine),
``operations`` (task jobs), ``packages`` (installs and clones), ``sources``,
``uploads``, ``views``, ``payments``/``receipts``/``ledger`` (purchases), ``dashboard``.
"""

from __future__ import annotations

from typing import Any

import psutil

from bolt_host import hookimpl

__version__ = "0.2.0"

UPLOAD_PATH = "/app-store/api/v2/apps/upload"


@hookimpl
def register_routes(host: Any) -> list[Any]:
    from .routes import routes

    return routes()


@hookimpl
def register_error_formats(host: Any) -> list[tuple[str, Any]]:
    from .envelope import PREFIX, host_error_body

    return [(PREFIX + "/", host_error_body)]


@hookimpl
def register_permissions(host: Any) -> list[tuple[str, str]]:
    return [
        ("/app-store/api/v2/apps/upload", "admin"),
        ("/app-store/api/v2/local-apps/", "admin"),
        ("/app-store/api/v2/settings/market-source", "user"),
        ("/app-store/api/v2/market/debug-memory", "admin"),
        ("/app-store/api/v2/diagnostic", "admin"),
        ("/app-store/api/v2/reload", "admin"),
        ("/app-store/api/v2/cleanup", "admin"),
        ("/app-store/api/v2/", "user"),
    ]


@hookimpl
def startup(host: Any) -> None:
    from .market import Market
    from .recovery import recover
    from .uploads import clean_partials

    if UPLOAD_PATH not in host.large_body_prefixes:
        host.large_body_prefixes.append(UPLOAD_PATH)
    # psutil measures system CPU per calling thread from its previous call; a first call in a
    # thread answers 0.0.  Start the measurement here, in the thread that will serve requests.
    psutil.cpu_percent(interval=None)
    market = Market.create(host)
    host.state["market"] = market
    for handle in market.sources.all():
        clean_partials(handle.folder)
    recover(market)


@hookimpl
async def shutdown(host: Any) -> None:
    market = host.state.pop("market", None)
    if market is not None:
        await market.close()


@hookimpl
def app_environment(host: Any, app: dict[str, Any]) -> dict[str, str]:
    """The envs an instance was installed (or upgraded) with through the Market."""
    from .store import envs_for

    market = host.state.get("market")
    row = market.store.instance(app.get("name", "")) if market is not None else None
    if row is None:
        return {}
    return {e["envName"]: e["value"] for e in envs_for(row, app.get("version")) if "envName" in e}


@hookimpl
def requested_port(host: Any, app: dict[str, Any]) -> int | None:
    """The entrance port a clone was installed with, honoured by the host when it is free."""
    from .packages import requested_port as entrance_port

    market = host.state.get("market")
    row = market.store.instance(app.get("name", "")) if market is not None else None
    return entrance_port(row.get("entrances") or []) if row is not None else None


@hookimpl(trylast=True)
def verify_payment(host: Any, source: str, app: dict[str, Any], user: str, receipt: Any) -> Any:
    """Built-in verifier: accepts a receipt VC signed by the app developer's key (see receipts.py)."""
    from .receipts import builtin_verify_payment

    return builtin_verify_payment(host, source, app, user, receipt)
