"""What the stops of one call share: one look that their ports are free, one write of their states.

A call that stops many apps (``POST /api/apps/stop`` with ``names``) runs each app's stop as a
single stop does, under that app's lock, except for what it does once for all of them.  As
each stop signals its tree it records the app as meant to be stopped (its pid still in the
record), and one group commit writes those records while the trees end (not one write per app
or per batch of apps that happened to end together).  After every tree is gone: the check
that nothing listens on their ports any more (one round of test binds, not a wait per app)
before the ports go back to the pool, and the wait for that write.  The call answers then;
the records without a pid follow without being waited for, and so do the log notes of the apps
it claimed (:meth:`StopBatch.follow`, :mod:`stop_finish`).  A host killed after the answer
finds each app stopped and a pid that is gone (or another process's), which boot forgets; one
killed in the middle of the stop finds the app stopped and its process maybe still alive,
which boot adopts and ends (:mod:`recovery`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from bolt_host.services.app_runtime import SECTION, AppRuntime
from bolt_host.services.background import Background
from bolt_host.services.ports import PORT_FREE_TIMEOUT, PortPool, wait_ports_free
from bolt_host.statefile import StateFile

log = logging.getLogger("bolt_host.supervisor")

APPS_NOTED_PER_TURN = 16  # stops whose notes are written between two turns of the loop


class StopBatch:
    def __init__(self, state: StateFile, ports: PortPool, background: Background) -> None:
        self._state = state
        self._ports = ports
        self._background = background
        self._following: deque[tuple[AppRuntime, Callable[[], None]]] = deque()
        self._answered = False
        self._noting = False
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

    def follow(self, runtime: AppRuntime, noted: Callable[[], None]) -> None:
        """``runtime``'s stop is answered; after the call's answer, ``noted()`` (its log notes and
        record), then give ``runtime``'s lock back (held by its stop until then)."""
        self._following.append((runtime, noted))
        if self._answered and not self._noting:  # the call was answered (or cancelled) before this stop
            self._note_soon()

    async def run(self, stops: Iterable[Awaitable[dict[str, Any]]]) -> list[dict[str, Any] | BaseException]:
        """Run ``stops`` at once; each one's context or error once all are done, their ports free
        and their intents on disk.  If the write fails, no stop is answered as done."""
        try:
            return await self._answers(stops)
        finally:  # the notes follow the answer (from a task: the answer goes out first)
            self._answered = True
            if self._following:
                self._note_soon()

    def _note_soon(self) -> None:
        self._noting = True
        self._background.run(self._note())

    async def _note(self) -> None:
        """Each followed stop's ``noted()`` in the order they were answered, a few per turn of the loop,
        each app's lock given back after its own; their records written with the batch's next write."""
        following = self._following
        try:
            while following:
                for _ in range(min(APPS_NOTED_PER_TURN, len(following))):
                    runtime, noted = following.popleft()
                    try:
                        noted()
                    except Exception:  # its stop is done: a failed note must not keep its lock
                        log.exception("%s: the notes of its stop failed", runtime.name)
                    finally:
                        runtime.lock.release()
                self._state.commit_soon()
                await asyncio.sleep(0)  # requests (a GET, a start waiting for one of these locks) go on
        finally:
            while following:  # cancelled (host shut down): the locks go back all the same
                following.popleft()[0].lock.release()
            self._noting = False

    async def _answers(self, stops: Iterable[Awaitable[dict[str, Any]]]) -> list[dict[str, Any] | BaseException]:
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
