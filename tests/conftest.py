from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bolt_host.testing import RunningHost, running_host


@pytest.fixture
async def bolt(tmp_path: Path) -> AsyncIterator[RunningHost]:
    """A started host on a temp data dir with anonymous and admin clients."""
    async with running_host(tmp_path / "data") as running:
        yield running
