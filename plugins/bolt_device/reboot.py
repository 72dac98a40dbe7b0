"""``dp.reboot``: restart the host *service* (never the machine).

The restart runs in-process: the running apps are noted, the Host is stopped
(plugins' ``shutdown`` called, so the agent ends or fails its other jobs,
flushes its notifications and says goodbye on MQTT; apps stopped, tasks ended,
storage closed) and started again (plugins' ``startup``: the agent reconnects
and announces itself), then the noted apps are started again.
The HTTP server keeps its socket; requests during the restart may fail.
The task is kept in ``host.state`` so the agent's own shutdown cannot cancel it.
"""

from __future__ import annotations

import asyncio
import logging

from bolt_host.plugin import Host

log = logging.getLogger("bolt_device.reboot")
STATE_KEY = "device-reboot"


def schedule_reboot(host: Host, delay_ms: int) -> None:
    current = host.state.get(STATE_KEY)
    if current is not None and not current.done():
        return  # one restart at a time
    host.state[STATE_KEY] = asyncio.create_task(restart_host_service(host, delay_ms / 1000.0))


async def restart_host_service(host: Host, delay: float = 0.0) -> list[str]:
    if delay > 0:
        await asyncio.sleep(delay)
    running = [c["name"] for c in host.supervisor.contexts() if c.get("status") in ("running", "starting")]
    log.warning("restarting the host service (apps to bring back: %s)", ", ".join(running) or "none")
    await host.stop()
    await host.start()
    restarted = []
    for name in running:
        app = host.apps.get(name)
        if app is None or host.supervisor.is_active(name):
            continue
        try:
            await host.supervisor.start_app(app)
            restarted.append(name)
        except Exception:
            log.exception("could not bring %s back after the restart", name)
    await host.publish("device-rebooted", {"apps": restarted}, publisher="device")
    return restarted
