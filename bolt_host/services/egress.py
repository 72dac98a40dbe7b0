"""The only way out of a dependency install's network namespace: a proxy to the registry/index.

npm and uv (and a granted install script, and a Python requirement's build step) run in a
network namespace of their own (:mod:`sandbox` adds ``unshare --net`` or bubblewrap's
``--unshare-net``): no interface but loopback, nothing of the host's loopback.  Inside it,
:mod:`bolt_host.launchers.netjail` listens on loopback and hands the listening socket to the
host through a socket pair (``SCM_RIGHTS``); the host answers connections to it here, as an
HTTP proxy (``CONNECT host:port`` for https, absolute-form requests for plain http) that
connects only to the hosts and ports of the configured registry or index.  Anything else gets
``403`` and a line in the install's log.  The tool's proxy variables point at that socket.

The proxy runs in the host's namespace and event loop; it is open only while the tool runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlsplit

from bolt_host.launchers.netjail import FD_VARIABLE

DEFAULT_NPM_REGISTRY = "https://registry.npmjs.org/"
PYPI = ("https://pypi.org/simple/", "https://files.pythonhosted.org/")
DEFAULT_PORTS = {"http": 80, "https": 443}
HEAD_LIMIT = 64 * 1024
HEAD_TIMEOUT = 30.0
CHUNK = 64 * 1024
HOP_BY_HOP = (b"proxy-connection:", b"proxy-authorization:", b"connection:", b"keep-alive:")


class LogSink(Protocol):
    def write(self, text: str, /) -> object: ...


def destination(url: str) -> tuple[str, int] | None:
    """``(host, port)`` of an http(s) URL, or None for anything else (a ``file:`` index, a path)."""
    with contextlib.suppress(ValueError):
        parts = urlsplit(url.strip())
        if parts.scheme in DEFAULT_PORTS and parts.hostname:
            return parts.hostname.lower(), parts.port or DEFAULT_PORTS[parts.scheme]
    return None


@dataclass(frozen=True)
class Egress:
    """Where one install tool may connect: ``(host, port)`` pairs."""

    allowed: frozenset[tuple[str, int]]

    @classmethod
    def to(cls, urls: Iterable[str]) -> Egress:
        return cls(frozenset(found for url in urls if (found := destination(url)) is not None))

    @classmethod
    def for_npm(cls, registry: str | None) -> Egress:
        return cls.to([registry or DEFAULT_NPM_REGISTRY])

    @classmethod
    def for_uv(cls, env: Mapping[str, str]) -> Egress:
        """The indexes and find-links uv is configured with (:mod:`pip_settings`); PyPI (and
        its file host) unless a default index replaces it or no index is used at all."""
        urls: list[str] = []
        for name, separator in (("UV_DEFAULT_INDEX", " "), ("UV_INDEX_URL", " "), ("UV_INDEX", " "),
                                ("UV_EXTRA_INDEX_URL", " "), ("UV_FIND_LINKS", ",")):
            for entry in env.get(name, "").split(separator):
                urls.append(entry.partition("=")[2] if "=" in entry.split("://")[0] else entry)
        no_index = env.get("UV_NO_INDEX", "").lower() in ("1", "true", "yes", "on")
        if not no_index and not env.get("UV_DEFAULT_INDEX") and not env.get("UV_INDEX_URL"):
            urls += PYPI
        return cls.to(urls)

    def describe(self) -> str:
        return ", ".join(sorted(f"{host}:{port}" for host, port in self.allowed)) or "nothing"


@dataclass
class Gate:
    """One run of one tool: the socket pair its namespace reports through, and the proxy."""

    egress: Egress
    log: LogSink
    _host_end: socket.socket = field(init=False)
    _tool_end: socket.socket | None = field(init=False)
    _server: asyncio.Server | None = None
    _opening: asyncio.Task[None] | None = None
    _links: set[asyncio.Task[None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._host_end, self._tool_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._tool_end.set_inheritable(True)

    @property
    def env(self) -> dict[str, str]:
        assert self._tool_end is not None
        return {FD_VARIABLE: str(self._tool_end.fileno())}

    @property
    def pass_fds(self) -> tuple[int, ...]:
        return (self._tool_end.fileno(),) if self._tool_end is not None else ()

    def open(self) -> None:
        """After the spawn: wait (in the background) for the namespace's listening socket."""
        if self._tool_end is not None:
            self._tool_end.close()
            self._tool_end = None
        self._opening = asyncio.ensure_future(self._accept_listener())

    async def close(self) -> None:
        """When the tool has ended: stop answering, drop every open link."""
        for task in [self._opening, *self._links]:
            if task is not None:
                task.cancel()
        await asyncio.gather(*[t for t in [self._opening, *self._links] if t is not None], return_exceptions=True)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        self._host_end.close()
        if self._tool_end is not None:
            self._tool_end.close()

    async def _accept_listener(self) -> None:
        loop = asyncio.get_running_loop()
        self._host_end.setblocking(False)
        readable: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not readable.done():
                readable.set_result(None)

        loop.add_reader(self._host_end, wake)
        try:
            await readable
        finally:
            loop.remove_reader(self._host_end)
        try:
            _, fds, _, _ = socket.recv_fds(self._host_end, 16, 1)
        except OSError:
            return
        if not fds:  # the tool ended, or its namespace could not be opened (it said why)
            return
        listener = socket.socket(fileno=fds[0])
        listener.setblocking(False)
        self._server = await asyncio.start_server(self._serve_link, sock=listener, limit=HEAD_LIMIT)

    async def _serve_link(self, client: asyncio.StreamReader, to_client: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._links.add(task)
        try:
            await self._proxy(client, to_client)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError):
            pass
        finally:
            self._links.discard(task)
            to_client.close()

    async def _proxy(self, client: asyncio.StreamReader, to_client: asyncio.StreamWriter) -> None:
        head = await asyncio.wait_for(client.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
        request_line, _, headers = head.partition(b"\r\n")
        method, target, version = request_line.decode("latin-1").split(" ", 2)
        if method.upper() == "CONNECT":
            host, _, port = target.rpartition(":")
            where: tuple[str, int] | None = (host.strip("[]").lower(), int(port))
            forward = b""
        else:
            where = destination(target) if target.lower().startswith("http://") else None
            parts = urlsplit(target)
            origin_form = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            kept = [line for line in headers.split(b"\r\n") if line and not line.lower().startswith(HOP_BY_HOP)]
            forward = f"{method} {origin_form} {version}\r\n".encode("latin-1")
            forward += b"\r\n".join([*kept, b"Connection: close"]) + b"\r\n\r\n"
        if where is None or where not in self.egress.allowed:
            shown, allowed = (f"{where[0]}:{where[1]}" if where else target[:200]), self.egress.describe()
            self.log.write(f"network: refused a connection to {shown} (installs reach only {allowed})\n")
            await _answer(to_client, "403 Forbidden", f"bolt-host: installs may connect only to {allowed}")
            return
        try:
            upstream, to_upstream = await asyncio.open_connection(*where)
        except OSError as exc:
            await _answer(to_client, "502 Bad Gateway", f"bolt-host: {where[0]}:{where[1]}: {exc}")
            return
        try:
            if forward:
                to_upstream.write(forward)
            else:
                to_client.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            pipes = [asyncio.ensure_future(_pipe(client, to_upstream)),
                     asyncio.ensure_future(_pipe(upstream, to_client))]
            try:
                await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pipe in pipes:
                    pipe.cancel()
                await asyncio.gather(*pipes, return_exceptions=True)
        finally:
            to_upstream.close()


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await source.read(CHUNK):
            sink.write(data)
            await sink.drain()


async def _answer(writer: asyncio.StreamWriter, status: str, text: str) -> None:
    body = (text + "\n").encode()
    writer.write(f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
                 "Connection: close\r\n\r\n".encode() + body)
    with contextlib.suppress(OSError):
        await writer.drain()
