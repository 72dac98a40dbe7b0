"""How the starts of one call run: at most :data:`START_CONCURRENCY` at a time.

A call that starts many apps (``POST /api/apps/start`` with ``names``, the autostart at boot)
used to run every start at once.  Each start in flight holds its spawn's environment and
argv, the confinement chain, a readiness probe and the contexts of its events; with 200 of
them in flight the host's Python heap peaked about 2.4 MB above what stays once they are
running, and the host's RSS stays at the peak (freed objects remain in the allocator's
arenas among the ones that live on).  Bounded, the in-flight part no longer grows with the
number of apps: bolt-host's RSS at N=200 fell by about 1 MB (bench/README.md).  The machine
is no less busy: 32 apps starting at once keep its cores loaded (an app's own start is its
interpreter's CPU, tens of milliseconds), so the call is not slower.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

START_CONCURRENCY = 32

Item = TypeVar("Item")
Result = TypeVar("Result")


async def start_each(
    items: Sequence[Item], start: Callable[[Item], Awaitable[Result]], limit: int = START_CONCURRENCY
) -> list[Result | BaseException]:
    """``start(item)`` for each of ``items``, ``limit`` at a time, in their order; each one's
    result or exception, in the order of ``items`` (as ``gather(..., return_exceptions=True)``)."""
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
