"""The WebSocket side of :mod:`bolt_host.web.connections`, imported at the first upgrade."""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState

from bolt_host.web.connections import count_connection, uncount_connection


class GuardedWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket protocol, counted against its address's cap while open."""

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any]) -> None:
        super().__init__(config=config, server_state=server_state, app_state=app_state)
        self._server_state = server_state
        self._address: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._address = self.client[0] if self.client else None
        if self._address is not None:  # admitted as an HTTP connection just before the upgrade
            count_connection(self._server_state, self._address, self)

    def connection_lost(self, exc: Exception | None) -> None:
        uncount_connection(self._server_state, self._address, self)
        self._address = None
        super().connection_lost(exc)

    def waiting_for_headers(self) -> bool:
        return False  # a WebSocket is in use: never the one pushed out
