"""The app state machine the Market mirrors from Olares' app-service (docs/market.md has the table).

Forward path: ``pending -> downloading -> installing -> initializing -> running``;
``running <-> stopped`` through stop/resume; ``upgrading`` and ``uninstalling``
from either.  Every failure has its own state (``downloadFailed`` ...), and each
cancellable phase X ends in ``XCanceled`` (or ``XCancelFailed``).
"""

from __future__ import annotations

PENDING, DOWNLOADING, INSTALLING, INITIALIZING = "pending", "downloading", "installing", "initializing"
RUNNING, STOPPED, UPGRADING, RESUMING = "running", "stopped", "upgrading", "resuming"
STOPPING, UNINSTALLING, UNINSTALLED = "stopping", "uninstalling", "uninstalled"
INSTALL_FAILED = "installFailed"

INSTALL, UNINSTALL, UPGRADE, STOP, RESUME, CANCEL, CLONE = (
    "install", "uninstall", "upgrade", "stop", "resume", "cancel", "clone",
)

IN_FLIGHT = frozenset({PENDING, DOWNLOADING, INSTALLING, INITIALIZING, UPGRADING, RESUMING})
CANCELLABLE = frozenset({PENDING, DOWNLOADING, INSTALLING, INITIALIZING, UPGRADING, RESUMING})
# Cancelling these removes the install; cancelling the others only stops the app.
TEAR_DOWN_ON_CANCEL = frozenset({PENDING, DOWNLOADING, INSTALLING})
FAILED_STATE = {
    DOWNLOADING: "downloadFailed",
    PENDING: "downloadFailed",
    INSTALLING: INSTALL_FAILED,
    INITIALIZING: INSTALL_FAILED,
    UPGRADING: "upgradeFailed",
    STOPPING: "stopFailed",
    RESUMING: "resumeFailed",
    UNINSTALLING: "uninstallFailed",
}

_ALLOWED: dict[str, frozenset[str]] = {
    UNINSTALLED: frozenset({INSTALL}),
    RUNNING: frozenset({UNINSTALL, UPGRADE, STOP}),
    STOPPED: frozenset({UNINSTALL, UPGRADE, RESUME}),
    RESUMING: frozenset({CANCEL, STOP}),
    "downloadFailed": frozenset({INSTALL}),
    INSTALL_FAILED: frozenset({INSTALL, UNINSTALL}),
    "upgradeFailed": frozenset({UPGRADE, UNINSTALL}),
    "stopFailed": frozenset({STOP, UPGRADE, UNINSTALL}),
    "resumeFailed": frozenset({RESUME, UPGRADE, UNINSTALL}),
    "uninstallFailed": frozenset({UNINSTALL}),
}
for _phase in IN_FLIGHT - {RESUMING}:
    _ALLOWED[_phase] = frozenset({CANCEL})
for _phase in CANCELLABLE:
    _ALLOWED[f"{_phase}Canceled"] = frozenset({INSTALL}) if _phase in TEAR_DOWN_ON_CANCEL else _ALLOWED.get(
        RUNNING if _phase == RESUMING else STOPPED, frozenset()
    )
    _ALLOWED[f"{_phase}CancelFailed"] = frozenset({CANCEL} if _phase in {PENDING, DOWNLOADING} else {CANCEL, UNINSTALL})
    _ALLOWED[f"{_phase}Canceling"] = frozenset()
_ALLOWED[UNINSTALLING] = frozenset()
_ALLOWED[STOPPING] = frozenset()


def allowed_ops(state: str | None) -> frozenset[str]:
    """Operations allowed in ``state`` (None: nothing installed, only install)."""
    if state is None:
        return frozenset({INSTALL})
    return _ALLOWED.get(state, frozenset())


def can(state: str | None, op: str) -> bool:
    if op == CLONE:
        op = INSTALL if state is None else op
    return op in allowed_ops(state)


def is_installed(state: str | None) -> bool:
    """Whether the host holds the app in ``state`` (the CLI's "not installed" set is the complement)."""
    if state is None or state == UNINSTALLED:
        return False
    if state in {PENDING, DOWNLOADING, INSTALLING, "downloadFailed"}:
        return False
    return not any(state.startswith(p) and state.endswith(("Canceled", "Canceling", "CancelFailed"))
                   for p in TEAR_DOWN_ON_CANCEL)


def cancel_outcome(phase: str) -> str:
    return f"{phase}Canceled"


def failed(phase: str) -> str:
    return FAILED_STATE.get(phase, INSTALL_FAILED)
