"""How the starts of one call run: all at once, or at most ``limit`` at a time.

A call that starts many apps (``POST /api/apps/start`` with ``names``, the autostart at boot)
runs every start at once by default (``BOLT_START_CONCURRENCY=0``): the fastest start and the
least host CPU.  Each start in flight holds its spawn's environment and argv, the confinement
chain, a readiness wait and the contexts of its events, and the host's RSS stays at the peak
(freed objects remain in the allocator's arenas among the ones that live on); with 32 at a
time the host's RSS at N=200 was about 1 MB lower, but its CPU during the start 0.3-0.8 s
higher and the start slower on a loaded machine (a steady stream of new readiness waits keeps
the listen sweep's rounds short; fewer processes of ours compete for the cores): a setting
for a host short of memory, not the default.  See bench/README.md.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


async def start_each(
    items: Sequence[Item], start: Callable[[Item], Awaitable[Result]], limit: int
) -> list[Result | BaseException]:
    """``start(item)`` for each of ``items``, ``limit`` at a time (0: all at once), in their
    order; each one's result or exception, in the order of ``items`` (as ``gather(...,
    return_exceptions=True)``)."""
    if limit <= 0 or limit >= len(items):
        return await asyncio.gather(*(start(item) for item in items), return_exceptions=True)
    results: list[Result | BaseException | None] = [None] * len(items)
    queue = iter(range(len(items)))  # shared by the workers: each index taken once

    async def worker() -> None:
        for index in queue:
            try:
                results[index] = await start(items[index])
            except asyncio.CancelledError as exc:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise  # the call itself is cancelled
                results[index] = exc  # only this start was (as gather's return_exceptions has it)
            except Exception as exc:  # one app's failure is its answer
                results[index] = exc

    await asyncio.gather(*(worker() for _ in range(min(limit, len(items)))))
    return results  # type: ignore[return-value]  # every index was filled by a worker
