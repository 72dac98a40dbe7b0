"""Who an app's processes run as, what they can see, and the limits they get.

Modes, chosen once at start-up:

* ``uid``: the host is root.  Each app runs as its own uid/gid (:mod:`identities`), its code
  ``root:<gid>`` 0750/0640 (readable, not writable), its data folder ``home/<app>`` its own
  (0700, also ``HOME``), everything else of the data dir 0600/0700 of root.
* ``bwrap``: the host is not root and bubblewrap is installed.  Each app runs in a mount
  namespace where the data dir is an empty tmpfs except its code (read-only) and its data
  folder, the rest of the system is read-only, and ``/tmp`` is private.
* ``none``: neither; apps run as the host's user (one warning at start-up).

An admin may opt one app out (``isolation: false``); it then runs as the host's user.

No ``preexec_fn`` (see :mod:`processes`): the spawned argv is a short chain of execs that
ends in the app's own command, each doing one thing before the next exec, so the app's
first instruction already runs confined and nothing it forks escapes.  In ``uid`` mode it is
one exec of the static helper ``bolt-exec`` (:mod:`exec_helper`: joins the app's cgroups, sets
its rlimits, drops to its uid and gid with no supplementary groups and no new privileges,
checks the drop, execs the app) where it was built and is safe to run as root; else, and in
``bwrap`` mode, the chain ``sh`` (joins the app's cgroups; sets the open-files limit with
``ulimit -n`` when that is the only rlimit) -> ``prlimit`` (rlimits, only when others apply or
there is no ``sh``) -> ``setpriv`` (drops to the app's uid, no new privileges) or ``bwrap`` ->
the app.  The pid stays the same throughout.  Each exec costs the start about a millisecond
of CPU (``setpriv`` alone 2.5: it loads NSS and the locale), so a step is left out where
another can do its part.

:meth:`Isolation.confine` prepares folders and groups (blocking; a worker thread);
:meth:`Isolation.confine_again` gives the same chain on the event loop when nothing has
changed since this host last prepared the app (a crash restart, a stop and start).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bolt_host.services import cgroups
from bolt_host.services.exec_helper import AUTO, choose, helper_argv
from bolt_host.services.identities import DEFAULT_UID_RANGE, Identities
from bolt_host.services.limits import effective_limits, format_bytes
from bolt_host.services.start_command import command_of
from bolt_host.statefile import StateFile

log = logging.getLogger("bolt_host.sandbox")

UID, BWRAP, NONE, OFF = "uid", "bwrap", "none", "off"
HOMES = "home"  # data_dir/home/<app>: each app's writable folder ($BOLT_APP_DATA, HOME)
PRIVATE_SUBDIRS = ("public", "databases", "logs", "cache", "uploads")
# Joins each group file given before "--" (0: the shell itself), then execs the rest (the app's chain).
JOIN_SCRIPT = 'while [ "$1" != -- ]; do echo 0 > "$1" || exit 125; shift; done; shift; exec "$@"'


def _tool(name: str) -> str | None:
    return shutil.which(name) or next((p for p in (f"/usr/bin/{name}", f"/bin/{name}") if os.access(p, os.X_OK)), None)


def detect_mode() -> str:
    if os.geteuid() == 0 and _tool("setpriv") and _tool("prlimit"):
        return UID
    if os.geteuid() != 0 and bwrap_works():
        return BWRAP
    return NONE


def bwrap_works() -> bool:
    """Can bubblewrap make a sandbox here?  Not where user namespaces are turned off."""
    bwrap = _tool("bwrap")
    return bwrap is not None and _probe([bwrap, *BWRAP_PROBE, "--", "true"]) is None


BWRAP_PROBE = ("--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp")
NETJAIL = Path(__file__).resolve().parent.parent / "launchers" / "netjail.py"


def _probe(argv: list[str]) -> str | None:
    """None when ``argv`` runs and succeeds, else why not (its first line of errors)."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return str(exc)
    return None if done.returncode == 0 else (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[0]


@functools.cache
def network_namespace(in_bwrap: bool) -> tuple[list[str] | None, str]:
    """How an install gets a network namespace of its own: ``(argv prefix or None, why not)``.

    In bubblewrap it is one more option of the sandbox (the prefix is then empty); otherwise
    ``unshare --net`` (root), or unprivileged a bubblewrap that shares the whole filesystem and
    only unshares the network (it brings loopback up: ``unshare --user --map-current-user``
    could not, its process keeps no capability across exec as a non-zero uid)."""
    if in_bwrap or os.geteuid() != 0:
        bwrap = _tool("bwrap")
        if bwrap is None:
            return None, "bubblewrap (bwrap) is not installed"
        prefix = [] if in_bwrap else [bwrap, "--dev-bind", "/", "/", "--unshare-net", "--"]
        problem = _probe([bwrap, *BWRAP_PROBE, "--unshare-net", "--", "true"])
        return (prefix if problem is None else None), problem or ""
    unshare = _tool("unshare")
    if unshare is None:
        return None, "unshare (util-linux) is not installed"
    problem = _probe([unshare, "--net", "--", "true"])
    return ([unshare, "--net", "--"] if problem is None else None), problem or ""


@dataclass
class Confinement:
    """How one start of an app is confined: the argv to spawn and what to check after."""

    argv: list[str]
    env: dict[str, str]
    mode: str
    limits: dict[str, Any]
    cgroup: cgroups.AppCgroup | None = None
    oom_baseline: int = 0
    uid: int | None = None

    def out_of_memory(self) -> bool:
        return self.cgroup is not None and self.cgroup.oom_kills() > self.oom_baseline


@dataclass
class Isolation:
    """The host's isolation service (one per host)."""

    data_dir: Path
    state: StateFile
    uid_range: tuple[int, int] = DEFAULT_UID_RANGE
    default_limits: Mapping[str, Any] = field(default_factory=dict)
    mode: str = field(default_factory=detect_mode)
    support: cgroups.CgroupSupport | None = None
    exec_helper_setting: str = AUTO  # auto, off or a path (see exec_helper.choose)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        # uid mode's one-exec confinement, or None for the chain (checked once, here)
        self.exec_helper = choose(self.exec_helper_setting) if self.mode == UID else None
        self.identities = Identities(self.state, self.uid_range)
        self._prepared: dict[str, _Prepared] = {}  # by app name: what confine() last did
        if self.support is None:
            self.support = cgroups.detect(self.data_dir)
        if self.mode == NONE:
            log.warning(
                "apps run as the host's own user and can read its data dir: run the host as root "
                "(a uid per app) or install bubblewrap (a sandbox per app); see SECURITY.md"
            )
        prefix, problem = network_namespace(self.mode == BWRAP)
        if prefix is None:
            log.warning(
                "dependency installs and granted install scripts can reach the whole network, not only "
                "the registry/index: no network namespace here (%s); see SECURITY.md",
                problem,
            )

    # the data dir --------------------------------------------------------------------
    def secure_data_dir(self) -> None:
        """Host state 0600/0700; only the way to each app's own folders is open (0711)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        passable = 0o711 if self.mode == UID else 0o700
        os.chmod(self.data_dir, passable)
        for name in ("apps", HOMES):
            (self.data_dir / name).mkdir(exist_ok=True)
            os.chmod(self.data_dir / name, passable)
        for name in PRIVATE_SUBDIRS:
            if (self.data_dir / name).is_dir():
                os.chmod(self.data_dir / name, 0o700)
        for entry in self.data_dir.iterdir():
            if entry.is_file() and not entry.is_symlink():
                os.chmod(entry, 0o600)
        closed = [str(parent) for parent in self.data_dir.resolve().parents if not parent.stat().st_mode & 0o001]
        if self.mode == UID and closed:
            log.warning(
                "apps cannot reach their code: %s not passable by other users (chmod o+x, or move the data dir)",
                ", ".join(closed),
            )

    def home_of(self, name: str) -> Path:
        return self.data_dir / HOMES / name

    # one app ---------------------------------------------------------------------------
    def mode_for(self, app: Mapping[str, Any]) -> str:
        return OFF if app.get("isolation") is False else self.mode

    def limits_for(self, app: Mapping[str, Any]) -> dict[str, Any]:
        return effective_limits(self.default_limits, app.get("limits"), app.get("adminLimits"))

    def assign(self, app: Mapping[str, Any]) -> int | None:
        """The app's uid in ``uid`` mode, allocated if new; on the event loop (host state)."""
        return self.identities.uid_for(str(app["name"])) if self.mode_for(app) == UID else None

    def confine(self, app: Mapping[str, Any], argv: list[str]) -> Confinement:
        """Prepare ``app``'s folders and groups and wrap ``argv`` (after :meth:`assign`).

        Blocking (chown, cgroup files): run it in a worker thread, unless :meth:`confine_again`
        finds it done already."""
        prepared = self.prepare(app)
        cgroup = prepared.cgroup
        return prepared.confinement(argv, prepared.limits, cgroup.oom_kills() if cgroup is not None else 0)

    def prepare(self, app: Mapping[str, Any]) -> _Prepared:
        """:meth:`confine` without an argv (blocking): the app's data folder, its code handed to its
        gid, its groups with their limits, and the chain of execs, kept for :meth:`confine_again`.
        An install calls it once the app is in place, so that even its first start spawns on the
        event loop: at a first start of 200 apps this worker-thread step was over a millisecond of
        the host's CPU per app, while the apps being started needed the CPU."""
        name, mode = str(app["name"]), self.mode_for(app)
        limits = self.limits_for(app)
        home = self.home_of(name)
        uid = self.identities.known(name) if mode == UID else None
        if mode == UID and uid is None:
            raise RuntimeError(f"no uid assigned to {name!r}")
        self._prepare_home(home, uid)
        code = code_folder(app)
        shared = uid is not None and self._share_code(code, uid)
        cgroup = self.support.group(name) if self.support is not None else None
        if cgroup is not None:
            cgroup.create(limits)
        python = runs_python(app)
        prefix, env = self._chain(mode, uid, code, home, limits, cgroup, python)
        prepared = _Prepared(mode, uid, str(code), limits, python, shared, str(home), cgroup, prefix, env)
        self._prepared[name] = prepared
        return prepared

    def confine_again(self, app: Mapping[str, Any], argv: list[str]) -> Confinement | None:
        """:meth:`confine` without its blocking part, when this host already prepared ``app``
        as it is now (same uid, code folder, limits and kind of runtime; its data folder still
        its own, its code still its gid's, its group still there): a few ``stat`` calls and the
        chain made then, cheap enough for the event loop.  None when anything must be done
        (then :meth:`confine` in a thread).

        A crash restart used to wait for a worker thread that rewrote the unchanged limits."""
        name, mode = str(app["name"]), self.mode_for(app)
        limits = self.limits_for(app)
        uid = self.identities.known(name) if mode == UID else None
        prepared = self._prepared.get(name)
        if prepared is None or not prepared.holds(mode, uid, str(code_folder(app)), limits, runs_python(app)):
            return None
        cgroup = prepared.cgroup
        try:
            home = os.stat(prepared.home)
            if (uid is not None and home.st_uid != uid) or (cgroup is not None and not cgroup.exists()):
                return None
            if prepared.shared and os.stat(prepared.code).st_gid != uid:
                return None  # a reinstall swapped in a tree of root's: hand it over again
        except OSError:
            return None
        return prepared.confinement(argv, limits, cgroup.oom_kills() if cgroup is not None else 0)

    def _chain(
        self,
        mode: str,
        uid: int | None,
        code: Path,
        home: Path,
        limits: dict[str, Any],
        cgroup: cgroups.AppCgroup | None,
        python: bool,
    ) -> tuple[tuple[str, ...], dict[str, str]]:
        """The chain of execs that confines an app's argv, which follows it (see the module's
        docstring), and the variables it adds to the app's environment."""
        env = {"BOLT_APP_DATA": str(home), "HOME": str(home)}
        rlimits = self._rlimit_values(mode, limits, address_space=python)
        if self.exec_helper is not None and mode == UID and uid is not None:
            joins = cgroup.join_files() if cgroup is not None else []
            return tuple(helper_argv(self.exec_helper, joins, rlimits, uid)), env
        chain = self._drop_privileges(mode, uid, code, home)
        script = JOIN_SCRIPT
        if cgroup is not None and set(rlimits) == {"nofile"}:
            # The shell that joins the groups sets the open-files limit (POSIX ``ulimit -n``, soft
            # and hard) too: one exec fewer than prlimit, about a millisecond of CPU per start.
            script = f"ulimit -n {rlimits.pop('nofile')} || exit 125; {JOIN_SCRIPT}"
        chain = self._prlimit(rlimits) + chain
        if cgroup is not None:
            chain = ["/bin/sh", "-c", script, "bolt-join", *cgroup.join_files(), "--", *chain]
        return tuple(chain), env

    def reattach(self, app: Mapping[str, Any]) -> Confinement:
        """The confinement of a process a previous host started (adopted after a restart)."""
        name = str(app["name"])
        cgroup = self.support.group(name) if self.support is not None else None
        baseline = cgroup.oom_kills() if cgroup is not None else 0
        uid = self.identities.known(name) if self.mode_for(app) == UID else None
        return Confinement([], {}, self.mode_for(app), self.limits_for(app), cgroup, baseline, uid)

    def wrap_command(
        self,
        app: Mapping[str, Any],
        argv: list[str],
        *,
        writable: list[Path] | None = None,
        own_network: bool = False,
        address_space: bool = False,
    ) -> list[str]:
        """``argv`` run as ``app``'s identity/sandbox (for dependency installs and install scripts).

        Call :meth:`assign` first (on the event loop); this part blocks.  ``writable`` folders
        (the staged code being installed) are handed to the app's uid or bound writable in its
        sandbox; the caller hands them back (:meth:`share_code`) before the app runs.  Limits
        apply as for the app itself, without a cgroup (memory as an address-space limit only with
        ``address_space``: see :func:`runs_python`).  ``own_network`` (where
        :meth:`has_network_namespace`) puts it in a network namespace of its own whose only way
        out is the host's proxy: run it with an :class:`~bolt_host.services.egress.Egress`."""
        name, mode = str(app["name"]), self.mode_for(app)
        home = self.home_of(name)
        uid = self.identities.known(name) if mode == UID else None
        self._prepare_home(home, uid)
        for folder in writable or []:
            if uid is not None:
                self._make_passable(folder)
                _chown_tree(folder, uid, uid, dir_mode=0o700, file_mode=None)
        extra = [] if uid is not None else list(writable or [])
        network, _ = network_namespace(mode == BWRAP)
        own_network = own_network and network is not None
        jail = [sys.executable, "-I", "-S", str(NETJAIL), "--"] if own_network else []
        rlimit_values = self._rlimit_values(mode, self.limits_for(app), address_space=address_space)
        if self.exec_helper is not None and mode == UID and uid is not None:  # one exec drops and limits
            chain, rlimits = helper_argv(self.exec_helper, [], rlimit_values, uid), []
        else:
            chain = self._drop_privileges(mode, uid, code_folder(app), home, extra_writable=extra,
                                          own_network=own_network)
            rlimits = self._prlimit(rlimit_values)
        if mode == BWRAP:  # the jail runs inside the sandbox, as its last step before the tool
            return rlimits + chain + jail + argv
        # the jail opens the way out (as root, in uid mode), then the rest drops to the app
        return ((network or []) if own_network else []) + jail + rlimits + chain + argv

    def has_network_namespace(self, app: Mapping[str, Any]) -> bool:
        """Can ``app``'s installs get a network namespace of their own on this machine?"""
        return network_namespace(self.mode_for(app) == BWRAP)[0] is not None

    def install_prefix(self, app: Mapping[str, Any], staged: Path, tool: str) -> tuple[list[str], Path, bool]:
        """For a dependency install into ``staged`` (after :meth:`assign`; blocking): the argv
        prefix that runs the tool as the app (its uid or sandbox, ``HOME`` its data folder), a
        cache folder of the app's own for ``tool`` (a shared cache could be poisoned by one
        app for the next) and whether it runs in a network namespace (see :meth:`wrap_command`).
        Hand ``staged`` back with :meth:`share_code` afterwards."""
        home = self.home_of(str(app["name"]))
        cache = home / ".cache" / tool
        namespaced = self.has_network_namespace(app)
        # uv keeps to an address-space limit; npm is Node.js, which does not (see runs_python)
        prefix = self.wrap_command(app, [], writable=[staged], own_network=namespaced, address_space=tool == "uv")
        cache.mkdir(parents=True, exist_ok=True)
        uid = self.identities.known(str(app["name"])) if self.mode_for(app) == UID else None
        if uid is not None:
            _chown_tree(home / ".cache", uid, uid, dir_mode=0o700, file_mode=None)
        return [*prefix, _tool("env") or "env", f"HOME={home}"], cache, namespaced

    def share_code(self, app: Mapping[str, Any], folder: Path | None = None) -> None:
        """Hand ``folder`` (default: the app's code) back to root, readable by the app's gid:
        after an install step wrote into it as the app's uid.  Blocking."""
        uid = self.identities.known(str(app["name"]))
        if self.mode_for(app) == UID and uid is not None:
            self._share_code(Path(folder or code_folder(app)), uid, force=True)

    def forget(self, name: str) -> None:
        """After a delete, on the event loop: free the uid (then :meth:`hand_back_data`)."""
        self._prepared.pop(name, None)
        self.identities.release(name)

    def remove_empty_groups(self) -> None:
        """At shut-down (blocking): the cgroups of apps that no longer run."""
        self._prepared.clear()
        if self.support is not None:
            self.support.remove_empty_groups()

    def hand_back_data(self, name: str, *, delete_data: bool) -> None:
        """After a delete (blocking): the app's cgroup goes (it stays between its runs), and the
        data folder goes or is handed back to root so a later app given the same uid cannot read it."""
        self._prepared.pop(name, None)
        cgroup = self.support.group(name) if self.support is not None else None
        if cgroup is not None:
            cgroup.remove()
        home = self.home_of(name)
        if delete_data:
            shutil.rmtree(home, ignore_errors=True)
        elif home.is_dir() and os.geteuid() == 0:
            _chown_tree(home, 0, 0, dir_mode=0o700, file_mode=None)

    # what is shown -----------------------------------------------------------------------
    def describe(self, app: Mapping[str, Any]) -> dict[str, Any]:
        """For the app object: mode, uid, effective limits and the mechanism of each."""
        name, mode = str(app["name"]), self.mode_for(app)
        limits = self.limits_for(app)
        shown = dict(limits)
        if "memory" in shown:
            shown["memory"] = format_bytes(shown["memory"])
        return {
            "mode": mode,
            "uid": self.identities.known(name) if mode == UID else None,
            "dataFolder": str(self.home_of(name)),
            "limits": shown,
            "mechanisms": {key: self.mechanism(key, mode, python=runs_python(app)) for key in limits},
            "installNetwork": install_network(mode),
        }

    def mechanism(self, key: str, mode: str, *, python: bool = True) -> str:
        """How limit ``key`` is enforced for an app in ``mode`` (``python``: see :func:`runs_python`)."""
        enforced = self.support.limited if self.support is not None else frozenset()
        if key in enforced:
            return self.support.label  # type: ignore[union-attr]
        if key == "memory":
            if python:
                return "rlimit (address space)"
            return "not enforced (needs cgroups; an address-space limit stops Node.js and most runtimes)"
        if key == "pids":
            return "rlimit (processes of the app's uid)" if mode == UID else "not enforced (needs cgroups)"
        if key == "cpu":
            return "not enforced (needs cgroups)"
        return "rlimit"

    def summary(self) -> dict[str, Any]:
        """For ``/-/health``: the host-wide mode and limit mechanisms."""
        support = self.support or cgroups.NO_CGROUPS
        mechanisms = {key: self.mechanism(key, self.mode) for key in ("memory", "pids", "cpu", "nofile")}
        if "memory" not in support.limited:
            mechanisms["memory"] = "rlimit (address space) for Python apps, none for others"
        return {
            "mode": self.mode,
            "cgroups": support.label,
            "mechanisms": mechanisms,
            "installNetwork": install_network(self.mode),
        }

    # helpers --------------------------------------------------------------------------
    def _prepare_home(self, home: Path, uid: int | None) -> None:
        home.mkdir(parents=True, exist_ok=True)
        if uid is not None and home.stat().st_uid != uid:
            _chown_tree(home, uid, uid, dir_mode=0o700, file_mode=None)
        elif uid is None:
            os.chmod(home, 0o700)

    def _share_code(self, code: Path, gid: int, *, force: bool = False) -> bool:
        """Code ``root:<gid>``, group read (and execute where the owner has it), nothing for others.

        Only inside ``apps/``: a folder elsewhere is never taken over (then False).  Done once
        per installed tree (a fresh install swaps in a root:root tree)."""
        apps = (self.data_dir / "apps").resolve()
        resolved = code.resolve()
        if not resolved.is_relative_to(apps) or resolved == apps:
            return False
        with contextlib.suppress(FileNotFoundError):
            if force or resolved.stat().st_gid != gid:
                _chown_tree(resolved, 0, gid, dir_mode=0o750, file_mode=0o640)
        return True

    def _make_passable(self, folder: Path) -> None:
        """Let other uids pass (o+x, not list) through the folders from ``apps/`` down to
        ``folder`` (a staging dir is 0700), never above the data dir."""
        apps = (self.data_dir / "apps").resolve()
        for parent in Path(folder).resolve().parents:
            if not parent.is_relative_to(apps) or parent == apps:
                break
            os.chmod(parent, parent.stat().st_mode | 0o001)

    def _drop_privileges(
        self,
        mode: str,
        uid: int | None,
        code: Path,
        home: Path,
        extra_writable: list[Path] | None = None,
        own_network: bool = False,
    ) -> list[str]:
        if mode == UID and uid is not None:
            return [_tool("setpriv") or "setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                    "--no-new-privs", "--"]
        if mode == BWRAP:
            bwrap = [_tool("bwrap") or "bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
                     "--tmpfs", "/tmp", *_host_files_in_tmp(), "--tmpfs", str(self.data_dir),
                     "--ro-bind", str(code), str(code), "--bind", str(home), str(home)]
            for folder in extra_writable or []:
                bwrap += ["--bind", str(folder), str(folder)]
            if own_network:
                bwrap.append("--unshare-net")
            # the empty data dir read-only too: nothing written there could look like host state
            return [*bwrap, "--remount-ro", str(self.data_dir), "--chdir", str(code), "--"]
        return []

    def _rlimit_values(self, mode: str, limits: Mapping[str, Any], *, address_space: bool) -> dict[str, int]:
        """What cgroups do not cover, as rlimits: files always, processes per uid, memory as
        address space where ``address_space``."""
        enforced = self.support.limited if self.support is not None else frozenset()
        values = {}
        if limits.get("nofile"):
            values["nofile"] = int(limits["nofile"])
        if limits.get("pids") and "pids" not in enforced and mode == UID:
            values["nproc"] = int(limits["pids"])
        if limits.get("memory") and "memory" not in enforced and address_space:
            values["as"] = int(limits["memory"])
        return values

    @staticmethod
    def _prlimit(values: Mapping[str, int]) -> list[str]:
        if not values:
            return []
        return [_tool("prlimit") or "prlimit", *(f"--{key}={value}" for key, value in values.items()), "--"]


@dataclass(frozen=True)
class _Prepared:
    """What :meth:`Isolation.prepare` last did for an app (checked by :meth:`Isolation.confine_again`)."""

    mode: str
    uid: int | None
    code: str
    limits: dict[str, Any]
    python: bool  # the chain limits its address space (see runs_python)
    shared: bool  # its code is handed to its gid (it is inside apps/)
    home: str
    cgroup: cgroups.AppCgroup | None
    prefix: tuple[str, ...]  # the chain of execs before the app's argv
    env: dict[str, str]

    def holds(self, mode: str, uid: int | None, code: str, limits: dict[str, Any], python: bool) -> bool:
        """Was it prepared for an app confined as this?"""
        return (self.mode, self.uid, self.code, self.limits, self.python) == (mode, uid, code, limits, python)

    def confinement(self, argv: list[str], limits: dict[str, Any], oom_baseline: int) -> Confinement:
        """One start's confinement of ``argv``."""
        chain = [*self.prefix, *argv]
        return Confinement(chain, dict(self.env), self.mode, limits, self.cgroup, oom_baseline, self.uid)


def _host_files_in_tmp() -> list[str]:
    """``--ro-bind`` options for the host's interpreter and package where they live under
    ``/tmp`` (a checkout or virtual environment there): the sandbox's private ``/tmp`` would
    hide what apps run with (the host's Python, the Node launcher, the install network's jail)."""
    folders = {Path(sys.prefix), Path(sys.base_prefix), Path(__file__).resolve().parent.parent}
    found: list[str] = []
    for folder in sorted({folder.resolve() for folder in folders}):
        if folder.is_relative_to("/tmp") and folder != Path("/tmp"):
            found += ["--ro-bind", str(folder), str(folder)]
    return found


def runs_python(app: Mapping[str, Any]) -> bool:
    """Does ``app`` run a Python interpreter?  Only then does an address-space limit stand in for
    a memory limit: Node.js (V8 reserves GiBs of virtual memory at start) hangs or aborts with
    "Failed to reserve virtual memory for CodeRange" under one of 128-512 MiB, and so do other
    runtimes that reserve up front (Go, the JVM); a shell command could be any of them."""
    command = command_of(app) or {}
    argv = command.get("argv") or [""]
    return "python" in command or Path(str(argv[0])).name.startswith("python")


def install_network(mode: str) -> str:
    """What the network of ``mode``'s dependency installs is, as shown to admins."""
    prefix, problem = network_namespace(mode == BWRAP)
    if prefix is not None:
        return "registry/index only (network namespace)"
    return f"open (no network namespace: {problem})"


def code_folder(app: Mapping[str, Any]) -> Path:
    """Where the app's code is (``folder``; ``path`` in app objects from before it was named so)."""
    return Path(str(app.get("folder") or app.get("path")))


def _chown_tree(root: Path, uid: int, gid: int, *, dir_mode: int, file_mode: int | None) -> None:
    """Own ``root`` and everything under it (links themselves, never their targets).

    ``file_mode`` None keeps the owner's bits and clears group/other; else group gets read
    (and execute where the owner has it)."""

    def fix(path: str, is_dir: bool) -> None:
        os.lchown(path, uid, gid)
        if is_dir:
            os.chmod(path, dir_mode)
            return
        mode = os.lstat(path).st_mode & 0o700
        if file_mode is None:
            os.chmod(path, mode)
        else:
            os.chmod(path, (mode | 0o040) | (0o010 if mode & 0o100 else 0) | (file_mode & 0o600))

    fix(str(root), True)
    for folder, dirs, files in os.walk(root):
        for names, is_dir in ((dirs, True), (files, False)):
            for entry in names:
                path = os.path.join(folder, entry)
                if os.path.islink(path):
                    os.lchown(path, uid, gid)
                else:
                    fix(path, is_dir)
