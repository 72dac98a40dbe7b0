"""Baselines that separate what isolation costs a start from what the host itself costs.

As root, bolt-host runs each app as its own uid, joins it to its cgroups and sets its rlimits:
one exec of the helper ``bolt-exec`` before the app (or, where it is not built, the chain
``sh`` -> ``setpriv`` -> the app; see ``bolt_host/services/sandbox.py``) that raw ``Popen`` and
the peers do not pay (they run the apps as root, unconfined).

* **Popen confined**: the benchmark's own ``Popen`` through the very chain the host builds for
  each app (built by the host's own :class:`~bolt_host.services.sandbox.Isolation`, with the
  host's default limits), the uids, data folders and cgroups prepared before the timing, as
  the host's ``confine_again`` finds them on a second start.  Not root: the chain of the mode
  the host would use there (bubblewrap, or nothing).
* **bolt-host unconfined**: bolt-host with ``BOLT_ISOLATION=off`` (apps run as the host's
  user, no cgroups): against raw Popen it is the host's own cost alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from supbench_model import PYTHON, app_environment
from supbench_systems import BoltHost, PopenBaseline


class PopenConfined(PopenBaseline):
    """Raw ``Popen`` of each app through the exec chain bolt-host builds for it."""

    label = "Popen confined"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.chains: dict[str, tuple[list[str], dict[str, str]]] = {}
        self.isolation: Any = None

    async def launch(self) -> None:
        from bolt_host.config import settings_from_env
        from bolt_host.services.sandbox import Isolation
        from bolt_host.statefile import StateFile

        data_dir = self.workdir / "confined-data"
        state = StateFile(data_dir / "runtime.json")
        settings = settings_from_env()
        self.isolation = isolation = Isolation(
            data_dir=data_dir, state=state, uid_range=settings.app_uid_range, default_limits=settings.default_limits,
            exec_helper_setting=settings.exec_helper,  # BOLT_EXEC_HELPER=off: the chain, as the host then spawns
        )
        isolation.secure_data_dir()
        for name in self.names:  # outside the timing, as a host has it after an app's first start
            command = {"from": "bolt.main", "python": "server.py"}
            app = {"name": name, "folder": str(self.repo / name), "command": command}
            isolation.assign(app)
            confinement = await asyncio.to_thread(isolation.confine, app, [PYTHON, "server.py"])
            self.chains[name] = (confinement.argv, confinement.env)
        await state.commit()
        chain = self.chains[self.names[0]][0]
        self.figures.notes["mode"] = isolation.mode
        self.figures.notes["cgroups"] = isolation.support.label if isolation.support is not None else "none"
        programs = [part for part in chain[: chain.index(PYTHON)] if part.startswith("/") and "cgroup" not in part]
        self.figures.notes["chain"] = " -> ".join(Path(program).name for program in programs)

    def command(self, name: str) -> list[str]:
        return self.chains[name][0]

    def environment(self, name: str) -> dict[str, str]:
        return {**app_environment(name, self.ports[name], self.run_id), **self.chains[name][1]}

    def teardown(self) -> None:
        super().teardown()
        if self.isolation is None:
            return
        support = self.isolation.support
        self.isolation.remove_empty_groups()
        for base in support.bases.values() if support is not None else ():
            with contextlib.suppress(OSError):
                base.rmdir()


class BoltHostUnconfined(BoltHost):
    """bolt-host with isolation turned off (``BOLT_ISOLATION=off``)."""

    label = "bolt-host unconfined"
    folder = "bolt-host-unconfined"

    def host_environment(self) -> dict[str, str]:
        return {**super().host_environment(), "BOLT_ISOLATION": "off"}
