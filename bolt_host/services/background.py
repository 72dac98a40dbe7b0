"""Tasks nobody awaits: kept referenced until they end, their errors retrieved, cancelled together.

asyncio holds only a weak reference to a task, so one started and forgotten may be collected
mid-flight; and a failed task nobody awaits logs "exception was never retrieved".
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterable
from typing import Any


class Background:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def run(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(retrieve_exception)

    async def cancel(self, also: Iterable[asyncio.Task[Any]] = ()) -> None:
        """Cancel every task still running (and ``also``) and wait until they have ended."""
        tasks = [*self._tasks, *also]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def retrieve_exception(task: asyncio.Task[Any]) -> None:
    """A done callback for a task whose failure is handled elsewhere (or logged by it)."""
    if not task.cancelled():
        task.exception()
