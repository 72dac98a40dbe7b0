"""What the stops of one call share: one look that their ports are free, one write of their states.

A call that stops many apps (``POST /api/apps/stop`` with ``names``) runs each app's stop as a
single stop does, under that app's lock, except for what it does once for all of them.  As
each stop signals its tree it records the app as meant to be stopped (its pid still in the
record), and one group commit writes those records while the trees end (not one write per app
or per batch of apps that happened to end together).  After every tree is gone: the check
that nothing listens on their ports any more (one round of test binds, not a wait per app)
before the ports go back to the pool, and the wait for that write.  The call answers then;
the records without a pid follow without being waited for.  A host killed after the answer
finds each app stopped and a pid that is gone (or another process's), which boot forgets; one
killed in the middle of the stop finds the app stopped and its process maybe still alive,
which boot adopts and ends (:mod:`recovery`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterable
from typing import Any

from bolt_host.services.app_runtime import SECTION, AppRuntime
from bolt_host.services.ports import PORT_FREE_TIMEOUT, PortPool, wait_ports_free
from bolt_host.statefile import StateFile

log = logging.getLogger("bolt_host.supervisor")


class StopBatch:
    def __init__(self, state: StateFile, ports: PortPool) -> None:
        self._state = state
        self._ports = ports
        self._freed: dict[int, str] = {}  # port -> the app that listened on it
        self._intended = 0  # the state's version once every stop so far recorded its intent
        self._writing = False

    def intend(self, runtime: AppRuntime) -> None:
        """``runtime``'s tree got its SIGTERM: record it as meant to be stopped, written with the
        intents of the other stops of this call while the trees end."""
        self._state.put(SECTION, runtime.key, runtime.record())
        self._intended = self._state.version
        if not self._writing:  # after the other stops of this turn of the loop have recorded theirs
            self._writing = True
            asyncio.get_running_loop().call_soon(self._state.commit_soon)

    def free_later(self, port: int, name: str) -> None:
        """``name``'s tree is gone: check ``port`` and give it back with the others of the call."""
        self._freed[port] = name

    async def run(self, stops: Iterable[Awaitable[dict[str, Any]]]) -> list[dict[str, Any] | BaseException]:
        """Run ``stops`` at once; each one's context or error once all are done, their ports free
        and their intents on disk.  If the write fails, no stop is answered as done."""
        try:
            results = await asyncio.gather(*stops, return_exceptions=True)
            busy = await wait_ports_free(self._freed, PORT_FREE_TIMEOUT)
            for port in sorted(busy):
                log.warning("%s: port %s still busy after its tree is gone", self._freed[port], port)
        finally:  # the trees of these ports are gone, even when the call itself is cancelled
            for port in self._freed:
                self._ports.release(port)
        try:
            await self._state.commit(self._intended)
        except OSError as exc:
            return [exc if isinstance(result, dict) else result for result in results]
        self._state.commit_soon()  # the records without a pid: not waited for (see above)
        return results
