"""``bolt-host serve``'s uvicorn server: nothing wakes it while nobody calls, yet its ``Date``
header is current and a shut-down signal ends it at once."""

from __future__ import annotations

import asyncio
import selectors
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import pytest
import uvicorn

from bolt_host.quiet_server import QuietServer
from tests.helpers import async_wait_until, wait_until


async def hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    assert scope["type"] == "http"
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"hello"})


@pytest.fixture
async def server() -> AsyncIterator[tuple[QuietServer, str, asyncio.Task[None]]]:
    # uvicorn raises the signal that ended it again once it has restored the handler it found:
    # here that handler, not the default one (which would end the test run)
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    quiet = QuietServer(uvicorn.Config(hello, lifespan="off", log_level="warning", server_header=False))
    serving = asyncio.create_task(quiet.serve(sockets=[listener]))
    try:
        # its main loop has begun: it makes the event it waits on and waits on it in one step
        await async_wait_until(lambda: quiet._wake is not None or serving.done(), what="the main loop")
        yield quiet, url, serving
    finally:
        quiet.handle_exit(signal.SIGTERM, None)
        await asyncio.wait_for(asyncio.shield(serving), 30)
        listener.close()
        signal.signal(signal.SIGTERM, previous)


class WaitWatchingSelector(selectors.DefaultSelector):
    """Tells when its event loop waits with no deadline: asyncio passes ``timeout=None`` to
    ``select`` only when no callback is ready and no timer is pending."""

    def __init__(self) -> None:
        super().__init__()
        self.unbounded = threading.Event()

    def select(self, timeout: float | None = None) -> Any:
        if timeout is None:
            self.unbounded.set()
        return super().select(timeout)


def test_an_idle_server_keeps_no_timer() -> None:
    """uvicorn's own main loop wakes every 0.1 s (this one did once a second): on a host with
    200 idle apps that tick was most of the host's CPU.  The server runs on a loop of its own
    whose selector shows whether anything was left to wake it."""
    selector = WaitWatchingSelector()
    loop = asyncio.SelectorEventLoop(selector)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    quiet = QuietServer(uvicorn.Config(hello, lifespan="off", log_level="warning", server_header=False))
    serving = threading.Thread(target=loop.run_until_complete, args=(quiet.serve(sockets=[listener]),))
    serving.start()
    try:
        assert selector.unbounded.wait(10), "the idle server's loop always had a timer pending"
        with httpx.Client(trust_env=False) as client:  # it still serves
            assert client.get(url + "/").text == "hello"
        wait_until(lambda: not quiet.server_state.connections, what="the server to see the close")
        selector.unbounded.clear()
        loop.call_soon_threadsafe(lambda: None)  # one more turn of the loop, then it waits again
        assert selector.unbounded.wait(10), "a timer was left pending after the request"
    finally:
        quiet.handle_exit(signal.SIGTERM, None)
        serving.join(30)
        loop.close()
        listener.close()
    assert not serving.is_alive()


async def test_the_date_header_follows_the_clock(server: tuple[QuietServer, str, asyncio.Task[None]]) -> None:
    _, url, _ = server
    async with httpx.AsyncClient(trust_env=False) as client:
        for _ in range(2):
            before = int(time.time())
            reply = await client.get(url + "/")
            after = time.time()
            sent = parsedate_to_datetime(reply.headers["date"]).timestamp()
            assert before <= sent <= after
            # the next request in a later second must carry that second
            await async_wait_until(lambda start=before: int(time.time()) > start, what="the next second")


async def test_a_shutdown_signal_ends_the_server_at_once(server: tuple[QuietServer, str, asyncio.Task[None]]) -> None:
    quiet, url, serving = server
    quiet.handle_exit(signal.SIGTERM, None)  # what its signal handler calls
    await asyncio.wait_for(asyncio.shield(serving), 10)
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient(trust_env=False) as client:
            await client.get(url + "/")
