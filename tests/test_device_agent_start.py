"""What a device agent prepares as it starts, in a process of its own (the agent's first
download must not pay for it: in the 500-device bench each agent process paid it in the burst)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import free_port

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parents[1]
DOWNLOAD_MODULES = ("httpx", "httpcore", "h11", "anyio._backends._asyncio")

AGENT = """
import asyncio, json, sys
from pathlib import Path

from bolt_device import DevicePlugin, downloads
from bolt_device.config import DeviceConfig, parse_broker_url

from bolt_host.config import Settings
from bolt_host.host import Host

MODULES = {modules!r}


async def main(data_dir: str, broker: str) -> None:
    config = DeviceConfig(mode="agent", broker=parse_broker_url(broker, "dev-w", "pw-w"),
                          client_id="dev-w", account="kapua-sys")
    settings = Settings(data_dir=Path(data_dir), admin_password="agent-start-password", autostart=False,
                        disable_plugins=("device", "robot", "market", "enterprise"))
    host = Host(settings, plugins=[DevicePlugin(config)])
    before = [name for name in MODULES if name in sys.modules]
    await host.start()
    after = [name for name in MODULES if name in sys.modules]
    contexts = downloads._tls.cache_info().currsize
    await host.stop()
    print(json.dumps({{"before": before, "after": after, "tlsContexts": contexts}}))


asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def test_an_agent_loads_its_download_client_and_tls_context_as_it_starts(tmp_path: Path) -> None:
    # no broker listens there: the agent keeps trying to connect in the background, which is
    # all this needs (nothing here is downloaded)
    broker = f"mqtt://127.0.0.1:{free_port()}"
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'plugins'}"}
    done = subprocess.run(
        [sys.executable, "-c", AGENT.format(modules=DOWNLOAD_MODULES), str(tmp_path / "agent"), broker],
        env=env, capture_output=True, text=True, timeout=90, check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["before"] == []  # nothing loaded them before the agent started
    assert report["after"] == list(DOWNLOAD_MODULES)
    assert report["tlsContexts"] == 1
