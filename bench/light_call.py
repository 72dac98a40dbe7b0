"""The host's own CPU for one ``GET /api/apps/@live?fields=...`` call, in-process, no socket.

One process: the host as ``bolt-host serve`` builds it (``create_app``, the four store
plugins unless ``--plugins-off``, uvicorn's config with the host's guarded HTTP protocol and
its ``DatedServerState``), N copies of ``bench/tinyapp.py`` installed and started (real
processes), and one kept-alive connection whose transport is in memory: each call hands the
request's bytes to the protocol's ``data_received`` and waits for the one write of its answer.
What is left out is the kernel's part (``epoll``, ``recv``, ``send`` on loopback); what is in
is everything the host's Python does for a call: h11, uvicorn's cycle, the middleware, auth,
routing, the handler, the encoding and the event loop's turns.

    python bench/light_call.py --n 200 --calls 20000            # CPU per call (process_time)
    valgrind --tool=callgrind --instr-atstart=no python bench/light_call.py --n 0 --callgrind
        # instructions per call: with --callgrind the measured calls run between
        # callgrind_control -i on/off (valgrind has no pidfd_open, so no app can start under it)

Every call's answer is checked (status 200, the body the same bytes each time).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(BENCH_DIR.parent))
sys.path.insert(0, str(BENCH_DIR.parent / "plugins"))

import uvicorn  # noqa: E402
from supbench_model import app_names, write_local_repo  # noqa: E402

from bolt_host.app import create_app, server_options  # noqa: E402
from bolt_host.config import settings_from_env  # noqa: E402
from bolt_host.quiet_server import DatedServerState  # noqa: E402

LIGHT = "/api/apps/@live?fields=name,status,pid"


class MemoryTransport:
    """What the protocol writes, kept; ``answered`` is set at each write (one per response)."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.answered = asyncio.Event()
        self._closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8080), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def write(self, data: bytes) -> None:
        self.written.append(bytes(data))
        self.answered.set()

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        self._closing = True

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def get_write_buffer_size(self) -> int:
        return 0


async def run(opts: argparse.Namespace, work: Path) -> None:
    password = secrets.token_urlsafe(16)
    repo = write_local_repo(work, opts.n, "light-call")
    environ = {key: value for key, value in os.environ.items() if not key.startswith("BOLT_")}
    if opts.plugins_off:
        environ["BOLT_PLUGINS"] = ""
    settings = settings_from_env(
        environ,
        data_dir=work / "data",
        local_repo=repo,
        admin_password=password,
        port=8080,
        port_range=(opts.port_base, opts.port_base + max(2 * opts.n, 100)),
        log_level="warning",
    )
    app = create_app(settings)
    config = uvicorn.Config(app, host="127.0.0.1", port=8080, log_level="warning", access_log=False,
                            **server_options(settings))
    config.load()
    host = app.state.host
    async with app.router.lifespan_context(app):
        token = await _login_and_start(app, password, opts.n)
        protocol = config.http_protocol_class(config=config, server_state=DatedServerState(config), app_state={})
        transport = MemoryTransport()
        protocol.connection_made(transport)  # type: ignore[arg-type]
        request = (
            f"GET {opts.path} HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: light-call\r\n"
            f"Accept-Encoding: identity\r\nAccept: */*\r\nx-bolt-user-token: {token}\r\n\r\n"
        ).encode()

        async def call() -> bytes:
            transport.answered.clear()
            protocol.data_received(request)
            await transport.answered.wait()
            return transport.written.pop()

        first = await call()
        if not first.startswith(b"HTTP/1.1 200 "):
            raise RuntimeError(f"the call failed: {first[:300]!r}")
        head_end = first.index(b"\r\n\r\n")
        body = first[head_end:]
        for _ in range(200):  # warm: the kept listing, the token's user
            await call()
        if opts.callgrind:
            subprocess.run(["callgrind_control", "-i", "on", str(os.getpid())], check=True, capture_output=True)
        profile = cProfile.Profile() if opts.profile else None
        if profile is not None:
            profile.enable()
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(opts.calls):
            answer = await call()
            if answer[answer.index(b"\r\n\r\n"):] != body:  # same bytes each time (no uptime selected)
                raise RuntimeError("the answer changed between calls")
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        if profile is not None:
            profile.disable()
            profile.dump_stats(opts.profile)
        if opts.callgrind:
            subprocess.run(["callgrind_control", "-i", "off", str(os.getpid())], check=True, capture_output=True)
        listed = sum(1 for _ in host.supervisor.contexts())
        print(
            f"N={opts.n} listed={listed} {opts.path}: {cpu / opts.calls * 1e6:.1f} us CPU per call "
            f"({wall / opts.calls * 1e6:.1f} us wall), answer {len(first)} B, load {os.getloadavg()[0]:.1f}"
        )
        if opts.n:
            await host.supervisor.stop_apps(app_names(opts.n), by="bench")


async def _login_and_start(app: Any, password: str, n: int) -> str:
    import httpx

    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8080") as client:
        reply = await client.post("/api/users/login", json={"name": "admin", "password": password})
        reply.raise_for_status()
        token = str(reply.json()["body"]["token"])
        client.headers["x-bolt-user-token"] = token
        for name in app_names(n):
            (await client.post("/api/apps/local", json={"path": name})).raise_for_status()
        if n:
            answer = await client.post("/api/apps/start", json={"names": app_names(n)})
            answer.raise_for_status()
            if answer.json()["body"]["failed"]:
                raise RuntimeError(f"apps failed to start: {answer.json()['body']['failed']}")
        return token


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200, help="apps installed and started (0 under valgrind)")
    parser.add_argument("--calls", type=int, default=20000, help="measured calls")
    parser.add_argument("--path", default=LIGHT, help="the GET path (default: the light listing)")
    parser.add_argument("--plugins-off", action="store_true", help="the core host only")
    parser.add_argument("--port-base", type=int, default=24000, help="app ports from here")
    parser.add_argument("--profile", metavar="FILE", help="cProfile the measured calls into FILE (pstats)")
    parser.add_argument("--callgrind", action="store_true", help="switch callgrind's instrumentation around the calls")
    opts = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bolt-light-call-"))
    os.chmod(work, 0o711)  # as root the host runs each app as its own uid: they must reach their code
    try:
        asyncio.run(run(opts, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
