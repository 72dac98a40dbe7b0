"""The hooks the market backend declares for other plugins (through ``register_hookspecs``)."""

from __future__ import annotations

from typing import Any

from bolt_host.plugin import Host, hookspec


@hookspec(firstresult=True)
def verify_payment(host: Host, source: str, app: dict[str, Any], user: str, receipt: Any) -> Any:
    """Verify a purchase receipt for ``app`` bought by ``user`` from ``source``.

    firstresult: return a dict describing the verified purchase, or False to
    refuse; None abstains.  The market's built-in verifier (a receipt VC signed by
    the developer's key) runs last (``trylast``).  Declared by the market backend:
    implement it only alongside it.
    """
