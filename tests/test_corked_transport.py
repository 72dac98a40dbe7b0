"""One write per response: the host's connections join the writes of one loop turn.

Over a real uvicorn (the host's own protocol), a response arrives as ONE TCP data segment,
counted by the client socket's kernel counter (``tcpi_data_segs_in`` of ``TCP_INFO``); uvicorn
alone sends the status line and headers, then the body, as two.  And :class:`CorkedTransport`
over a real asyncio connection: what one turn writes reaches the socket as one write, in
order; a close sends what is pending first; an abort drops it.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from bolt_host.web.corked_transport import CorkedTransport
from tests.servers import LiveServer, live_host

pytestmark = pytest.mark.timeout(60)

TCP_INFO_DATA_SEGS_IN = 152  # offset of __u32 tcpi_data_segs_in in struct tcp_info (Linux >= 4.6)


def data_segments_in(sock: socket.socket) -> int:
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    return int(struct.unpack_from("I", info, TCP_INFO_DATA_SEGS_IN)[0])


def read_response(sock: socket.socket) -> bytes:
    """One whole HTTP/1.1 response with a Content-Length."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed early: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.lower().split(b"\r\n")
    length = next(int(line.split(b":")[1]) for line in lines if line.startswith(b"content-length"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk
        body += chunk
    return head + b"\r\n\r\n" + body


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveServer]:
    with live_host(tmp_path / "data") as server:
        yield server


def test_a_response_reaches_the_client_as_one_segment(live: LiveServer) -> None:
    address = urlsplit(live.url)
    with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
        for _ in range(3):  # each response of a kept-alive connection
            before = data_segments_in(sock)
            sock.sendall(b"GET /-/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            response = read_response(sock)
            assert response.startswith(b"HTTP/1.1 200")
            assert data_segments_in(sock) - before == 1


def test_a_response_before_a_close_is_sent_whole(live: LiveServer) -> None:
    address = urlsplit(live.url)
    with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
        sock.sendall(b"GET /-/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert body.startswith(b"{") and body.endswith(b"}")


class Recording:
    """A real transport, with the writes it was given listed."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        self.transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


async def _pair() -> tuple[CorkedTransport, Recording, asyncio.StreamReader, Any]:
    accepted: asyncio.Future[asyncio.StreamReader] = asyncio.get_running_loop().create_future()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set_result(reader)

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    transport, _ = await asyncio.get_running_loop().create_connection(asyncio.Protocol, "127.0.0.1", port)
    recording = Recording(transport)
    corked = CorkedTransport(recording, asyncio.get_running_loop())  # type: ignore[arg-type]
    return corked, recording, await accepted, server


async def _after_flush() -> None:
    """Wait for a callback queued now: the loop runs its callbacks in order, so the flush a write
    queued before it has run."""
    queued = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(queued.set_result, None)
    await queued


async def test_the_writes_of_one_turn_are_one_write_in_order() -> None:
    corked, recording, reader, server = await _pair()
    try:
        corked.write(b"HTTP/1.1 200 OK\r\n\r\n")
        corked.write(bytearray(b"body"))
        assert recording.writes == []  # nothing before the turn ends
        assert corked.get_write_buffer_size() == 23
        await _after_flush()  # the turn ends
        assert recording.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody"]
        corked.write(b"next")
        await _after_flush()
        assert recording.writes[1:] == [b"next"]  # a later turn: a write of its own
        assert await reader.readexactly(27) == b"HTTP/1.1 200 OK\r\n\r\nbodynext"
    finally:
        corked.close()
        server.close()
        await server.wait_closed()


async def test_close_sends_what_is_pending_and_abort_drops_it() -> None:
    corked, recording, reader, server = await _pair()
    try:
        corked.write(b"last words")
        corked.close()
        assert recording.writes == [b"last words"]
        assert await reader.read() == b"last words"  # then the end of the stream
    finally:
        server.close()
        await server.wait_closed()
    corked, recording, reader, server = await _pair()
    try:
        corked.write(b"never sent")
        corked.abort()
        await _after_flush()
        assert recording.writes == []
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await reader.readexactly(1)
    finally:
        server.close()
        await server.wait_closed()


async def test_a_complete_response_is_sent_when_its_last_part_is_written() -> None:
    """The host's protocol sends a response at its end, not a loop turn later: when the app's
    last ``send`` returns, nothing of it waits in the transport (one turn and one callback
    fewer per call; still one write per response)."""
    from uvicorn.config import Config
    from uvicorn.server import ServerState

    from bolt_host.web.connections import guarded_protocol

    waiting_after_last_send: list[int] = []
    protocols: list[Any] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})
        waiting_after_last_send.append(protocols[0].transport.get_write_buffer_size())

    config = Config(app, lifespan="off", log_level="warning")
    protocol_class = guarded_protocol(600, 128, 600)
    state = ServerState()

    def make() -> Any:
        protocols.append(protocol_class(config=config, server_state=state, app_state={}))
        return protocols[-1]

    server = await asyncio.get_running_loop().create_server(make, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for _ in range(2):
            writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200") and await reader.readexactly(2) == b"ok"
        assert waiting_after_last_send == [0, 0]
    finally:
        writer.close()
        server.close()
        await server.wait_closed()
