"""Every process slot the supervisor keeps: one :class:`AppRuntime` per instance of each app.

Instance 0 of an app is found by the app's name; instance ``k`` beyond it by ``<name>#<k>``
(:func:`~bolt_host.services.instances.instance_key`), and also among the app's extras, so
that the proxy and the scaling code reach all instances of one app without a scan.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from bolt_host.services.app_runtime import AppRuntime, ShownChanges
from bolt_host.services.instances import instance_key
from bolt_host.services.restarts import CrashHistory, RestartPolicy


class Runtimes:
    def __init__(self, policy: RestartPolicy, host_id: str) -> None:
        self._policy = policy
        self._host_id = host_id  # in every app's marker: another host's apps never match
        self._by_key: dict[str, AppRuntime] = {}
        self._extras: dict[str, dict[int, AppRuntime]] = {}  # app name -> instances 1, 2, ...
        self.changes = ShownChanges()  # of what any context shows, slots added and dropped among them

    def __getitem__(self, key: str) -> AppRuntime:
        return self._by_key[key]

    def get(self, key: str) -> AppRuntime | None:
        return self._by_key.get(key)

    def values(self) -> Iterator[AppRuntime]:
        return iter(list(self._by_key.values()))

    def slot(self, name: str, app: dict[str, Any], instance: int = 0) -> AppRuntime:
        """The runtime of ``name``'s ``instance``, made (stopped) when the app has none yet."""
        key = instance_key(name, instance)
        runtime = self._by_key.get(key)
        if runtime is None:
            runtime = AppRuntime(
                name=name,
                app=dict(app),
                crashes=CrashHistory(self._policy),
                instance=instance,
                host_id=self._host_id,
                changes=self.changes,
            )
            self._by_key[key] = runtime
            self.changes.note()
            if instance:
                self._extras.setdefault(name, {})[instance] = runtime
        return runtime

    def extras(self, name: str) -> list[AppRuntime]:
        """``name``'s instances beyond the first, in no particular order."""
        extras = self._extras.get(name)
        return list(extras.values()) if extras else []

    def of_app(self, name: str) -> list[AppRuntime]:
        """Every instance of ``name`` (instance 0 first); empty for an unknown app."""
        first = self._by_key.get(name)
        return [first, *self.extras(name)] if first is not None else self.extras(name)

    def has_extras(self, name: str) -> bool:
        return bool(self._extras.get(name))

    def scaled(self) -> list[str]:
        """The apps with instances beyond the first."""
        return list(self._extras)

    def forget(self, runtime: AppRuntime) -> None:
        """Drop an instance scaled away (instance 0 stays: it holds the app's record)."""
        extras = self._extras.get(runtime.name, {})
        extras.pop(runtime.instance, None)
        if not extras:
            self._extras.pop(runtime.name, None)
        self._by_key.pop(runtime.key, None)
        self.changes.note()

    def clear(self) -> None:
        self._by_key.clear()
        self._extras.clear()
        self.changes.note()

    def group_in_use(self, runtime: AppRuntime) -> bool:
        """Whether another instance of ``runtime``'s app still has a process (in the app's cgroup)."""
        return any(rt is not runtime and (rt.process or rt.retiring) for rt in self.of_app(runtime.name))

    # what the stats sampler reads ------------------------------------------------
    def stat_roots(self) -> dict[str, int]:
        return {rt.key: rt.process.pid for rt in self._by_key.values() if rt.process is not None}

    def stat_groups(self) -> dict[str, Any]:
        """Apps with a cgroup of their own: their stats come from its counters."""
        return {
            rt.key: rt.confinement.cgroup
            for rt in self._by_key.values()
            if rt.process is not None and rt.confinement is not None and rt.confinement.cgroup is not None
            and rt.name not in self._extras  # several instances share the group: each walks its tree
        }

    def stat_markers(self) -> dict[str, str]:
        return {rt.marker: rt.key for rt in self._by_key.values() if rt.process is not None}
