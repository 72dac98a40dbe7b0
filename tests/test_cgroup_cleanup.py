"""The host's cgroups go when it shuts down: the app groups nothing runs in, and its own group."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bolt_host.services import cgroups

pytestmark = pytest.mark.timeout(60)


def test_removing_empty_groups_takes_the_hosts_own_group_and_keeps_a_busy_one(tmp_path: Path) -> None:
    support = cgroups.detect(tmp_path / "data")
    idle, busy = support.group("idle"), support.group("busy")
    if idle is None or busy is None:
        pytest.skip("no cgroups the host may create here")
    idle.create({})
    busy.create({})
    sleeper = subprocess.Popen([sys.executable, "-c", "import signal; signal.pause()"])
    try:
        for procs in busy.procs_files():
            procs.write_text(str(sleeper.pid))
        support.remove_empty_groups()
        assert not idle.exists() and busy.exists()  # a busy group, and so the host's, stays
        assert all(base.is_dir() for base in support.bases.values())
    finally:
        sleeper.kill()
        sleeper.wait()
    assert busy.members() == set()
    support.remove_empty_groups()
    assert not any(base.exists() for base in support.bases.values())
