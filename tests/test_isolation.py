"""Isolation of apps: their own uid (host as root) or a bubblewrap sandbox, file modes of the
host's state, limits (memory, pids, cpu, nofile) with the mechanism reported, and the
out-of-memory reason.  Real hosts, real app processes, real cgroups where the machine has them.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bolt_host.services import cgroups
from bolt_host.services.envnames import caller_env_problem, declared_names, refusal
from bolt_host.services.limits import LimitError, check_limits, format_bytes, parse_memory
from bolt_host.services.sandbox import UID
from bolt_host.services.stats import TreeSampler
from bolt_host.testing import RunningHost, running_host
from tests.helpers import async_wait_until, write_package
from tests.test_market_support import app_get, market_host

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="a uid per app needs the host to run as root (as CI does)")


def write_app(repo: Path, name: str, script: str, **bolt: Any) -> None:
    folder = repo / name
    folder.mkdir(parents=True)
    bolt = {"main": "app.py", "server": False, "restart": "never", **bolt}
    manifest = {"name": name, "version": "1.0.0", "bolt": bolt}
    (folder / "package.json").write_text(json.dumps(manifest))
    (folder / "app.py").write_text(textwrap.dedent(script))


@pytest.fixture
async def iso(tmp_path: Path) -> AsyncIterator[RunningHost]:
    repo = tmp_path / "repo"
    repo.mkdir()
    async with running_host(tmp_path / "data", local_repo=repo, stop_grace_seconds=2.0) as running:
        running.host.state["test-repo"] = repo
        yield running


async def install_and_start(bolt: RunningHost, name: str) -> dict[str, Any]:
    installed = await bolt.admin.post("/api/apps/local", json={"path": name})
    assert installed.status_code == 201, installed.text
    started = await bolt.admin.post("/api/apps/start", json={"name": name})
    assert started.status_code == 200, started.text
    return started.json()["body"]


def require_cgroups(bolt: RunningHost) -> cgroups.CgroupSupport:
    support = bolt.host.isolation.support
    if not {"memory", "pids", "cpu"} <= support.limited:
        pytest.skip("this machine gives the host no memory/pids/cpu cgroups")
    return support


def log_of(bolt: RunningHost, name: str) -> str:
    path = bolt.host.settings.data_dir / "logs" / "apps" / f"{name}.log"
    return path.read_text(errors="replace") if path.exists() else ""


async def wait_for_line(bolt: RunningHost, name: str, marker: str, timeout: float = 30.0) -> str:
    await async_wait_until(lambda: marker in log_of(bolt, name), timeout=timeout, what=f"{marker} in {name}'s log")
    return log_of(bolt, name)


PROBE = """
    import os, sys
    data_dir = os.environ["DATA_DIR"]
    def attempt(label, action):
        try:
            action()
            print(label, "ALLOWED", flush=True)
        except OSError as exc:
            print(label, "DENIED", type(exc).__name__, flush=True)
    attempt("read-db", lambda: open(os.path.join(data_dir, "db.json")).read())
    attempt("read-runtime", lambda: open(os.path.join(data_dir, "runtime.json")).read())
    attempt("read-password", lambda: open(os.path.join(data_dir, "initial-admin-password")).read())
    attempt("list-other-app", lambda: os.listdir(os.path.join(data_dir, "apps", "other")))
    attempt("read-other-app", lambda: open(os.path.join(data_dir, "apps", "other", "package.json")).read())
    attempt("list-logs", lambda: os.listdir(os.path.join(data_dir, "logs")))
    attempt("list-databases", lambda: os.listdir(os.path.join(data_dir, "databases")))
    attempt("write-own-code", lambda: open("planted.js", "w").write("x"))
    attempt("write-data-dir", lambda: open(os.path.join(data_dir, "planted"), "w").write("x"))
    attempt("read-own-code", lambda: open("package.json").read())
    home = os.environ["BOLT_APP_DATA"]
    attempt("write-own-data", lambda: open(os.path.join(home, "mine.txt"), "w").write("x"))
    print("HOME-IS-DATA", os.environ["HOME"] == home, "UID", os.getuid(), "GID", os.getgid(), flush=True)
    print("PROBE-DONE", flush=True)
"""


def probe_results(log: str) -> dict[str, str]:
    return {line.split()[0]: line.split()[1] for line in log.splitlines() if " ALLOWED" in line or " DENIED" in line}


@needs_root
async def test_an_app_cannot_read_the_hosts_state_or_another_app_and_writes_only_its_data(iso: RunningHost) -> None:
    repo, data_dir = iso.host.state["test-repo"], iso.host.settings.data_dir
    write_app(repo, "other", "print('other')\n")
    write_app(repo, "probe", PROBE, env={"DATA_DIR": str(data_dir)})
    assert (await iso.admin.post("/api/apps/local", json={"path": "other"})).status_code == 201
    await iso.admin.post("/api/apps/start", json={"name": "other"})  # its code is handed to its own gid
    await install_and_start(iso, "probe")
    log = await wait_for_line(iso, "probe", "PROBE-DONE")
    results = probe_results(log)
    assert results == {
        "read-db": "DENIED",
        "read-runtime": "DENIED",
        "read-password": "DENIED",
        "list-other-app": "DENIED",
        "read-other-app": "DENIED",
        "list-logs": "DENIED",
        "list-databases": "DENIED",
        "write-own-code": "DENIED",
        "write-data-dir": "DENIED",
        "read-own-code": "ALLOWED",
        "write-own-data": "ALLOWED",
    }, log
    app = (await iso.admin.get("/api/apps/probe")).json()["body"]
    uid = app["confinement"]["uid"]
    assert app["confinement"]["mode"] == UID and app["isolation"] is True
    assert f"HOME-IS-DATA True UID {uid} GID {uid}" in log
    other_uid = (await iso.admin.get("/api/apps/other")).json()["body"]["confinement"]["uid"]
    assert other_uid != uid and min(uid, other_uid) >= iso.host.settings.app_uid_range[0]
    home = Path(app["confinement"]["dataFolder"])
    assert (home / "mine.txt").stat().st_uid == uid and stat.S_IMODE(home.stat().st_mode) == 0o700


@needs_root
async def test_host_state_files_are_0600_and_its_folders_0700(iso: RunningHost) -> None:
    data_dir = iso.host.settings.data_dir
    iso.host.runtime_state.commit_now()
    for name in ("db.json", "runtime.json", "initial-admin-password", "secret.key"):
        if (data_dir / name).exists():
            assert stat.S_IMODE((data_dir / name).stat().st_mode) == 0o600, name
    for name in ("logs", "databases", "cache", "uploads", "public"):
        assert stat.S_IMODE((data_dir / name).stat().st_mode) == 0o700, name
    for name in (".", "apps", "home"):  # passable to reach an app's own folders, not listable
        assert stat.S_IMODE((data_dir / name).stat().st_mode) == 0o711, name


@needs_root
async def test_an_admin_can_opt_an_app_out_and_only_an_admin(iso: RunningHost) -> None:
    repo = iso.host.state["test-repo"]
    write_app(repo, "trusted", "import os; print('RUNS-AS', os.getuid(), flush=True)\n")
    assert (await iso.admin.post("/api/apps/local", json={"path": "trusted"})).status_code == 201
    anonymous = await iso.client.put("/api/apps/trusted", json={"isolation": False})
    assert anonymous.status_code == 401
    changed = await iso.admin.put("/api/apps/trusted", json={"isolation": False})
    assert changed.status_code == 200 and changed.json()["body"]["isolation"] is False
    await iso.admin.post("/api/apps/start", json={"name": "trusted"})
    assert "RUNS-AS 0" in await wait_for_line(iso, "trusted", "RUNS-AS")
    app = (await iso.admin.get("/api/apps/trusted")).json()["body"]
    assert app["confinement"]["mode"] == "off" and app["confinement"]["uid"] is None
    bad = await iso.admin.put("/api/apps/trusted", json={"isolation": "no"})
    assert bad.status_code == 400


@needs_root
async def test_uids_are_stable_across_restarts_and_upgrades_and_freed_on_delete(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_app(repo, "keeper", "print('keeper')\n")
    write_app(repo, "second", "print('second')\n")
    async with running_host(tmp_path / "data", local_repo=repo) as bolt:
        await install_and_start(bolt, "keeper")
        uid = (await bolt.admin.get("/api/apps/keeper")).json()["body"]["confinement"]["uid"]
        (bolt.host.isolation.home_of("keeper") / "kept.txt").write_text("mine")
        await bolt.admin.post("/api/apps/local", json={"path": "keeper", "upgrade": True})
        assert (await bolt.admin.get("/api/apps/keeper")).json()["body"]["confinement"]["uid"] == uid
    async with running_host(tmp_path / "data", local_repo=repo) as bolt:
        assert (await bolt.admin.get("/api/apps/keeper")).json()["body"]["confinement"]["uid"] == uid
        await install_and_start(bolt, "second")
        second_uid = (await bolt.admin.get("/api/apps/second")).json()["body"]["confinement"]["uid"]
        assert second_uid != uid
        deleted = await bolt.admin.request("DELETE", "/api/apps/keeper", json={"deleteSourceFolder": True})
        assert deleted.status_code == 200
        kept = bolt.host.isolation.home_of("keeper")
        assert kept.stat().st_uid == 0 and (kept / "kept.txt").stat().st_uid == 0  # not readable by the next owner
        write_app(repo, "third", "print('third')\n")
        await install_and_start(bolt, "third")
        assert (await bolt.admin.get("/api/apps/third")).json()["body"]["confinement"]["uid"] == uid  # reused


FORK_BOMB = """
    import os, signal
    print("BOMB-START", flush=True)
    refused = 0
    children = []
    for _ in range(400):
        try:
            pid = os.fork()
        except OSError:
            refused += 1
            continue
        if pid == 0:
            signal.pause()  # held until the test's stop kills the tree
            os._exit(0)
        children.append(pid)
    print("BOMB-FORKED", len(children), "REFUSED", refused, flush=True)
    signal.pause()
"""


@needs_root
async def test_a_fork_bomb_under_pids_64_stays_bounded_while_the_host_answers(iso: RunningHost) -> None:
    support = require_cgroups(iso)
    write_app(iso.host.state["test-repo"], "bomb", FORK_BOMB, limits={"pids": 64})
    await install_and_start(iso, "bomb")
    log = await wait_for_line(iso, "bomb", "BOMB-FORKED")
    forked = int(log.split("BOMB-FORKED")[1].split()[0])
    assert forked < 64 and "REFUSED 0" not in log
    health = await iso.client.get("/-/health")
    assert health.status_code == 200 and health.json()["body"]["isolation"]["mechanisms"]["pids"].startswith("cgroup")
    cgroup = iso.host.supervisor._apps["bomb"].confinement.cgroup
    assert 0 < len(cgroup.members()) <= 64
    app = (await iso.admin.get("/api/apps/bomb")).json()["body"]
    assert app["confinement"]["limits"]["pids"] == 64
    assert app["confinement"]["mechanisms"]["pids"] == support.label
    stopped = await iso.admin.post("/api/apps/stop", json={"name": "bomb"})
    assert stopped.status_code == 200 and stopped.json()["body"]["status"] == "stopped"
    assert not cgroup.members()


HOG = """
    import time
    print("HOG-START", flush=True)
    chunks = []
    while True:
        chunks.append(bytearray(16 * 1024 * 1024))
        for index in range(0, len(chunks[-1]), 4096):
            chunks[-1][index] = 1
        print("HOLDING", 16 * len(chunks), "MiB", flush=True)
"""


@needs_root
async def test_an_app_over_its_memory_limit_stops_with_the_out_of_memory_reason(iso: RunningHost) -> None:
    require_cgroups(iso)
    seen: list[tuple[str, Any]] = []
    iso.host.events.subscribe(lambda event: seen.append((event.name, event.body)))
    write_app(iso.host.state["test-repo"], "hog", HOG, limits={"memory": "128MiB"})
    assert (await iso.admin.post("/api/apps/local", json={"path": "hog"})).status_code == 201
    await iso.admin.post("/api/apps/start", json={"name": "hog"})
    reason = "out of memory (limit 128 MiB)"

    def crashed() -> dict[str, Any] | None:
        context = iso.host.supervisor.context("hog")
        return context if context and context["status"] in {"crashed", "failed"} else None

    context = await async_wait_until(crashed, timeout=60, what="the hog to be killed")
    assert context["reason"].startswith(reason), context
    await async_wait_until(lambda: any(name == "app-crashed" for name, _ in seen), what="the app-crashed event")
    app = (await iso.admin.get("/api/apps/hog")).json()["body"]
    assert app["lastExit"]["reason"].startswith(reason) and app["confinement"]["limits"]["memory"] == "128 MiB"
    assert any(name == "app-crashed" and body["reason"].startswith(reason) for name, body in seen)
    assert reason in log_of(iso, "hog")
    holding = [int(line.split()[1]) for line in log_of(iso, "hog").splitlines() if line.startswith("HOLDING")]
    assert max(holding) <= 128


SPINNER = """
    import time
    print("SPIN-START", flush=True)
    while True:
        pass
"""


@needs_root
async def test_a_cpu_bound_app_under_cpu_half_gets_about_half_a_core(iso: RunningHost) -> None:
    require_cgroups(iso)
    write_app(iso.host.state["test-repo"], "spinner", SPINNER, limits={"cpu": 0.5})
    await install_and_start(iso, "spinner")
    await wait_for_line(iso, "spinner", "SPIN-START")
    cgroup = iso.host.supervisor._apps["spinner"].confinement.cgroup
    folder = cgroup.dirs.get("cpu") or cgroup.dirs["unified"]

    def periods() -> int:
        """Enforcement periods (100 ms each) the kernel counted while the spinner was runnable."""
        return int(dict(line.split() for line in (folder / "cpu.stat").read_text().splitlines())["nr_periods"])

    # Periods are counted only under a cpu limit: without one this wait fails.
    await async_wait_until(lambda: periods() >= 1, timeout=30, what="the cpu limit's first period")
    periods_before, (cpu_before, _) = periods(), cgroup.usage()
    await async_wait_until(lambda: periods() >= periods_before + 20, timeout=60, what="twenty more periods")
    periods_after, (cpu_after, _) = periods(), cgroup.usage()
    share = (cpu_after - cpu_before) / ((periods_after - periods_before) * 0.1)
    # About half a core: never more (plus one period's slack); less only when the machine is busy.
    assert 0 < share <= 0.6, share


NOFILE = """
    import os, resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    opened = []
    try:
        while len(opened) < 5000:
            opened.append(os.open("/dev/null", os.O_RDONLY))
    except OSError as exc:
        print("NOFILE", soft, hard, "OPENED", len(opened), "ERR", exc.errno, flush=True)
"""


async def test_nofile_bounds_the_open_files_of_an_app(iso: RunningHost) -> None:
    write_app(iso.host.state["test-repo"], "files", NOFILE, limits={"nofile": 256})
    await install_and_start(iso, "files")
    log = await wait_for_line(iso, "files", "NOFILE")
    words = log.split("NOFILE")[1].split()
    assert words[0] == words[1] == "256" and int(words[3]) < 256 and words[5] == "24"  # EMFILE
    app = (await iso.admin.get("/api/apps/files")).json()["body"]
    assert app["confinement"]["mechanisms"]["nofile"] == "rlimit"


ESCAPER = """
    import os, signal
    child = os.fork()
    if child == 0:
        os.setsid()
        if os.fork() == 0:
            # a grandchild that left the group and dropped the host's marker variable
            os.execve("/bin/sleep", ["sleep", "600"], {})
        os._exit(0)
    os.waitpid(child, 0)  # the grandchild exists once its parent is gone
    print("ESCAPED", flush=True)
    signal.pause()
"""


@needs_root
async def test_stop_kills_a_double_forked_child_that_dropped_its_marker(iso: RunningHost) -> None:
    require_cgroups(iso)
    write_app(iso.host.state["test-repo"], "escaper", ESCAPER)
    context = await install_and_start(iso, "escaper")
    await wait_for_line(iso, "escaper", "ESCAPED")
    cgroup = iso.host.supervisor._apps["escaper"].confinement.cgroup
    escaped = [pid for pid in cgroup.members() if pid != context["pid"]]
    assert escaped and all(os.getsid(pid) != context["pid"] for pid in escaped)
    sampler = TreeSampler()  # stats count the whole cgroup, the escaper too, from the kernel's counters
    usage, _ = sampler.sample({"escaper": context["pid"]}, {}, {"escaper": cgroup})
    assert usage["escaper"].processes == 1 + len(escaped) and usage["escaper"].memory > 0
    passes = iso.host.supervisor._snapshots.passes
    stopped = await iso.admin.post("/api/apps/stop", json={"name": "escaper"})
    assert stopped.status_code == 200
    for pid in escaped:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    if iso.host.isolation.mode == "uid":  # a uid of its own cannot leave its group: the tree is read there
        assert iso.host.supervisor._snapshots.passes == passes


async def test_limits_from_manifest_admin_and_host_defaults(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_app(repo, "limited", "print('x')\n", limits={"memory": "256MiB", "pids": 32})
    async with running_host(tmp_path / "data", local_repo=repo, limit_nofile=512, limit_pids=100) as bolt:
        preview = (await bolt.admin.post("/api/apps/local-package", json={"path": "limited"})).json()["body"]
        assert preview["_isolation"]["limits"] == {"memory": "256 MiB", "pids": 32, "nofile": 512}
        assert preview["_isolation"]["mode"] == bolt.host.isolation.mode  # how it would run, before installing
        assert (await bolt.admin.post("/api/apps/local", json={"path": "limited"})).status_code == 201
        shown = (await bolt.admin.get("/api/apps/limited")).json()["body"]["confinement"]["limits"]
        assert shown == {"memory": "256 MiB", "pids": 32, "nofile": 512}
        overrides = {"memory": None, "cpu": 0.25}
        changed = await bolt.admin.put("/api/apps/limited", json={"limits": overrides})
        assert changed.status_code == 200
        shown = (await bolt.admin.get("/api/apps/limited")).json()["body"]["confinement"]["limits"]
        assert shown == {"pids": 32, "nofile": 512, "cpu": 0.25}
        for bad in ({"memory": "lots"}, {"pids": 0}, {"cpu": -1}, {"swap": 1}, "128MiB"):
            refused = await bolt.admin.put("/api/apps/limited", json={"limits": bad})
            assert refused.status_code == 400, bad
        assert (await bolt.admin.get("/api/apps/limited")).json()["body"]["adminLimits"] == overrides
        await bolt.admin.post("/api/apps/local", json={"path": "limited", "upgrade": True})
        assert (await bolt.admin.get("/api/apps/limited")).json()["body"]["adminLimits"] == overrides
    write_app(repo, "broken", "print('x')\n", limits={"memory": "12 parsecs"})
    async with running_host(tmp_path / "data2", local_repo=repo) as bolt:
        refused = await bolt.admin.post("/api/apps/local", json={"path": "broken"})
        assert refused.json()["code"] == 418 and "bolt.limits memory" in refused.text


def test_limit_values_are_parsed_strictly() -> None:
    assert parse_memory("128MiB") == 128 * 1024 * 1024 and parse_memory("1GB") == 10**9
    assert format_bytes(128 * 1024 * 1024) == "128 MiB" and format_bytes(1536 * 1024 * 1024) == "1.5 GiB"
    assert check_limits({"cpu": 0.5, "pids": 64, "nofile": 1024}) == {"cpu": 0.5, "pids": 64, "nofile": 1024}
    for bad in ({"memory": "1KiB"}, {"pids": True}, {"nofile": 1.5}, {"cpu": "half"}):
        with pytest.raises(LimitError):
            check_limits(bad)


BWRAP_PROBE = PROBE.replace('"PROBE-DONE"', '"HOST-TMP-SEEN", os.path.exists(os.environ["HOST_TMP"]), "PROBE-DONE"')


@pytest.mark.skipif(not Path("/usr/bin/bwrap").exists() and not any(
    (Path(p) / "bwrap").exists() for p in os.environ.get("PATH", "").split(":")), reason="bubblewrap is not installed")
async def test_under_bubblewrap_the_data_dir_is_hidden_except_the_apps_own_folders(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_app(repo, "other", "print('other')\n")
    async with running_host(tmp_path / "data", local_repo=repo, isolation="bwrap") as bolt:
        data_dir = bolt.host.settings.data_dir
        write_app(repo, "probe", BWRAP_PROBE, env={"DATA_DIR": str(data_dir), "HOST_TMP": str(repo)})
        assert (await bolt.admin.post("/api/apps/local", json={"path": "other"})).status_code == 201
        await install_and_start(bolt, "probe")
        log = await wait_for_line(bolt, "probe", "PROBE-DONE")
        results = probe_results(log)
        allowed = {key for key, value in results.items() if value == "ALLOWED"}
        assert allowed == {"read-own-code", "write-own-data"}, log
        assert "HOST-TMP-SEEN False" in log  # a private /tmp
        assert not (data_dir / "planted").exists()
        assert (bolt.host.isolation.home_of("probe") / "mine.txt").exists()
        app = (await bolt.admin.get("/api/apps/probe")).json()["body"]
        assert app["confinement"]["mode"] == "bwrap" and app["confinement"]["uid"] is None


def test_loader_shell_and_proxy_variables_are_always_refused() -> None:
    refused = ["LD_PRELOAD", "LD_LIBRARY_PATH", "BASH_ENV", "ENV", "SHELLOPTS", "PS4", "PYTHONPATH",
               "PYTHONSTARTUP", "NODE_OPTIONS", "http_proxy", "HTTPS_PROXY", "All_Proxy", "no_proxy"]
    for name in refused:
        assert refusal(name), name
        assert caller_env_problem([name], {name}).startswith(f"The env {name} cannot be set"), name
    assert refusal("GREETING") is None and caller_env_problem(["GREETING"], {"GREETING"}) is None
    assert "not declared" in caller_env_problem(["SECRET_URL"], {"GREETING"})
    assert declared_names({"env": {"A": "1"}, "envs": [{"envName": "B"}, {"env_name": "C"}, "junk"]}) == {"A", "B", "C"}


def test_callers_may_set_only_declared_envs_and_never_refused_ones(tmp_path: Path) -> None:
    with market_host(tmp_path) as market:
        admin = market.admin
        install = {"source": "market.bolt", "app_name": "env-echo", "version": "1.0.0", "sync": True}
        for name in ("https_proxy", "BASH_ENV", "NODE_OPTIONS", "UNDECLARED_NAME"):
            envs = [{"envName": "GREETING", "value": "hi"}, {"envName": name, "value": "x"}]
            refused = admin.post("/apps/env-echo/install", json={**install, "envs": envs})
            assert refused.status_code == 400, (name, refused.text)
            assert name in refused.json()["message"]
            if name != "UNDECLARED_NAME":
                assert admin.put("/apps/env-echo/config", json={"envs": envs}).status_code == 400
        assert '"env-echo"' not in admin.get("/market/statesimple").text  # nothing was installed
        greeting = [{"envName": "GREETING", "value": "hi"}]
        installed = admin.post("/apps/env-echo/install", json={**install, "envs": greeting})
        assert installed.status_code == 200, installed.text
        assert app_get(market, "env-echo")["GREETING"] == "hi"


@needs_root
async def test_an_install_step_runs_as_the_apps_uid_and_writes_only_what_it_is_given(iso: RunningHost) -> None:
    repo, data_dir = iso.host.state["test-repo"], iso.host.settings.data_dir
    write_app(repo, "builder", "print('built')\n")
    assert (await iso.admin.post("/api/apps/local", json={"path": "builder"})).status_code == 201
    app = iso.host.apps.require("builder")
    staged = data_dir / "apps" / ".staging-test" / "package"
    staged.mkdir(parents=True)
    staged.parent.chmod(0o700)  # as tempfile.mkdtemp makes a staging dir
    isolation = iso.host.isolation
    uid = isolation.assign(app)
    script = f"id -u; touch {staged}/node_modules_marker; cat {data_dir}/db.json; touch {data_dir}/apps/planted"
    argv = isolation.wrap_command(app, ["/bin/sh", "-c", script], writable=[staged])
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, env={"PATH": os.defpath})
    assert done.stdout.split()[0] == str(uid)
    assert (staged / "node_modules_marker").stat().st_uid == uid
    assert "Permission denied" in done.stderr and not (data_dir / "apps" / "planted").exists()
    assert '"users"' not in done.stdout
    isolation.share_code(app, staged)  # before the app runs: its code is no longer its own to change
    assert (staged / "node_modules_marker").stat().st_uid == 0
    assert stat.S_IMODE(staged.stat().st_mode) == 0o750 and staged.stat().st_gid == uid


async def test_an_admin_sets_only_declared_env_names_and_never_refused_ones(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    script = "import os; print('GREETING=' + os.environ.get('GREETING', '-'), flush=True)\n"
    write_app(repo, "greeter", script, env={"GREETING": "hello", "LD_PRELOAD": "x"})
    async with running_host(tmp_path / "data", local_repo=repo) as bolt:
        assert (await bolt.admin.post("/api/apps/local", json={"path": "greeter"})).status_code == 201
        for env in ({"UNDECLARED": "x"}, {"LD_PRELOAD": "/tmp/x.so"}, {"GREETING": 5}, [], {}):
            refused = await bolt.admin.put("/api/apps/greeter", json={"env": env})
            assert refused.status_code == 400, env
        refused = await bolt.admin.put("/api/apps/greeter", json={"env": {"LD_PRELOAD": "/tmp/x.so"}})
        assert "LD_PRELOAD cannot be set" in refused.json()["error"]["message"]
        assert (await bolt.admin.get("/api/apps/greeter")).json()["body"]["adminEnv"] == []
        changed = await bolt.admin.put("/api/apps/greeter", json={"env": {"GREETING": "secret-bonjour"}})
        assert changed.status_code == 200 and "secret-bonjour" not in changed.text
        shown = await bolt.admin.get("/api/apps/greeter")
        assert shown.json()["body"]["adminEnv"] == ["GREETING"] and "secret-bonjour" not in shown.text
        await bolt.admin.post("/api/apps/start", json={"name": "greeter"})
        assert "GREETING=secret-bonjour" in await wait_for_line(bolt, "greeter", "GREETING=")


LIMITS_PROBE_JS = """
const limits = require('fs').readFileSync('/proc/self/limits', 'utf8');
const line = limits.split('\\n').find((l) => l.startsWith('Max address'));
console.log('NODE-UP ' + line.split(/\\s{2,}/)[1]);
"""
LIMITS_PROBE_PY = """
    line = next(l for l in open("/proc/self/limits") if l.startswith("Max address"))
    print("PY-UP", line.split()[3], flush=True)
"""


async def test_without_cgroups_memory_is_an_address_space_limit_for_python_and_none_for_node(
    iso: RunningHost,
) -> None:
    """V8 hangs or aborts ("Failed to reserve virtual memory for CodeRange") under an address-space
    limit of 128-512 MiB, so a Node app must not get one; a Python app does.  The host is given no
    cgroups, as on a machine without them."""
    iso.host.isolation.support = cgroups.NO_CGROUPS
    repo = iso.host.state["test-repo"]
    bolt = {"main": "app.js", "server": False, "restart": "never", "limits": {"memory": "128MiB"}}
    manifest = {"name": "node-mem", "version": "1.0.0", "bolt": bolt}
    write_package(repo / "node-mem", manifest, {"app.js": LIMITS_PROBE_JS})
    write_app(repo, "py-mem", LIMITS_PROBE_PY, limits={"memory": "128MiB"})
    await install_and_start(iso, "node-mem")
    await install_and_start(iso, "py-mem")
    assert "NODE-UP unlimited" in await wait_for_line(iso, "node-mem", "NODE-UP")
    assert f"PY-UP {128 * 1024 * 1024}" in await wait_for_line(iso, "py-mem", "PY-UP")
    node = (await iso.admin.get("/api/apps/node-mem")).json()["body"]["confinement"]["mechanisms"]
    python = (await iso.admin.get("/api/apps/py-mem")).json()["body"]["confinement"]["mechanisms"]
    assert node["memory"].startswith("not enforced (needs cgroups") and python["memory"] == "rlimit (address space)"
    health = (await iso.admin.get("/-/health")).json()["body"]["isolation"]["mechanisms"]
    assert health["memory"] == "rlimit (address space) for Python apps, none for others"


async def test_an_apps_cgroup_stays_between_its_runs_and_goes_with_the_app(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    write_app(repo, "sleeper", 'import signal\nprint("UP", flush=True)\nsignal.pause()\n')
    write_app(repo, "kept", 'import signal\nprint("UP", flush=True)\nsignal.pause()\n')
    async with running_host(tmp_path / "data", local_repo=repo, stop_grace_seconds=2.0) as bolt:
        support = require_cgroups(bolt)
        for name in ("sleeper", "kept"):
            await install_and_start(bolt, name)
            await wait_for_line(bolt, name, "UP")
        group = support.group("sleeper")
        assert group is not None and group.members()
        assert (await bolt.admin.post("/api/apps/stop", json={"name": "sleeper"})).status_code == 200
        assert all(folder.is_dir() for folder in group.dirs.values()) and not group.members()  # kept, empty
        again = await install_and_start_again(bolt, "sleeper")
        await async_wait_until(lambda: again["pid"] in group.members(), what="the next run in the same group")
        assert (await bolt.admin.delete("/api/apps/sleeper")).status_code == 200
        assert not any(folder.exists() for folder in group.dirs.values())  # deleted with the app
        kept = support.group("kept")
        assert kept is not None and kept.members()
    assert not any(folder.exists() for folder in kept.dirs.values())  # host shut down: nothing runs in it


async def install_and_start_again(bolt: RunningHost, name: str) -> dict[str, Any]:
    started = await bolt.admin.post("/api/apps/start", json={"name": name})
    assert started.status_code == 200, started.text
    return started.json()["body"]


def joined_files(argv: list[str]) -> list[str]:
    """The cgroup files an app's spawn argv joins: the exec helper's ``--join=FILE`` options, or
    the joining shell's arguments (the chain)."""
    if "bolt-join" in argv:
        return argv[argv.index("bolt-join") + 1 : argv.index("--")]
    return [part.removeprefix("--join=") for part in argv[: argv.index("--")] if part.startswith("--join=")]


FORKER = """
    import os, signal
    child = os.fork()
    if child == 0:
        signal.pause()
        os._exit(0)
    print("FORKED", child, flush=True)
    signal.pause()
"""


async def test_an_app_and_what_it_forks_are_in_every_hierarchy_of_its_group(iso: RunningHost) -> None:
    """The shell that joins writes 0 (itself) to each join file, in v1 the thread's ``tasks``
    (no global lock, no RCU grace period on the restart path): the whole process moves, and
    everything it execs and forks stays in each hierarchy's group."""
    support = require_cgroups(iso)
    write_app(iso.host.state["test-repo"], "forker", FORKER)
    context = await install_and_start(iso, "forker")
    child = int((await wait_for_line(iso, "forker", "FORKED")).split("FORKED")[1].split()[0])
    group = support.group("forker")
    assert group is not None
    argv = iso.host.supervisor._apps["forker"].confinement.argv
    assert [str(path) for path in group.join_files()] == joined_files(argv)
    if support.version == "v1":
        assert all(Path(path).name == "tasks" for path in group.join_files())
    for pid in (context["pid"], child):
        assert all(pid in {int(line) for line in (folder / "cgroup.procs").read_text().split()}
                   for folder in group.dirs.values()), (pid, group.dirs)
    assert (await iso.admin.post("/api/apps/stop", json={"name": "forker"})).status_code == 200
    assert not group.members()
