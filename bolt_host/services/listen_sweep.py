"""When do the ports of starting apps begin to listen?  One kernel question for all of them.

Each readiness wait used to connect to its own port every round: at 200 simultaneous starts
that was thousands of sockets made, connected and closed, and 200 coroutines woken every
round, while the apps being waited for needed the CPU.  A :class:`ListenSweep` (one per event
loop) asks the kernel once per round which of the ports waited for have a listening socket
(:func:`sockdiag.listening_in`: one netlink dump over one socket kept for the sweep's rounds,
filtered by the kernel to the runs of waited ports, :func:`port_ranges`) and wakes only the
waits whose port now listens, handing them the sockets' inodes for the owner check.

Rounds come 5 ms after the newest wait began, then further apart by a quarter of its age,
at most :data:`MAX_SWEEP_INTERVAL` apart: a round costs the same for one wait as for two
hundred, so the last of a fleet is seen within that bound of listening.  While only a few
ports are waited for (a crash restart, an admin's start) the CPU is not short: rounds come
2 ms after, then a tenth of the age apart, so an app that listens 40 ms after its spawn is
seen within about 5 ms, not 15 (about 14 rounds of ~50 us of CPU instead of 7).  Where the
kernel does not answer (no ``sock_diag``), every wait is told so and probes its port itself.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Iterable

from bolt_host.services import sockdiag

FIRST_SWEEP = 0.005
SWEEP_GROWTH = 0.25  # of the newest wait's age, added to the next round's delay
MAX_SWEEP_INTERVAL = 0.02
FEW_PORTS = 4  # waited for at once, at most: the tighter rounds below
FEW_FIRST_SWEEP = 0.002
FEW_SWEEP_GROWTH = 0.1
MAX_RANGES = 32  # port ranges in one kernel question (its filter program grows with them)

_sweeps: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, ListenSweep] = weakref.WeakKeyDictionary()


def port_ranges(ports: Iterable[int], limit: int = MAX_RANGES) -> list[tuple[int, int]]:
    """``ports`` as ordered runs of consecutive ports, at most ``limit`` of them (the runs across
    the smallest gaps are joined): the kernel hands back only the sockets of these ports, not
    those of the apps between them that listen already (at 200 starts, most of each round)."""
    runs: list[list[int]] = []
    for port in sorted(ports):
        if runs and port == runs[-1][1] + 1:
            runs[-1][1] = port
        else:
            runs.append([port, port])
    if len(runs) > limit:
        widest = sorted(range(1, len(runs)), key=lambda i: runs[i][0] - runs[i - 1][1], reverse=True)[: limit - 1]
        starts = sorted([0, *widest])
        runs = [[runs[a][0], runs[b - 1][1]] for a, b in zip(starts, [*starts[1:], len(runs)], strict=True)]
    return [(low, high) for low, high in runs]


def sweep_interval(newest_age: float, ports: int = FEW_PORTS + 1) -> float:
    """Seconds until the next round, ``newest_age`` seconds after the newest wait began,
    with ``ports`` waited for."""
    if ports <= FEW_PORTS:
        return min(MAX_SWEEP_INTERVAL, FEW_FIRST_SWEEP + FEW_SWEEP_GROWTH * newest_age)
    return min(MAX_SWEEP_INTERVAL, FIRST_SWEEP + SWEEP_GROWTH * newest_age)


class ListenSweep:
    """Used on the one event loop it belongs to (it keeps no reference to it: the loop is
    the key of a weak mapping)."""

    def __init__(self) -> None:
        self._waiters: dict[int, set[asyncio.Future[set[str]]]] = {}
        self._newest = 0.0
        self._ranges: list[tuple[int, int]] | None = None  # port_ranges of the waited ports, None: to be made
        self._task: asyncio.Task[None] | None = None
        self.rounds = 0  # kernel questions asked so far

    @classmethod
    def of_running_loop(cls) -> ListenSweep:
        loop = asyncio.get_running_loop()
        sweep = _sweeps.get(loop)
        if sweep is None:
            sweep = _sweeps[loop] = cls()
        return sweep

    def watch(self, port: int) -> asyncio.Future[set[str]]:
        """A future resolved once something listens on ``port``, with the inodes of its listening
        sockets (or failed with the ``OSError`` of a kernel that cannot tell).  Pass it to
        :meth:`forget` when done."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[set[str]] = loop.create_future()
        self._waiters.setdefault(port, set()).add(future)
        self._ranges = None
        self._newest = loop.time()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run(), name="readiness sweep")
        return future

    def forget(self, port: int, future: asyncio.Future[set[str]]) -> None:
        """The wait behind ``future`` is over (ready, failed or cancelled)."""
        waiting = self._waiters.get(port)
        if waiting is not None:
            waiting.discard(future)
            if not waiting:
                del self._waiters[port]
                self._ranges = None
        if not future.done():
            future.cancel()
        if not self._waiters and self._task is not None:
            self._task.cancel()  # nothing to wait for: no round left pending on a closing loop
            self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        channel = None  # one netlink socket for the rounds of this run, not one per round
        try:
            while self._waiters:
                await asyncio.sleep(sweep_interval(loop.time() - self._newest, len(self._waiters)))
                if not self._waiters:
                    return
                try:
                    channel = channel or sockdiag.open_channel()
                    if self._ranges is None:
                        self._ranges = port_ranges(self._waiters)
                    found = sockdiag.listening_in(channel, self._ranges)
                except OSError as exc:
                    self._fail(exc)
                    return
                self.rounds += 1
                inodes: dict[int, set[str]] = {}
                for port, inode in found:
                    if port in self._waiters:
                        inodes.setdefault(port, set()).add(str(inode))
                for port, listening in inodes.items():  # the owner check needs no dump of its own
                    self._ranges = None
                    for future in self._waiters.pop(port):
                        if not future.done():
                            future.set_result(listening)
        finally:
            if channel is not None:
                channel.close()
            if self._task is asyncio.current_task():
                self._task = None  # a finished task would keep the loop (the mapping's key) alive

    def _fail(self, exc: OSError) -> None:
        waiters, self._waiters, self._ranges = self._waiters, {}, None
        for futures in waiters.values():
            for future in futures:
                if not future.done():
                    future.set_exception(exc)
                    future.exception()  # marks it read: a wait that ended meanwhile logs nothing
