"""A stand-in device backend for tests/test_enterprise_devices.py (the real one,
`bolt_device`, is tested with the store in tests/test_enterprise_fleet.py).

Each device is another real bolt host reached over HTTP: installing on it asks
that host to install the package from its own local repository.  It implements no
``uninstall_from_device``, like a backend that cannot remove apps.  Devices and the
calls received live on the module, so a test can set up one and inspect the other.
"""

from __future__ import annotations

from typing import Any

import httpx

from bolt_host import hookimpl

DEVICES: dict[str, dict[str, Any]] = {}  # id -> {"url", "auth": (name, password), "owner": user name}
CALLS: list[dict[str, Any]] = []


@hookimpl
def list_devices(host: Any, actor: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"id": device_id, "name": f"Host {device_id}", "platform": "bolt", "model": "bolt-host", "type": "host"}
        for device_id, device in DEVICES.items()
        if actor.get("isAdmin") or device.get("owner") == actor.get("user")
    ]


@hookimpl
async def install_on_device(host: Any, device_id: str, package: dict[str, Any], actor: dict[str, Any]) -> Any:
    device = DEVICES.get(device_id)
    if device is None:
        return None
    CALLS.append({"device": device_id, "package": package, "actor": actor})
    async with httpx.AsyncClient(base_url=device["url"], auth=device["auth"], timeout=30) as client:
        response = await client.post("/api/apps/local", json={"path": package["source"]["path"]})
    return {"status": "installed" if response.status_code == 201 else "failed", "httpStatus": response.status_code}
