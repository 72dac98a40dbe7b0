from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from bolt_host.testing import RunningHost, running_host
from tests.helpers import MISSING_TOOL_MARK, REQUIRE_ALL_TOOLS_ENV


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{MISSING_TOOL_MARK}(reason): a needed tool is missing; the test fails")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Fail (before any fixture starts) a test whose tool is missing while every tool is required."""
    mark = item.get_closest_marker(MISSING_TOOL_MARK)
    if mark is not None:
        pytest.fail(f"{mark.kwargs['reason']} ({REQUIRE_ALL_TOOLS_ENV}=1: every tool must be there)", pytrace=False)


def _open_for_passing(folder: Path) -> None:
    for each in (folder, *folder.parents):
        mode = each.stat().st_mode
        if not mode & 0o001:
            os.chmod(each, mode | 0o001)


@pytest.fixture(autouse=True, scope="session")
def _app_uids_can_pass_through_temp_dirs(tmp_path_factory: pytest.TempPathFactory) -> None:
    """As root the host runs each app as its own uid, which must be able to pass through the
    folders above a test's data dir to reach its code; pytest makes them 0700.  Every temp
    dir (``tmp_path`` and ``mktemp`` alike) is opened for passing only (o+x, not listing),
    as an admin's data dir's parents are."""
    if os.geteuid() != 0:
        return
    make = tmp_path_factory.mktemp

    def mktemp(basename: str, numbered: bool = True) -> Path:
        folder = make(basename, numbered)
        _open_for_passing(folder)
        return folder

    tmp_path_factory.mktemp = mktemp  # type: ignore[method-assign]


@pytest.fixture
async def bolt(tmp_path: Path) -> AsyncIterator[RunningHost]:
    """A started host on a temp data dir with anonymous and admin clients."""
    async with running_host(tmp_path / "data") as running:
        yield running


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A device fleet shared by a test module: Mosquitto, a manager and agents dev-1 and dev-2
    (tests/fixtures/device/fleet.py); a module needing other settings defines its own."""
    from tests.fixtures.device.fleet import running_fleet

    with running_fleet(tmp_path_factory.mktemp("fleet")) as running:
        yield running
