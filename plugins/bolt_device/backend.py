"""The device backend of one host: what runs depends on ``BOLT_DEVICE_MODE``.

* ``manager``: accounts, tokens, the device registry, operations and the
  MQTT manager (with an embedded broker when no broker URL is configured);
* ``agent``: the MQTT agent answering DEPLOY-V2 requests;
* ``off`` (default): nothing at all: no broker, no network, no tables.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from bolt_host.plugin import Host

from .config import BrokerAddress, DeviceConfig

log = logging.getLogger("bolt_device")
STATE_KEY = "device"


class DeviceBackend:
    def __init__(self, host: Host, config: DeviceConfig) -> None:
        self.host = host
        self.config = config
        self.accounts: Any = None
        self.tokens: Any = None
        self.devices: Any = None
        self.operations: Any = None
        self.manager: Any = None
        self.agent: Any = None
        self.broker: Any = None
        self.offers: Any = None
        self.state: Any = None  # the manager's devices, operations and notifications

    async def start(self) -> None:
        if self.config.mode == "manager":
            await self._start_manager()
        elif self.config.mode == "agent":
            from .agent import Agent

            self.agent = Agent(self.host, self.config)
            await self.agent.start()

    async def _start_manager(self) -> None:
        from .accounts import Accounts
        from .devices import Devices
        from .manager import Manager
        from .offers import PackageOffers
        from .operations import Operations
        from .tokens import AccessTokens

        host, config = self.host, self.config
        self.accounts = Accounts(host, config.account)
        self.tokens = AccessTokens(host.db, host.settings.data_dir, config.token_seconds, config.refresh_seconds)
        self.state = device_state(host)
        self.devices = Devices(self.state)
        self.operations = Operations(self.state)
        settings = host.settings
        self.offers = PackageOffers(settings.data_dir / "cache" / "device-offers", settings.max_download_bytes)
        if config.broker is None:
            from .broker import EmbeddedBroker

            self.broker = EmbeddedBroker("127.0.0.1", config.embedded_broker_port)
            await self.broker.start()
            prefix = config.topic_prefix.lstrip("$") or "EDC"  # amqtt refuses topics starting with '$'
            self.config = config = replace(
                config, broker=BrokerAddress("127.0.0.1", self.broker.port), topic_prefix=prefix
            )
            log.warning(
                "no BOLT_DEVICE_BROKER_URL: running an embedded MQTT broker on 127.0.0.1:%s (topics under %s/)",
                self.broker.port,
                prefix,
            )
        from .memory import keep_heap_small

        keep_heap_small()  # a burst's large buffers go back to the kernel, not to malloc's free list
        self.manager = Manager(config, self.accounts, self.devices, self.operations, self._publish)
        await self.manager.start()
        if config.memory_reports:  # a diagnostic, off unless asked for
            from .memory import MemoryReports

            MemoryReports(Path(config.memory_reports)).install()

    async def _publish(self, name: str, body: Any) -> None:
        await self.host.publish(name, body, publisher="device")

    async def stop(self) -> None:
        if self.agent is not None:
            await self.agent.stop()
        if self.manager is not None:
            await self.manager.stop()
        if self.state is not None:
            await self.state.commit()
            self.state.close()
        if self.offers is not None:
            self.offers.close()
        if self.broker is not None:
            await self.broker.stop()

    # for the fleet hooks ------------------------------------------------------
    def _manager_scope(self, actor: dict[str, Any]) -> str | None:
        """The scope whose devices ``actor`` may change: host admins only, as on the REST routes."""
        user = self.host.users.get(actor.get("user") or "") if actor.get("user") else None
        if user is None or user.get("isBlocked") or not self.host.users.is_admin(user):
            return None
        return self.accounts.scope_of_user(user)

    def writable_scope(self, actor: dict[str, Any]) -> str:
        """Like :meth:`_manager_scope`, failing closed with Kapua's 403."""
        from .kapua import unauthorized

        scope = self._manager_scope(actor)
        if scope is None:
            raise unauthorized("device_management", "write", "_")
        return scope

    def devices_for(self, actor: dict[str, Any]) -> list[dict[str, Any]]:
        """The devices ``actor`` may manage (change); none for a caller who may only read."""
        from .devices import public_device

        scope = self._manager_scope(actor)
        if scope is None:
            return []
        return [
            {
                **public_device(d),
                "name": d.get("displayName") or d["clientId"],
                "platform": "bolt",
                "model": d.get("modelName") or "bolt-host",
                "type": "host",
            }
            for d in self.devices.list(scope)
        ]


STATE_FILE = "device-state.json"


def device_state(host: Host) -> Any:
    """The manager's registry, operations and notifications: a journal of their own, so a burst
    of notifications appends what changed instead of rewriting the host's whole ``db.json``
    (older data dirs kept these tables there: they move over once)."""
    from bolt_host.plugin import JournalFile, move_tables_from

    from .devices import TABLE
    from .operations import NOTIFICATIONS, OPERATIONS

    state = JournalFile(host.settings.data_dir / STATE_FILE)
    with host.db.transaction():
        move_tables_from(host.db, state, {TABLE: "id", OPERATIONS: "id", NOTIFICATIONS: "id"})
    return state
