"""Dependency installs reach only the configured registry or index (issue 17): npm with a granted
install script and uv with a requirement's build step, each in a network namespace of its own
whose one way out is the host's proxy.  Real host, real npm and uv, a real npm-protocol registry
and a PEP 503 index on loopback, and a second loopback server that is neither: the installs
work, every way the install code tries to that server fails."""

from __future__ import annotations

import contextlib
import http.server
import json
import logging
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bolt_host.services.egress import Egress
from bolt_host.services.sandbox import BWRAP, detect_mode, network_namespace
from bolt_host.testing import running_host
from tests.helpers import async_wait_until, make_wheel, requires_tool, write_package
from tests.registry_server import RegistryServer

pytestmark = pytest.mark.timeout(240)
NAMESPACE, WHY_NOT = network_namespace(detect_mode() == BWRAP)
needs_namespace = requires_tool(
    NAMESPACE is not None, f"this machine gives the host no network namespace for installs: {WHY_NOT}"
)

# The dependency's install script: connect straight to a port, and through the proxy npm was given.
PROBE = """
const net = require('net'), http = require('http');
const direct = (port) => new Promise((done) => {
  const s = net.connect(port, '127.0.0.1');
  s.on('connect', () => { s.destroy(); done('CONNECTED'); });
  s.on('error', (e) => done(e.code));
});
const proxied = (port) => new Promise((done) => {
  const proxy = process.env.HTTP_PROXY;
  if (!proxy) return done('no-proxy');
  const { hostname, port: proxyPort } = new URL(proxy);
  const req = http.get({ host: hostname, port: proxyPort, path: `http://127.0.0.1:${port}/` }, (res) => {
    res.resume(); done(String(res.statusCode));
  });
  req.on('error', (e) => done(e.code));
});
(async () => {
  const line = [`direct-forbidden=${await direct(FORBIDDEN)}`, `direct-registry=${await direct(REGISTRY)}`,
                `proxy-forbidden=${await proxied(FORBIDDEN)}`];
  console.log('PROBE ' + line.join(' '));
  require('fs').writeFileSync('probed.txt', line.join(' '));
})();
"""


class CountingServer:
    """A loopback TCP server that only counts who connected to it."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                peer, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            self.connected.set()
            peer.close()

    def __enter__(self) -> CountingServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.listener.close()


@pytest.fixture
def forbidden() -> Iterator[CountingServer]:
    with CountingServer() as server:
        yield server


@needs_namespace
async def test_a_granted_install_script_reaches_nothing_but_the_registry(
    tmp_path: Path, forbidden: CountingServer
) -> None:
    with RegistryServer() as registry:
        registry_port = int(registry.url.rsplit(":", 1)[1].split("/")[0])
        script = PROBE.replace("FORBIDDEN", str(forbidden.port)).replace("REGISTRY", str(registry_port))
        dependency = {"name": "probes-network", "version": "1.0.0", "scripts": {"install": "node probe.js"}}
        registry.publish_dir(write_package(tmp_path / "dep", dependency, {"probe.js": script, "index.js": ""}))
        app = {"name": "net-probe", "version": "1.0.0", "dependencies": {"probes-network": "1.0.0"},
               "bolt": {"main": "app.js", "server": False, "restart": "never", "installScripts": True}}
        registry.publish_dir(write_package(tmp_path / "app", app, {"app.js": "console.log('ok');\n"}))
        async with running_host(tmp_path / "data", registry=registry.url) as bolt:
            task = await bolt.admin.post("/api/apps/install-task", json={"name": "net-probe", "installScripts": True})
            assert task.status_code == 201, task.text
            record = await bolt.host.tasks.wait(task.json()["body"]["id"], timeout=200)
            task_log, _, _ = bolt.host.tasks.read_log(record["id"])
            assert record["status"] == "succeeded", task_log  # the registry itself was reachable
            shown = (await bolt.admin.get("/api/apps/net-probe")).json()["body"]
            health = (await bolt.admin.get("/-/health")).json()
            first_probe = (Path(shown["folder"]) / "node_modules" / "probes-network" / "probed.txt").read_text()

            # An app an admin opted out of isolation still installs with the registry only.
            opted_out = await bolt.admin.put("/api/apps/net-probe", json={"isolation": False})
            assert opted_out.status_code == 200, opted_out.text
            registry.publish_dir(write_package(tmp_path / "app2", {**app, "version": "1.0.1"}, {"app.js": ""}))
            upgrade = {"name": "net-probe", "installScripts": True, "upgrade": True}
            task = await bolt.admin.post("/api/apps/install-task", json=upgrade)
            record = await bolt.host.tasks.wait(task.json()["body"]["id"], timeout=200)
            upgrade_log, _, _ = bolt.host.tasks.read_log(record["id"])
            assert record["status"] == "succeeded", upgrade_log
            upgraded = (await bolt.admin.get("/api/apps/net-probe")).json()["body"]
            second_probe = (Path(upgraded["folder"]) / "node_modules" / "probes-network" / "probed.txt").read_text()

        assert shown["installScriptsRun"] is True and upgraded["confinement"]["mode"] == "off"
        for probed, log in ((first_probe, task_log), (second_probe, upgrade_log)):
            assert "direct-forbidden=CONNECTED" not in probed and "direct-registry=CONNECTED" not in probed, probed
            assert "proxy-forbidden=403" in probed, probed
            assert f"network: refused a connection to 127.0.0.1:{forbidden.port}" in log, log
            assert "network: only the registry/index" in log
        assert forbidden.connections == 0
        assert shown["confinement"]["installNetwork"] == "registry/index only (network namespace)"
        assert "network namespace" in str(health)
    with socket.create_connection(("127.0.0.1", forbidden.port), timeout=5):
        pass  # the server was there all along: only the install could not reach it
    assert forbidden.connected.wait(10) and forbidden.connections == 1


def test_the_allowed_destinations_are_the_registry_and_the_configured_indexes() -> None:
    assert Egress.for_npm("http://127.0.0.1:4873/npm/").allowed == {("127.0.0.1", 4873)}
    assert Egress.for_npm(None).allowed == {("registry.npmjs.org", 443)}
    pypi = {("pypi.org", 443), ("files.pythonhosted.org", 443)}
    assert Egress.for_uv({}).allowed == pypi
    mirror = {"UV_DEFAULT_INDEX": "https://mirror.example/simple", "UV_INDEX": "extra=http://Extra.example:8080/s",
              "UV_FIND_LINKS": "/opt/wheels,https://wheels.example/"}
    assert Egress.for_uv(mirror).allowed == {("mirror.example", 443), ("extra.example", 8080),
                                             ("wheels.example", 443)}
    assert Egress.for_uv({"UV_NO_INDEX": "1", "UV_FIND_LINKS": "file:///opt/wheels"}).allowed == set()


# A Python requirement whose build step (run by uv as the app) tries the same two ways out.
BACKEND = '''
import os, socket, urllib.request, zipfile

def _attempts():
    found = []
    try:
        socket.create_connection(("127.0.0.1", FORBIDDEN), timeout=5).close()
        found.append("direct=CONNECTED")
    except OSError as exc:
        found.append("direct=" + type(exc).__name__)
    proxy = os.environ.get("HTTP_PROXY")
    try:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy} if proxy else {}))
        found.append("proxy=" + str(opener.open("http://127.0.0.1:FORBIDDEN/", timeout=5).status))
    except urllib.error.HTTPError as exc:
        found.append("proxy=" + str(exc.code))
    except OSError as exc:
        found.append("proxy=" + type(exc).__name__)
    return " ".join(found)

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    name = "netprobe-1.0-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as wheel:
        wheel.writestr("netprobe.py", "RESULT = %r\\n" % _attempts())
        wheel.writestr("netprobe-1.0.dist-info/METADATA", "Metadata-Version: 2.1\\nName: netprobe\\nVersion: 1.0\\n")
        wheel.writestr("netprobe-1.0.dist-info/WHEEL",
                       "Wheel-Version: 1.0\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n")
        wheel.writestr("netprobe-1.0.dist-info/RECORD", "")
    return name
'''


@contextlib.contextmanager
def simple_index(root: Path) -> Iterator[tuple[str, list[str]]]:
    """A PEP 503 index on loopback serving ``tinydep``: (its URL, the paths asked for)."""
    wheel = make_wheel(root / "files", "tinydep", "1.0", "VALUE = 'from-the-index'\n")
    page = root / "simple" / "tinydep"
    page.mkdir(parents=True)
    (page / "index.html").write_text(f'<a href="../../files/{wheel.name}">{wheel.name}</a>\n')
    asked: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

        def do_GET(self) -> None:
            asked.append(self.path)
            super().do_GET()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/simple", asked
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@needs_namespace
async def test_uv_reaches_its_index_and_a_build_step_reaches_nothing_else(
    tmp_path: Path, forbidden: CountingServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    repo = tmp_path / "repo"
    app = repo / "py-net"
    probe = app / "netprobe"
    probe.mkdir(parents=True)
    (probe / "backend.py").write_text(BACKEND.replace("FORBIDDEN", str(forbidden.port)))
    (probe / "pyproject.toml").write_text('[build-system]\nrequires = []\nbuild-backend = "backend"\n'
                                          'backend-path = ["."]\n[project]\nname = "netprobe"\nversion = "1.0"\n')
    (app / "requirements.txt").write_text("./netprobe\ntinydep==1.0\n")
    (app / "app.py").write_text("import netprobe, tinydep\nprint('PY-NET', netprobe.RESULT, tinydep.VALUE)\n")
    bolt = {"main": "app.py", "server": False, "restart": "never"}
    (app / "package.json").write_text(json.dumps({"name": "py-net", "version": "1.0.0", "bolt": bolt}))
    with simple_index(tmp_path / "index") as (index_url, asked):
        monkeypatch.setenv("UV_DEFAULT_INDEX", index_url)
        async with running_host(tmp_path / "data", local_repo=repo) as running:
            caplog.set_level(logging.DEBUG, logger="bolt_host.dependencies")  # a plain install logs there
            installed = await running.admin.post("/api/apps/local", json={"path": "py-net"})
            assert installed.status_code == 201, installed.text + caplog.text
            started = await running.admin.post("/api/apps/start", json={"name": "py-net"})
            assert started.status_code == 200, started.text
            log_file = running.host.settings.data_dir / "logs" / "apps" / "py-net.log"
            await async_wait_until(lambda: "PY-NET" in log_file.read_text(errors="replace"), timeout=60, what="PY-NET")
            line = next(x for x in log_file.read_text(errors="replace").splitlines() if x.startswith("PY-NET"))

    assert any(path.endswith(".whl") for path in asked), asked  # tinydep came from the loopback index
    assert "from-the-index" in line
    assert "direct=CONNECTED" not in line and "proxy=403" in line, line
    assert f"network: refused a connection to 127.0.0.1:{forbidden.port}" in caplog.text, caplog.text
    assert forbidden.connections == 0
