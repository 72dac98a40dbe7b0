"""Readiness trusts a listening port only when the app's own process tree holds it.

Real processes and real sockets: a foreign listener (a socket of the test process itself)
on the app's port must not make the app ready; the app listening itself, or through a child
it started, must.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bolt_host.services import listeners, sockdiag
from bolt_host.services.listeners import port_holder
from bolt_host.services.processes import AppProcess, launch
from bolt_host.services.readiness import ForeignListener, NeverReady, wait_until_ready
from tests.helpers import free_port

pytestmark = pytest.mark.timeout(60)

LISTENER = "import signal, socket\ns = socket.socket()\ns.bind(('127.0.0.1', {port}))\ns.listen()\nsignal.pause()\n"
IDLE = "import signal\nsignal.pause()\n"


@contextlib.asynccontextmanager
async def app_process(argv: list[str], tmp_path: Path) -> AsyncIterator[AppProcess]:
    """A real app process in a session of its own, killed (its whole group) at the end."""
    with open(tmp_path / "app.log", "wb") as log:
        process = AppProcess.watch(launch(argv, cwd=tmp_path, env=dict(os.environ), log_fd=log.fileno()))
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pgid, signal.SIGKILL)
        await asyncio.wait_for(process.exited, timeout=30)
        process.reap()
        process.close()


@contextlib.contextmanager
def foreign_listener(port: int) -> Iterator[socket.socket]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", port))
    sock.listen()
    try:
        yield sock
    finally:
        sock.close()


async def test_a_foreign_listener_does_not_make_the_app_ready(tmp_path: Path) -> None:
    port = free_port()
    async with app_process([sys.executable, "-c", IDLE], tmp_path) as app:
        with foreign_listener(port):
            with pytest.raises(ForeignListener) as refused:
                await wait_until_ready(exited=app.exited, port=port, health=None, timeout=20, pid=app.pid)
            assert f"port {port} answers" in str(refused.value) and f"pid {os.getpid()}" in str(refused.value)
            assert not port_holder(port, app.pid).owned
            # Without the app's pid the port alone decides (the old rule, kept for callers that have none).
            await wait_until_ready(exited=app.exited, port=port, health=None, timeout=20)
        assert not app.exited.done()


@pytest.mark.parametrize("through_child", [False, True], ids=["itself", "through a child"])
async def test_the_app_listening_is_ready(tmp_path: Path, through_child: bool) -> None:
    port = free_port()
    code = LISTENER.format(port=port)
    argv = [sys.executable, "-c", code]
    if through_child:  # "; exit" keeps the shell from exec'ing python in its place
        argv = ["/bin/sh", "-c", f'"{sys.executable}" -c "$0"; exit', code]
    async with app_process(argv, tmp_path) as app:
        await wait_until_ready(exited=app.exited, port=port, health=None, timeout=20, pid=app.pid)
        assert port_holder(port, app.pid).owned
        assert not app.exited.done()


def test_the_kernel_names_only_the_listening_sockets_of_the_port() -> None:
    """sock_diag (what the check asks) and the /proc text tables (its fallback) agree: the
    listeners on the port, IPv4 and IPv6, and not a connection accepted on that same port."""
    port = free_port()
    with foreign_listener(port) as listener, foreign_listener(free_port()) as elsewhere:
        opened = [listener]
        with contextlib.suppress(OSError):  # a machine without IPv6 on loopback lists IPv4 only
            v6 = socket.socket(socket.AF_INET6)
            opened.append(v6)
            v6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            v6.bind(("::1", port))
            v6.listen()
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = listener.accept()
        try:
            wanted = {str(os.fstat(sock.fileno()).st_ino) for sock in opened if sock.getsockname()[1] == port}
            assert str(os.fstat(elsewhere.fileno()).st_ino) not in wanted
            assert sockdiag.listening_inodes(port) == wanted
            assert listeners.listening_inodes_from_text(port) == wanted
            assert str(os.fstat(accepted.fileno()).st_ino) not in sockdiag.listening_inodes(port)
        finally:
            for sock in (client, accepted, *opened[1:]):
                sock.close()


@contextlib.contextmanager
def descriptors_above_select_limit() -> Iterator[None]:
    """Hold enough descriptors that every new socket's number is above 1024 (select's FD_SETSIZE),
    as in a host running ~1000 apps (a pidfd, a log and sockets each)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 1200
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {wanted}")
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    held: list[int] = []
    try:
        base = os.open(os.devnull, os.O_RDONLY)
        held.append(base)
        while held[-1] <= 1024:
            held.append(os.dup(base))
        yield
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_a_connect_still_in_progress_is_probed_with_descriptors_above_1024() -> None:
    """A listener whose accept queue is full leaves a probe's connect in progress; the probe must
    then wait for it with poll (select refuses descriptors above 1024: every start of a host at
    1000 apps failed with 'filedescriptor out of range in select()')."""
    with descriptors_above_select_limit(), socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        queued: list[socket.socket] = []
        try:
            for _ in range(16):  # fill the accept queue until a connect stays in progress
                client = socket.socket()
                queued.append(client)
                client.setblocking(False)
                if client.connect_ex(("127.0.0.1", port)) == errno.EINPROGRESS:
                    break
            else:
                pytest.skip("the kernel completed every connect: no connect in progress to probe")
            exited: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
            with pytest.raises(NeverReady):  # not accepting yet: not ready, and no ValueError
                await wait_until_ready(exited=exited, port=port, health=None, timeout=0.2)
            for client in queued:
                client.close()
            queued.clear()
            listener.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                while True:
                    listener.accept()[0].close()
            await wait_until_ready(exited=exited, port=port, health=None, timeout=10)
        finally:
            for client in queued:
                client.close()
