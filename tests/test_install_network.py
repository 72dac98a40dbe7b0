"""Dependency installs reach only the configured registry or index (issue 17): npm with a granted
install script, in a network namespace of its own whose one way out is the host's proxy.  Real
host, real npm, a real npm-protocol registry on loopback and a second loopback server that is
not the registry: the install works, the script's every way to that server fails."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bolt_host.services.egress import Egress
from bolt_host.testing import running_host
from tests.helpers import write_package
from tests.registry_server import RegistryServer

pytestmark = pytest.mark.timeout(240)

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
            identity = {"name": "net-probe", "folder": str(tmp_path), "isolation": True}
            if not bolt.host.isolation.has_network_namespace(identity):
                pytest.skip("this machine gives the host no network namespace for installs (see /-/health)")
            task = await bolt.admin.post("/api/apps/install-task", json={"name": "net-probe", "installScripts": True})
            assert task.status_code == 201, task.text
            record = await bolt.host.tasks.wait(task.json()["body"]["id"], timeout=200)
            task_log, _, _ = bolt.host.tasks.read_log(record["id"])
            assert record["status"] == "succeeded", task_log  # the registry itself was reachable
            shown = (await bolt.admin.get("/api/apps/net-probe")).json()["body"]
            health = (await bolt.admin.get("/-/health")).json()

        assert shown["installScriptsRun"] is True
        probed = (Path(shown["folder"]) / "node_modules" / "probes-network" / "probed.txt").read_text()
        assert "direct-forbidden=CONNECTED" not in probed and "direct-registry=CONNECTED" not in probed, probed
        assert "proxy-forbidden=403" in probed, probed
        assert f"network: refused a connection to 127.0.0.1:{forbidden.port}" in task_log, task_log
        assert "network: only the registry/index" in task_log
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
