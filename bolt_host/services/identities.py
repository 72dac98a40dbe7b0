"""One unprivileged uid (and gid of the same number) per app, like systemd's ``DynamicUser=``.

Numbers come from a configurable range and are kept in the host's state file (section
``identities``), so an app keeps its uid across restarts, upgrades and host restarts, and
its files stay its own.  A deleted app's number is freed and may go to the next new app;
:mod:`sandbox` hands a reused number's leftovers back to root before that can matter.
No ``/etc/passwd`` entry is needed: the kernel only knows numbers.
"""

from __future__ import annotations

from bolt_host.statefile import StateFile

SECTION = "identities"
DEFAULT_UID_RANGE = (70000, 79999)  # above Debian's user ranges and systemd's DynamicUser range


class IdentitiesExhausted(RuntimeError):
    pass


class Identities:
    def __init__(self, state: StateFile, uid_range: tuple[int, int] = DEFAULT_UID_RANGE) -> None:
        self._state = state
        self._low, self._high = uid_range

    def uid_for(self, name: str) -> int:
        """The app's uid, allocated (and queued for the disk) on first use."""
        row = self._state.get(SECTION, name)
        if row is not None:
            return int(row["uid"])
        taken = {int(row["uid"]) for row in self._state.shared_rows(SECTION)}  # not copied: N new apps, N^2 copies
        uid = next((uid for uid in range(self._low, self._high + 1) if uid not in taken), None)
        if uid is None:
            raise IdentitiesExhausted(f"every uid of {self._low}-{self._high} is taken; widen BOLT_APP_UID_RANGE")
        self._state.put(SECTION, name, {"name": name, "uid": uid})
        self._state.commit_soon()
        return uid

    def known(self, name: str) -> int | None:
        row = self._state.get(SECTION, name)
        return int(row["uid"]) if row is not None else None

    def release(self, name: str) -> int | None:
        """Free the app's uid (after it is deleted); returns the number it had."""
        uid = self.known(name)
        if uid is not None:
            self._state.delete(SECTION, name)
            self._state.commit_soon()
        return uid
