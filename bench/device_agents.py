"""Run several lightweight device agents in one process (for bench/device_fanout.py).

Each agent is a full bolt-host ``Host`` (own data dir, apps, tasks, supervisor)
with the device plugin in agent mode, but without an HTTP server: the fan-out
only needs MQTT.  Usage::

    python bench/device_agents.py --broker mqtt://127.0.0.1:1883 --first 0 --count 10 \
        --data-root /tmp/fanout --password-prefix pw-

Agent ``i`` is client ``agent-<i>`` with broker password ``<prefix><i>``.  Runs
until SIGTERM/SIGINT, then stops every host (which stops the apps it started).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]

from bolt_device import DevicePlugin  # noqa: E402
from bolt_device.config import DeviceConfig, parse_broker_url  # noqa: E402

from bolt_host.config import Settings  # noqa: E402
from bolt_host.host import Host  # noqa: E402


async def main(args: argparse.Namespace) -> None:
    hosts: list[Host] = []
    for index in range(args.first, args.first + args.count):
        client_id = f"agent-{index}"
        config = DeviceConfig(
            mode="agent",
            broker=parse_broker_url(args.broker, client_id, f"{args.password_prefix}{index}"),
            client_id=client_id,
            account="kapua-sys",
            display_name=client_id,
        )
        settings = Settings(
            data_dir=Path(args.data_root) / client_id,
            admin_password="bench-admin-password",
            autostart=False,
            disable_plugins=("device", "robot", "market", "enterprise"),
            port_range=(30000 + index * 20, 30000 + index * 20 + 19),
            stats_interval_seconds=30.0,
        )
        hosts.append(Host(settings, plugins=[DevicePlugin(config)]))
    await asyncio.gather(*(host.start() for host in hosts))
    print(f"agents {args.first}..{args.first + args.count - 1} started", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if args.cprofile:  # the event loop thread's CPU by function, from SIGUSR1 to SIGUSR2
        profile = cProfile.Profile(time.thread_time)
        loop.add_signal_handler(signal.SIGUSR1, profile.enable)
        loop.add_signal_handler(signal.SIGUSR2, lambda: (profile.disable(), profile.dump_stats(args.cprofile)))
    await stop.wait()
    for host in hosts:
        with contextlib.suppress(Exception):
            await host.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", required=True)
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--count", type=int, default=10)
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--password-prefix", default="pw-")
    parser.add_argument("--cprofile", default=None, help="cProfile file (SIGUSR1 starts, SIGUSR2 stops and writes)")
    asyncio.run(main(parser.parse_args()))
