"""The manager's MQTT link publishing a burst of QoS 1 messages at once, all awaiting their
acknowledgement together (as 500 ``_download`` calls do): this process's CPU per burst with the
link's client (``transport._Client``) against aiomqtt's own, interleaved, on one real Mosquitto.

    python bench/mqtt_publish_burst.py --burst 500 --rounds 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]

import aiomqtt  # noqa: E402
from bolt_device import transport  # noqa: E402
from bolt_device.config import BrokerAddress  # noqa: E402

from tests.fixtures.device.mosquitto import Mosquitto  # noqa: E402

TOPIC = "$EDC/kapua-sys/dev-1/DEPLOY-V2/EXEC/download"


async def _ignore(topic: str, payload: bytes, retained: bool) -> None:
    return None


async def burst_cpu(port: int, client_class: type[aiomqtt.Client], size: int) -> tuple[float, float]:
    """(CPU s, wall s) of ``size`` concurrent publishes through a connected link using ``client_class``."""
    address = BrokerAddress("127.0.0.1", port, username="bolt-manager", password="manager-secret")
    ours, transport._Client = transport._Client, client_class  # the class the link connects with
    link = transport.MqttLink(address, "bolt-manager", [], _ignore)
    link.start()
    try:
        await asyncio.wait_for(link.connected.wait(), timeout=20)
        cpu, wall = time.process_time(), time.monotonic()
        await asyncio.gather(*(link.publish(TOPIC, b"x" * 400) for _ in range(size)))
        return time.process_time() - cpu, time.monotonic() - wall
    finally:
        await link.stop()
        transport._Client = ours


async def main(args: argparse.Namespace) -> None:
    logging.getLogger("mqtt").setLevel(logging.WARNING)  # as in the manager (aiomqtt's warnings are written)
    logging.basicConfig(stream=open("/dev/null", "w"))  # noqa: SIM115 (written, not shown)
    results: dict[str, list[float]] = {"aiomqtt": [], "link": []}
    with tempfile.TemporaryDirectory() as folder, \
            Mosquitto(Path(folder), {"bolt-manager": "manager-secret"}, managers=("bolt-manager",)) as broker:
        for _ in range(args.rounds):
            for name, client_class in (("aiomqtt", aiomqtt.Client), ("link", transport._Client)):
                cpu, _ = await burst_cpu(broker.port, client_class, args.burst)
                results[name].append(cpu)
    medians = {name: statistics.median(values) for name, values in results.items()}
    print(json.dumps({
        "burst": args.burst, "rounds": args.rounds,
        "cpuMsPerBurst": {name: round(value * 1000, 1) for name, value in medians.items()},
        "ratio": round(medians["link"] / medians["aiomqtt"], 3),
    }, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--burst", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=10)
    asyncio.run(main(parser.parse_args()))
