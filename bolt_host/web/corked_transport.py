"""One socket write per response: a transport that joins the writes of one event-loop turn.

uvicorn's HTTP protocol writes a response's status line and headers, then its body, with
two ``transport.write`` calls, and asyncio sends each at once (``TCP_NODELAY``): two
segments, and on loopback two wake-ups of the client, which reads the headers, parses them
and blocks again for the body.  A Starlette response sends both messages without yielding
to the loop, so :class:`CorkedTransport` keeps what is written during one turn of the loop
and sends it in one write at the end of that turn (or at once when the connection closes).
The bytes and their order are the same; nothing waits longer than the turn it was written in.
The host's protocol flushes a response as soon as its last part is written (the callback
queued for the end of the turn then has nothing to do, and is cancelled).
"""

from __future__ import annotations

import asyncio
from typing import Any


class CorkedTransport:
    """Wraps a connection's transport; ``write`` calls of one loop turn reach it as one.

    Everything else is the wrapped transport's: attributes are looked up on it.
    """

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []
        self._flush_handle: asyncio.Handle | None = None

    @property
    def wrapped(self) -> asyncio.Transport:
        return self._transport

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        self._pending.append(bytes(data) if not isinstance(data, bytes) else data)
        if self._flush_handle is None:
            self._flush_handle = self._loop.call_soon(self.flush)

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def flush(self) -> None:
        """Send what this turn wrote, in one write."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        pending, self._pending = self._pending, []
        if not pending or self._transport.is_closing():
            return
        self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(len(data) for data in self._pending)

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        self.flush()  # a response followed by Connection: close is sent before the close
        self._transport.close()

    def abort(self) -> None:
        self._pending = []
        self._transport.abort()
