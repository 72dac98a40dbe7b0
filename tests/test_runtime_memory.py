"""What a running app's state holds in the host, with a real confined process: its cgroup's
folders as plain strings, not ``Path`` objects (four of them, each with a parts list and a
cached string, were about 1 KB of the host's memory per running app)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import PurePath
from typing import Any

from tests.test_isolation import (
    install_and_start,
    iso,
    joined_files,
    needs_root,
    require_cgroups,
    wait_for_line,
    write_app,
)

__all__ = ["iso"]  # the fixture, used by name


def _held(value: Any, depth: int = 0) -> Iterator[Any]:
    """``value`` and everything its attributes and containers hold, a few levels deep."""
    yield value
    if depth > 4 or isinstance(value, str | bytes | int | float | bool) or value is None:
        return
    if isinstance(value, dict):
        children: list[Any] = [*value.keys(), *value.values()]
    elif isinstance(value, list | tuple | set | frozenset):
        children = list(value)
    elif hasattr(value, "__dict__") and not isinstance(value, type):
        children = list(vars(value).values())
    else:
        return
    for child in children:
        yield from _held(child, depth + 1)


@needs_root
async def test_a_running_apps_cgroup_holds_its_folders_as_strings(iso: Any) -> None:
    support = require_cgroups(iso)
    write_app(iso.host.state["test-repo"], "holder", "import signal\nprint('UP', flush=True)\nsignal.pause()\n")
    await install_and_start(iso, "holder")
    await wait_for_line(iso, "holder", "UP")  # printed after the join: the app is in its groups
    confinement = iso.host.supervisor._apps["holder"].confinement
    group = confinement.cgroup
    assert group is not None and len(group.dirs) == len(support.bases)

    paths = [item for item in _held(group) if isinstance(item, PurePath)]
    assert paths == []
    joined = joined_files(confinement.argv)
    assert joined and all(type(item) is str for item in joined)
    assert group.members()  # the strings name the live group
    assert (await iso.admin.post("/api/apps/stop", json={"name": "holder"})).status_code == 200
