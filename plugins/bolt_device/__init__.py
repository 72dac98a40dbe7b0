"""The `device` store backend: a fleet of bolt hosts managed through Eclipse
Kapua's device-packages REST API, with Kura's DEPLOY-V2 protocol over MQTT.

One host runs it as the **manager** (``BOLT_DEVICE_MODE=manager``: Kapua's REST
under ``/v1``), every other host as an **agent** (``BOLT_DEVICE_MODE=agent``).
Without ``BOLT_DEVICE_MODE`` the plugin is inert: no routes, no broker, no
network.  The host registers :data:`plugin`; it imports only ``bolt_host.plugin``.
See docs/device.md.

Modules: ``config`` (env), ``backend`` (what runs per mode), ``wire`` (topics
and payloads), ``transport`` (MQTT link), ``manager`` / ``agent`` (the two
sides), ``jobs`` / ``downloads`` / ``reboot`` (what an agent does),
``accounts`` / ``tokens`` / ``devices`` / ``operations`` (manager state),
``fleet`` (manager actions), ``queries`` (Kapua's query bodies), ``web`` /
``auth_routes`` / ``device_routes`` / ``registry_routes`` / ``fallback`` (REST), ``kapua``
(ids, error bodies), ``broker`` (embedded broker).
"""

from __future__ import annotations

from typing import Any

from bolt_host.plugin import Host, hookimpl

__version__ = "0.2.0"

CONFIG_KEY = "device-config"


class DevicePlugin:
    """The plugin; ``config=None`` reads ``BOLT_DEVICE_*`` from the environment.

    Tests and embedders that run several hosts in one process pass an explicit
    :class:`bolt_device.config.DeviceConfig` per host (and disable the
    entry-point copy with ``disable_plugins=("device",)``).
    """

    def __init__(self, config: Any = None) -> None:
        self.config = config
        self.__name__ = "device" if config is None else f"device-{id(self):x}"

    def _config(self, host: Host) -> Any:
        from .config import DeviceConfig

        if self.config is not None:
            return self.config
        if CONFIG_KEY not in host.state:
            host.state[CONFIG_KEY] = DeviceConfig.from_env()
        return host.state[CONFIG_KEY]

    @hookimpl
    def register_routes(self, host: Host) -> list[Any]:
        if self._config(host).mode != "manager":
            return []
        from . import auth_routes, device_routes, fallback, registry_routes

        # registry_routes first: its literal ``_query``/``_count`` paths before ``{deviceId}``;
        # fallback last: it answers every other /v1 path and method in Kapua's body
        return [*auth_routes.routes(), *registry_routes.routes(), *device_routes.routes(), *fallback.routes()]

    @hookimpl
    def register_error_formats(self, host: Host) -> list[tuple[str, Any]]:
        if self._config(host).mode != "manager":
            return []
        from .fallback import render_error

        return [("/v1/", render_error)]

    @hookimpl
    async def startup(self, host: Host) -> None:
        config = self._config(host)
        if not config.active:
            return
        from .backend import STATE_KEY, DeviceBackend

        backend = DeviceBackend(host, config)
        host.state[STATE_KEY] = backend
        await backend.start()

    @hookimpl
    async def shutdown(self, host: Host) -> None:
        from .backend import STATE_KEY

        backend = host.state.pop(STATE_KEY, None)
        if backend is not None:
            await backend.stop()

    @hookimpl
    def list_devices(self, host: Host, actor: dict[str, Any]) -> Any:
        backend = _manager(host)
        return None if backend is None else backend.devices_for(actor)

    @hookimpl
    async def install_on_device(
        self, host: Host, device_id: str, package: dict[str, Any], actor: dict[str, Any]
    ) -> Any:
        async def start(fleet: Any, backend: Any, device: dict[str, Any], scope: str) -> Any:
            fleet.require_reachable(device)  # before packing a tarball an offline device cannot fetch
            request = await fleet.package_download_request(backend, package)
            return await fleet.start_download(backend, device, request, scope, backend.config.request_timeout_ms)

        return await _operate(host, device_id, actor, start)

    @hookimpl
    async def uninstall_from_device(
        self, host: Host, device_id: str, package: dict[str, Any], actor: dict[str, Any]
    ) -> Any:
        async def start(fleet: Any, backend: Any, device: dict[str, Any], scope: str) -> Any:
            request = fleet.validate_uninstall(
                {"name": package.get("package") or package["name"], "version": package.get("version")}
            )
            return await fleet.start_uninstall(backend, device, request, scope, backend.config.request_timeout_ms)

        return await _operate(host, device_id, actor, start)


async def _operate(host: Host, device_id: str, actor: dict[str, Any], start: Any) -> Any:
    """Start an operation on a device this host manages for ``actor``; None when it is no manager."""
    backend = _manager(host)
    if backend is None:
        return None
    from . import fleet
    from .operations import public_operation

    scope = backend.writable_scope(actor)
    device = fleet.require_device(backend, scope, device_id)
    return public_operation(await start(fleet, backend, device, scope))


def _manager(host: Host) -> Any:
    from .backend import STATE_KEY

    backend = host.state.get(STATE_KEY)
    return backend if backend is not None and backend.manager is not None else None


plugin = DevicePlugin()  # the entry point's copy: configured from BOLT_DEVICE_* when the host starts
