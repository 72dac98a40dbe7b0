"""Slow clients: time limits on reading a request's headers and body, and a cap on connections per address.

uvicorn times out idle keep-alive connections, but not a connection that never finishes
its headers (slowloris): 300 of them held every one open.  :func:`guarded_protocol` gives
uvicorn an HTTP protocol (its own h11 one, extended) that

* closes a connection whose request headers are not complete ``header_timeout`` seconds
  after it opened or after its previous answer;
* closes a connection whose request body stops arriving for ``body_idle_timeout`` seconds
  (a trickle keeps it open, as a slow upload must; a sender that went silent does not);
* keeps at most ``per_address`` connections per client address: a new one first pushes out
  that address's oldest connection still waiting for headers (so a flood of slow sockets
  cannot lock out the same address's real requests), and is refused when none is.
  A connection upgraded to a WebSocket (:class:`~bolt_host.web.ws_connections.GuardedWebSocketProtocol`) still counts
  until it closes; it is never pushed out.

Each connection's writes go through :class:`~bolt_host.web.corked_transport.CorkedTransport`:
a response's headers and body leave in one write.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import h11
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from bolt_host.web.corked_transport import CorkedTransport

Counted = Any  # a GuardedH11Protocol or a GuardedWebSocketProtocol


def _open_by_address(server_state: ServerState) -> dict[str, list[Counted]]:
    table: dict[str, list[Counted]] | None = getattr(server_state, "bolt_connections_by_address", None)
    if table is None:
        table = {}
        server_state.bolt_connections_by_address = table  # type: ignore[attr-defined]
    return table


def count_connection(server_state: ServerState, address: str, connection: Counted) -> None:
    _open_by_address(server_state).setdefault(address, []).append(connection)


def uncount_connection(server_state: ServerState, address: str | None, connection: Counted) -> None:
    if address is None:
        return
    table = _open_by_address(server_state)
    mine = table.get(address, [])
    if connection in mine:
        mine.remove(connection)
    if not mine:
        table.pop(address, None)


class GuardedH11Protocol(H11Protocol):
    header_timeout: float = 10.0
    per_address: int = 128
    body_idle_timeout: float = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._headers_due = 0.0  # loop time by which the next request's headers must be complete
        self._body_timer: asyncio.TimerHandle | None = None
        self._address: str | None = None

    # connection life ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.transport = cast(asyncio.Transport, CorkedTransport(transport, self.loop))  # one write per response
        self._address = self.client[0] if self.client else None
        if self._address is not None and not self._admit(self._address):
            self.transport.close()
            return
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._forget()
        self._cancel_body_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state == h11.SEND_BODY and not self.transport.is_closing():
            self._arm_body_timer()  # each chunk of the body restarts the clock
        else:
            self._cancel_body_timer()

    def on_response_complete(self) -> None:
        if isinstance(self.transport, CorkedTransport):
            self.transport.flush()  # the whole answer now, not at the end of this loop turn
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_header_timer()  # the next request's headers get the same limit

    def handle_websocket_upgrade(self, event: h11.Request) -> None:
        self._forget()  # the WebSocket protocol takes the connection over from here
        if isinstance(self.transport, CorkedTransport):
            self.transport.flush()
            self.transport = self.transport.wrapped
        super().handle_websocket_upgrade(event)

    # headers -------------------------------------------------------------------------
    def waiting_for_headers(self) -> bool:
        idle = self.cycle is None or self.cycle.response_complete
        return idle and self.conn.their_state in (h11.IDLE, h11.DONE)

    def _arm_header_timer(self) -> None:
        """The next headers are due ``header_timeout`` from now.  A timer still pending is kept and
        only its deadline moves (it re-arms itself for the rest when it fires early): a kept-alive
        connection answering call after call made and cancelled a timer for each one."""
        self._headers_due = self.loop.time() + self.header_timeout
        if self._header_timer is None:
            self._header_timer = self.loop.call_at(self._headers_due, self._on_header_timeout)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _on_header_timeout(self) -> None:
        self._header_timer = None
        if self.loop.time() < self._headers_due:  # an answer since it was armed moved the deadline
            self._header_timer = self.loop.call_at(self._headers_due, self._on_header_timeout)
            return
        if self.waiting_for_headers() and not self.transport.is_closing():
            self.logger.debug("closing a connection from %s: no complete request headers in time", self._address)
            self.transport.close()

    # body ----------------------------------------------------------------------------
    def _arm_body_timer(self) -> None:
        self._cancel_body_timer()
        self._body_timer = self.loop.call_later(self.body_idle_timeout, self._on_body_timeout)

    def _cancel_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _on_body_timeout(self) -> None:
        self._body_timer = None
        if self.conn.their_state == h11.SEND_BODY and not self.transport.is_closing():
            self.logger.debug("closing a connection from %s: its request body stopped arriving", self._address)
            self.transport.close()

    # per-address cap ---------------------------------------------------------------------
    def _admit(self, address: str) -> bool:
        mine = _open_by_address(self.server_state).get(address, [])
        if len(mine) >= self.per_address:
            oldest_waiting = next((other for other in mine if other.waiting_for_headers()), None)
            if oldest_waiting is None:
                self.logger.warning("refusing a connection from %s: %d already open", address, len(mine))
                return False
            oldest_waiting.transport.close()
            oldest_waiting._forget()
        count_connection(self.server_state, address, self)
        return True

    def _forget(self) -> None:
        self._cancel_header_timer()
        uncount_connection(self.server_state, self._address, self)


def guarded_websocket(config: Config, server_state: ServerState, app_state: dict[str, Any]) -> asyncio.Protocol:
    """uvicorn's ``ws=`` option: the protocol a connection upgraded to a WebSocket continues with.

    A factory rather than the class, so that uvicorn's WebSocket protocol (and the websockets
    library under it, about 1.3 MB) is imported at the first upgrade, not by every host.
    """
    from bolt_host.web.ws_connections import GuardedWebSocketProtocol

    return GuardedWebSocketProtocol(config=config, server_state=server_state, app_state=app_state)


def guarded_protocol(header_timeout: float, per_address: int, body_idle_timeout: float) -> type[GuardedH11Protocol]:
    """The protocol class for uvicorn's ``http=`` option, with these limits."""
    return type(
        "GuardedH11Protocol",
        (GuardedH11Protocol,),
        {"header_timeout": header_timeout, "per_address": per_address, "body_idle_timeout": body_idle_timeout},
    )
