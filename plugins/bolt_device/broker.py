"""An embedded MQTT broker (amqtt) for one-command use of the manager.

Used only when the manager has no ``BOLT_DEVICE_BROKER_URL``.  It listens on
loopback and allows anonymous clients, so it is meant for trying things out
on one machine; real fleets use Mosquitto (or any MQTT 3.1.1 broker) with a
password per device.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

log = logging.getLogger("bolt_device.broker")


class EmbeddedBroker:
    def __init__(self, bind: str = "127.0.0.1", port: int = 1883) -> None:
        self.bind = bind
        self.port = port or _free_port(bind)
        self._broker: Any = None

    async def start(self) -> None:
        from amqtt.broker import Broker

        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.bind}:{self.port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
            },
        }
        self._broker = Broker(config)
        await self._broker.start()

    async def stop(self) -> None:
        if self._broker is not None:
            try:
                await self._broker.shutdown()
            except Exception:
                log.exception("embedded broker did not shut down cleanly")
            self._broker = None


def _free_port(bind: str) -> int:
    with socket.socket() as sock:
        sock.bind((bind, 0))
        return sock.getsockname()[1]
