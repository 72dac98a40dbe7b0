"""The remote CLI (apps, tasks, users, login) against a real host on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import pytest
from click.testing import CliRunner, Result

from bolt_host import errors
from bolt_host.cli import main
from bolt_host.cli_apps import split_spec
from bolt_host.config import BUNDLED_LOCAL_REPO
from bolt_host.services.extract import pack_directory
from bolt_host.testing import ADMIN_PASSWORD
from tests.helpers import end_process, free_port
from tests.registry_server import RegistryServer
from tests.robot_support import GatedTarballs, make_package, publish_gated
from tests.servers import LiveServer, live_host

FIXTURE_APPS = Path(__file__).parent / "fixtures" / "apps"
pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No BOLT_* from the outside, and a private config dir."""
    for key in list(os.environ):
        if key.startswith("BOLT_"):
            monkeypatch.delenv(key)
    config_home = tmp_path / "config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config_home))
    return config_home


@pytest.fixture
def live(tmp_path: Path, clean_env: Path) -> Iterator[LiveServer]:
    repo = tmp_path / "repo"
    shutil.copytree(BUNDLED_LOCAL_REPO, repo)
    shutil.copytree(FIXTURE_APPS / "echo", repo / "echo")
    with live_host(tmp_path / "data", local_repo=repo, stop_grace_seconds=5.0) as server:
        try:
            yield server
        finally:
            _kill_leftovers(server)


def _kill_leftovers(server: LiveServer) -> None:
    """Anything a failed test left running, by pid."""
    for context in server.host.supervisor.contexts():
        pid = context.get("pid")
        if pid and psutil.pid_exists(pid):
            os.kill(pid, signal.SIGKILL)


def run(*args: str, env: dict[str, str] | None = None, input: str | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env, input=input, catch_exceptions=False)


def admin_env(live: LiveServer) -> dict[str, str]:
    return {"BOLT_URL": live.url, "BOLT_USER": "admin", "BOLT_PASSWORD": ADMIN_PASSWORD}


def ok_json(result: Result) -> Any:
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return json.loads(result.stdout)


def test_split_spec() -> None:
    assert split_spec("notes") == ("notes", None)
    assert split_spec("notes@1.2.0") == ("notes", "1.2.0")
    assert split_spec("@acme/notes") == ("@acme/notes", None)
    assert split_spec("@acme/notes@2.0.0-beta.1") == ("@acme/notes", "2.0.0-beta.1")


def test_login_keeps_a_private_token_that_later_commands_use(live: LiveServer, clean_env: Path) -> None:
    result = run("login", "--url", live.url + "/", "--user", "admin", "--password", ADMIN_PASSWORD)
    assert result.exit_code == 0, result.output
    config_file = clean_env / "bolt-host" / "config.json"
    assert stat.S_IMODE(config_file.stat().st_mode) == 0o600
    config = json.loads(config_file.read_text())
    assert config["url"] == live.url and config["hosts"][live.url]["user"] == "admin"
    assert ADMIN_PASSWORD not in config_file.read_text()
    me = ok_json(run("whoami", "--json"))  # no flags, no env: the config file
    assert me["name"] == "admin" and me["isAdmin"] is True
    assert run("logout").exit_code == 0
    assert live.url not in json.loads(config_file.read_text())["hosts"]
    refused = run("whoami", "--url", live.url)
    assert refused.exit_code == 1
    assert f"[Bolt code {errors.NOT_LOGGED_IN} (" in refused.stderr
    config["hosts"][live.url]["token"] = "expired-or-forged"
    config_file.write_text(json.dumps(config))
    stale = run("whoami")
    assert stale.exit_code == 1 and "run `bolt-host login` again" in stale.stderr


def test_login_with_a_wrong_password_fails_with_the_api_message(live: LiveServer, clean_env: Path) -> None:
    result = run("login", "--url", live.url, "--user", "admin", "--password", "wrong-password")
    assert result.exit_code == 1
    assert "error: Invalid user name or password [Bolt code 212 (login failed)" in result.stderr
    assert not (clean_env / "bolt-host" / "config.json").exists()


def test_flags_win_over_env_which_wins_over_the_config(live: LiveServer) -> None:
    assert run("login", "--url", live.url, "-u", "admin", "-p", ADMIN_PASSWORD).exit_code == 0
    dead = f"http://127.0.0.1:{free_port()}"
    # env URL is dead, the flag's is live
    flagged = run("whoami", "--url", live.url, "--user", "admin", "--password", ADMIN_PASSWORD, env={"BOLT_URL": dead})
    assert flagged.exit_code == 0, flagged.output
    # env credentials (wrong) beat the stored token
    env_wrong = run("whoami", env={"BOLT_USER": "admin", "BOLT_PASSWORD": "not-the-password"})
    assert env_wrong.exit_code == 1 and f"[Bolt code {errors.LOGIN_FAILED} (" in env_wrong.stderr
    # a bad env token loses to flag credentials
    env_token = run("whoami", "-u", "admin", "-p", ADMIN_PASSWORD, env={"BOLT_TOKEN": "bogus"})
    assert env_token.exit_code == 0, env_token.output
    # ... and is used when no flag says otherwise
    assert run("whoami", env={"BOLT_TOKEN": "bogus"}).exit_code == 1
    # a dead host is exit code 3
    unreachable = run("apps", "list", "--url", dead)
    assert unreachable.exit_code == 3 and "cannot connect" in unreachable.stderr


def test_usage_errors_exit_2(live: LiveServer) -> None:
    env = admin_env(live)
    assert run("apps", "start", env=env).exit_code == 2  # missing NAME
    assert run("apps", "list", "--url", "ftp://nope", env=env).exit_code == 2
    no_password = run("apps", "list", "--url", live.url, "--user", "admin", env={"BOLT_URL": live.url})
    assert no_password.exit_code == 2 and "no password" in no_password.stderr
    unconfirmed = run("apps", "remove", "echo", env=env)
    assert unconfirmed.exit_code == 2 and "--yes" in unconfirmed.stderr


def test_start_and_stop_several_apps_in_one_call(live: LiveServer) -> None:
    env = admin_env(live)
    for path in ("echo", "ticker"):
        assert run("apps", "install-local", path, env=env).exit_code == 0
    started = run("apps", "start", "echo", "ticker", "nosuch", env=env)
    assert started.exit_code == 1, started.stderr  # nosuch is not installed: reported, the others still start
    lines = [line.split()[:2] for line in started.stdout.splitlines()]
    assert lines == [["echo:", "started"], ["ticker:", "started"]]  # one line per name, in the order asked
    assert f"nosuch: ERROR no such app [Bolt code {errors.APP_NOT_FOUND} (app not found)]" in started.stderr
    assert run("apps", "stop", "ticker", env=env).exit_code == 0
    stopped = run("apps", "stop", "echo", "ticker", env=env)
    assert stopped.exit_code == 1 and "echo: stopped" in stopped.stdout  # echo stopped, ticker was not running
    not_running = f"ticker: ERROR App 'ticker' is not running [Bolt code {errors.APP_NOT_RUNNING} (app not running)]"
    assert not_running in stopped.stderr and "hint: `bolt-host apps start NAME` starts it" in stopped.stderr
    assert live.host.supervisor.contexts() == []


def test_app_lifecycle_from_install_to_remove(live: LiveServer) -> None:
    env = admin_env(live)
    installed = ok_json(run("apps", "install-local", "echo", "--json", env=env))
    assert installed["name"] == "echo" and installed["source"]["type"] == "local"
    again = run("apps", "install-local", "echo", env=env)
    assert again.exit_code == 1 and f"[Bolt code {errors.APP_NAME_TAKEN} (app already installed)" in again.stderr
    assert "hint: already installed: use --upgrade to replace it" in again.stderr
    as_json = run("apps", "install-local", "echo", "--json", env=env)
    assert as_json.exit_code == 1 and json.loads(as_json.stdout)["error"]["code"] == errors.APP_NAME_TAKEN

    started = ok_json(run("apps", "start", "echo", "--json", env=env))
    assert started["status"] == "running" and started["port"]
    listed = ok_json(run("apps", "list", "--json", env=env))
    assert [(a["name"], a["context"]["status"]) for a in listed] == [("echo", "running")]
    table = run("apps", "list", env=env)
    assert table.exit_code == 0
    header, row = table.stdout.splitlines()[:2]
    assert header.split("\t")[:4] == ["NAME", "VERSION", "STATUS", "PORT"]
    assert row.split("\t")[:4] == ["echo", "1.0.0", "running", str(started["port"])]
    shown = run("apps", "show", "echo", env=env)
    assert shown.exit_code == 0 and "running" in shown.stdout

    logs = run("apps", "logs", "echo", env=env)
    assert logs.exit_code == 0 and "echo ready" in logs.stdout
    _follow_log_in_a_subprocess(live, env)

    restarted = ok_json(run("apps", "restart", "echo", "--json", env=env))
    assert restarted["status"] == "running" and restarted["pid"] != started["pid"]
    rolled = ok_json(run("apps", "restart", "echo", "--rolling", "--json", env=env))
    assert rolled["status"] == "running" and rolled["pid"] != restarted["pid"]
    assert "rolling restart" in run("apps", "logs", "echo", env=env).stdout
    scaled = run("apps", "scale", "echo", "2", env=env)
    assert scaled.exit_code == 0 and "echo: 2 instances wanted, 2 running" in scaled.stdout
    header, row = run("apps", "list", env=env).stdout.splitlines()[:2]
    assert dict(zip(header.split("\t"), row.split("\t"), strict=True))["INSTANCES"] == "2/2"  # running/wanted
    assert ok_json(run("apps", "list", "--json", env=env))[0]["instanceCount"] == {"running": 2, "wanted": 2}
    single = ok_json(run("apps", "scale", "echo", "1", "--json", env=env))
    assert [(c["instance"], c["status"]) for c in single] == [(0, "running")]
    stopped = run("apps", "stop", "echo", env=env)
    assert stopped.exit_code == 0 and "echo: stopped" in stopped.stdout
    assert ok_json(run("apps", "list", "--json", env=env))[0]["instanceCount"] is None
    not_running = run("apps", "stop", "echo", env=env)
    assert not_running.exit_code == 1 and f"[Bolt code {errors.APP_NOT_RUNNING} (" in not_running.stderr

    removed = run("apps", "remove", "echo", "--yes", env=env)
    assert removed.exit_code == 0 and "removed echo" in removed.stdout
    assert ok_json(run("apps", "list", "--json", env=env)) == []
    missing = run("apps", "show", "echo", env=env)
    assert missing.exit_code == 1 and f"[Bolt code {errors.APP_NOT_FOUND} (" in missing.stderr
    assert "trace " in missing.stderr


def _follow_log_in_a_subprocess(live: LiveServer, env: dict[str, str]) -> None:
    """``apps logs -f`` prints what is there, then what comes; SIGINT ends it."""
    environ = {**os.environ, **env}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bolt_host", "apps", "logs", "echo", "-f"],
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        _read_until(proc, b"echo ready", timeout=20)
        with _admin_http(live) as client:
            client.get("/x/echo/health?marker=followed-line")
        _read_until(proc, b"followed-line", timeout=20)
    finally:
        end_process(proc, signal.SIGINT, timeout=10)
    assert proc.returncode == 130


def _admin_http(live: LiveServer) -> Any:
    import httpx

    return httpx.Client(base_url=live.url, auth=live.admin_auth, timeout=30)


def _read_until(
    proc: subprocess.Popen[bytes], needle: bytes | re.Pattern[bytes], timeout: float, fd: int | None = None
) -> bytes:
    """Read the process's stdout (or ``fd``, e.g. a pty) until ``needle`` (bytes or a regex) shows up."""
    fd = proc.stdout.fileno() if fd is None else fd  # type: ignore[union-attr]
    seen = b""
    deadline = time.monotonic() + timeout

    def found() -> bool:
        return (needle.search(seen) is not None) if isinstance(needle, re.Pattern) else needle in seen

    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while not found():
            left = deadline - time.monotonic()
            if left <= 0 or (proc.poll() is not None and not selector.select(0)):
                raise AssertionError(f"no {needle!r} in {seen[-500:]!r} (exit {proc.poll()})")
            if selector.select(left):
                try:
                    chunk = os.read(fd, 65536)
                except OSError:  # a pty whose other end has closed
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"output ended without {needle!r}: {seen[-500:]!r}")
                seen += chunk
    return seen


def test_users_of_a_running_host(live: LiveServer) -> None:
    env = admin_env(live)
    added = run("users", "add", "carol", "--new-password", "carol-password", "--role", "admin", env=env)
    assert added.exit_code == 0, added.output
    users = ok_json(run("users", "list", "--json", env=env))
    assert {"admin", "carol"} <= {u["name"] for u in users}
    carol_env = {**env, "BOLT_USER": "carol", "BOLT_PASSWORD": "carol-password"}
    assert ok_json(run("whoami", "--json", env=carol_env))["isAdmin"] is True

    not_hers = run("users", "passwd", "admin", "--new-password", "stolen-password", env=carol_env)
    assert not_hers.exit_code == 2 and "only your own password" in not_hers.stderr
    assert run("whoami", env=env).exit_code == 0  # the admin's password is unchanged
    wrong = run("users", "passwd", "--current-password", "not-it", "--new-password", "carol-password-2", env=carol_env)
    assert wrong.exit_code == 1 and f"[Bolt code {errors.LOGIN_FAILED} (" in wrong.stderr
    changed = run("users", "passwd", "carol", "--new-password", "carol-password-2", env=carol_env)
    assert changed.exit_code == 0 and "password changed for carol" in changed.stdout, changed.output
    carol_env["BOLT_PASSWORD"] = "carol-password-2"
    assert ok_json(run("whoami", "--json", env=carol_env))["name"] == "carol"

    demoted = ok_json(run("users", "roles", "carol", "--json", env=env))
    assert demoted["roles"] == []
    refused = run("apps", "start", "x", env=carol_env)
    assert refused.exit_code == 1 and f"[Bolt code {errors.NO_ADMIN_RIGHT} (" in refused.stderr
    dup = run("users", "add", "carol", "--new-password", "carol-password", env=env)
    assert dup.exit_code == 1 and f"[Bolt code {errors.USER_EXISTS} (" in dup.stderr
    assert run("users", "remove", "carol", env=env).exit_code == 0
    assert "carol" not in {u["name"] for u in ok_json(run("users", "list", "--json", env=env))}
    assert run("remote-users", "list", env=env).exit_code == 2  # one name for the users of a host


def test_logout_without_a_login_writes_no_config_file(live: LiveServer, clean_env: Path) -> None:
    result = run("logout", "--url", live.url)
    assert result.exit_code == 0 and f"no stored login for {live.url}" in result.stdout
    assert not (clean_env / "bolt-host").exists()


def _carried_app(folder: Path, version: str = "1.0.0") -> Path:
    """A copy of hello-web named ``carried``, with things a pack must leave out."""
    app = folder / f"carried-{version}"
    shutil.copytree(BUNDLED_LOCAL_REPO / "hello-web", app)
    manifest = json.loads((app / "package.json").read_text())
    (app / "package.json").write_text(json.dumps({**manifest, "name": "carried", "version": version}))
    (app / "node_modules" / "dep").mkdir(parents=True)
    (app / "node_modules" / "dep" / "index.js").write_text("module.exports = 1;\n")
    (app / "outside-link").symlink_to(folder)
    return app


def test_install_local_uploads_a_folder_or_a_tarball_from_this_machine(
    live: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = admin_env(live)
    folder = _carried_app(tmp_path / "here")
    installed = ok_json(run("apps", "install-local", str(folder), "--system", "--json", env=env))
    assert (installed["name"], installed["version"], installed["system"]) == ("carried", "1.0.0", True)
    assert installed["source"] == {"type": "upload", "filename": "carried-1.0.0.tgz"}
    placed = Path(installed["folder"])
    assert (placed / "package.json").is_file()
    assert not (placed / "node_modules").exists() and not (placed / "outside-link").exists()
    misdirected = run("apps", "install", str(folder), env=env)
    assert misdirected.exit_code == 2 and f"apps install-local {folder}" in misdirected.stderr
    taken = run("apps", "install-local", str(folder), env=env)
    assert taken.exit_code == 1 and f"[Bolt code {errors.APP_NAME_TAKEN} (" in taken.stderr

    newer = pack_directory(_carried_app(tmp_path / "there", "1.0.1"), tmp_path / "carried-1.0.1.tgz")
    upgraded = run("apps", "install-local", str(newer), "--upgrade", env=env)
    assert upgraded.exit_code == 0 and "installed carried 1.0.1 (system app)" in upgraded.stdout

    notes = tmp_path / "notes.txt"
    notes.write_text("not a package")
    not_a_package = run("apps", "install-local", str(notes), env=env)
    assert not_a_package.exit_code == 2 and "neither an app folder nor a package tarball" in not_a_package.stderr
    junk = tmp_path / "junk.tgz"
    junk.write_bytes(b"\x1f\x8b junk")
    broken = run("apps", "install-local", str(junk), env=env)
    assert broken.exit_code == 1 and "Unsafe or broken package" in broken.stderr

    monkeypatch.chdir(tmp_path)
    (tmp_path / "echo").mkdir()  # a folder here with the name of one in the host's repository
    here = run("apps", "install-local", "echo", env=env)
    assert here.exit_code == 2 and "has no package.json" in here.stderr
    from_repo = ok_json(run("apps", "install-local", "echo", "--repo", "--json", env=env))
    assert from_repo["source"] == {"type": "local", "path": "echo"} and from_repo["system"] is False
    assert sorted(a["name"] for a in ok_json(run("apps", "list", "--json", env=env))) == ["carried", "echo"]


@pytest.fixture
def registry() -> Iterator[RegistryServer]:
    with RegistryServer() as server:
        server.publish_tree(BUNDLED_LOCAL_REPO)
        yield server


@pytest.fixture
def live_r(tmp_path: Path, clean_env: Path, registry: RegistryServer) -> Iterator[LiveServer]:
    with live_host(tmp_path / "data", registry=registry.url) as server:
        try:
            yield server
        finally:
            _kill_leftovers(server)


def test_install_from_the_registry_follows_the_task(live_r: LiveServer, registry: RegistryServer) -> None:
    env = admin_env(live_r)
    registry.publish_dir(BUNDLED_LOCAL_REPO / "notes", version="1.1.0")
    result = run("apps", "install", "notes@1.0.0", env=env)
    assert result.exit_code == 0, result.output
    assert "installed notes 1.0.0" in result.stdout
    assert "install notes@1.0.0" in result.stderr  # the progress bar's label
    upgraded = ok_json(run("apps", "install", "notes", "--upgrade", "--json", env=env))
    assert upgraded["version"] == "1.1.0" and upgraded["source"]["type"] == "registry"

    tasks = ok_json(run("tasks", "list", "--kind", "install", "--json", env=env))
    assert [(t["module"], t["status"]) for t in tasks] == [("notes", "succeeded"), ("notes", "succeeded")]
    shown = ok_json(run("tasks", "show", str(tasks[0]["id"]), "--wait", "--json", env=env))
    assert shown["progress"] == 1.0
    log = run("tasks", "log", str(tasks[0]["id"]), "-f", env=env)
    assert log.exit_code == 0 and "=== downloaded" in log.stdout and "succeeded" in log.stdout
    as_json = ok_json(run("tasks", "log", str(tasks[0]["id"]), "-f", "--json", env=env))
    assert as_json == {"id": tasks[0]["id"], "start": 0, "end": len(log.stdout), "more": False, "text": log.stdout}
    tail = ok_json(run("tasks", "log", str(tasks[0]["id"]), "--start", "10", "--json", env=env))
    assert tail["text"] == log.stdout[10:] and tail["start"] == 10
    table = run("tasks", "list", env=env)
    assert table.exit_code == 0 and "succeeded" in table.stdout

    queued = ok_json(run("apps", "install", "ticker", "--no-wait", "--json", env=env))
    assert queued["kind"] == "install" and queued["module"] == "ticker"
    waited = run("tasks", "show", str(queued["id"]), "--wait", env=env)
    assert waited.exit_code == 0 and "succeeded" in waited.stdout

    missing = run("tasks", "show", "9999", env=env)
    assert missing.exit_code == 1 and "No task 9999" in missing.stderr
    assert run("tasks", "cancel", "9999", env=env).exit_code == 1


def test_failed_installs_exit_1_with_the_reason(live_r: LiveServer, registry: RegistryServer) -> None:
    env = admin_env(live_r)
    registry.publish_dir(BUNDLED_LOCAL_REPO / "ticker", version="9.0.0", tamper=True)
    tampered = run("apps", "install", "ticker@9.0.0", env=env)
    assert tampered.exit_code == 1
    assert "failed" in tampered.stderr and "integrity" in tampered.stderr
    ghost = run("apps", "install", "ghost-package", env=env)
    assert ghost.exit_code == 1 and "ghost-package" in ghost.stderr
    bad = run("apps", "install", "Bad Name!", env=env)
    assert bad.exit_code == 1 and f"[Bolt code {errors.APP_NAME_INVALID} (" in bad.stderr
    assert ok_json(run("apps", "list", "--json", env=env)) == []


PERCENT = re.compile(rb"(?<![0-9])([1-9][0-9]?)%")  # 1..99: a bar drawn part-way, not at 0 or 100
HALF_WAY = re.compile(rb"(?<![0-9])40%")  # a gated download holds at half: 0.8 (download share) x 0.5


@contextlib.contextmanager
def in_a_terminal(
    args: list[str], env: dict[str, str], columns: int = 120
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """``bolt-host ARGS`` with stdout and stderr on a pseudo-terminal (rich draws live bars only there)."""
    master, slave = pty.openpty()
    environ = {**os.environ, **env, "TERM": "xterm-256color", "COLUMNS": str(columns), "LINES": "40"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bolt_host", *args], env=environ, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave
    )
    os.close(slave)
    try:
        yield proc, master
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        os.close(master)


def _drawn_percentages(screen: bytes) -> set[int]:
    return {int(m.group(1)) for m in PERCENT.finditer(screen)}


def test_progress_bars_are_drawn_while_a_download_is_half_way(
    live_r: LiveServer, registry: RegistryServer, tmp_path: Path
) -> None:
    env = admin_env(live_r)
    with GatedTarballs() as tarballs:
        first = publish_gated(registry, tarballs, make_package(tmp_path / "pkgs", "slow-one", "1.0.0"))
        with in_a_terminal(["apps", "install", "slow-one", "--system"], env) as (proc, screen):
            tarballs.wait_for_request(first)
            half_way = _read_until(proc, HALF_WAY, timeout=30, fd=screen)  # the download is 80% of the bar
            assert _drawn_percentages(half_way) <= set(range(1, 41))
            assert b"install slow-one [running]" in half_way
            tarballs.release(first)
            done = _read_until(proc, b"installed slow-one 1.0.0 (system app)", timeout=30, fd=screen)
            assert b"100%" in done
            assert proc.wait(timeout=30) == 0
        with _admin_http(live_r) as http:
            assert http.get("/api/apps/slow-one").json()["body"]["system"] is True

        second = publish_gated(registry, tarballs, make_package(tmp_path / "pkgs", "slow-two", "1.0.0"))
        queued = ok_json(run("apps", "install", "slow-two", "--no-wait", "--json", env=env))
        tarballs.wait_for_request(second)
        with in_a_terminal(["tasks", "show", str(queued["id"]), "--wait"], env) as (proc, screen):
            half_way = _read_until(proc, HALF_WAY, timeout=30, fd=screen)
            assert f"task {queued['id']} [running]".encode() in half_way
            tarballs.release(second)
            done = _read_until(proc, re.compile(rb"status\s+succeeded"), timeout=30, fd=screen)
            assert b"100%" in done and f"task {queued['id']} [succeeded]".encode() in done
            assert proc.wait(timeout=30) == 0


ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")


def test_the_tasks_table_fits_80_columns_and_never_cuts_the_name(
    live_r: LiveServer, registry: RegistryServer
) -> None:
    env = admin_env(live_r)
    long_name = "a-rather-long-app-name-x"
    for name in (long_name, "ghost"):
        assert run("apps", "install", name, env=env).exit_code == 1  # not in the registry: a failed task
    failed = ok_json(run("tasks", "list", "--json", env=env))
    assert all(t["status"] == "failed" and len(t["error"]) > 40 for t in failed), failed
    with in_a_terminal(["tasks", "list"], env, columns=80) as (proc, screen):
        assert proc.wait(timeout=30) == 0
        shown = _read_until(proc, b"ghost", timeout=10, fd=screen)
    lines = [ANSI.sub(b"", line).decode() for line in shown.replace(b"\r", b"").split(b"\n")]
    assert max(len(line.rstrip()) for line in lines) <= 80, "\n".join(lines)
    assert any(long_name in line for line in lines)  # whole, never cut
    assert any("failed" in line for line in lines)


def test_logs_by_lines_and_since_with_the_hosts_timestamped_lines(live: LiveServer) -> None:
    env = admin_env(live)
    assert run("apps", "install-local", "echo", env=env).exit_code == 0
    first = ok_json(run("apps", "start", "echo", "--json", env=env))
    assert run("apps", "stop", "echo", env=env).exit_code == 0
    between = datetime.now(UTC)
    second = ok_json(run("apps", "start", "echo", "--json", env=env))
    assert run("apps", "stop", "echo", env=env).exit_code == 0

    whole = run("apps", "logs", "echo", env=env).stdout
    notes = [line.split(" ", 1)[1] for line in whole.splitlines() if " [bolt-host] " in line]
    assert notes[:2] == ["[bolt-host] starting", f"[bolt-host] started (pid {first['pid']}, port {first['port']})"]
    last_two = run("apps", "logs", "echo", "--lines", "2", env=env)
    assert last_two.exit_code == 0 and last_two.stdout == "".join(whole.splitlines(keepends=True)[-2:])
    assert " [bolt-host] stopped" in last_two.stdout.splitlines()[-1]
    assert run("apps", "logs", "echo", "-n", "0", env=env).stdout == ""

    since = run("apps", "logs", "echo", "--since", between.isoformat(), env=env)
    assert since.exit_code == 0
    assert since.stdout.splitlines()[0].endswith("[bolt-host] starting")
    assert f"pid {second['pid']}" in since.stdout and f"pid {first['pid']}" not in since.stdout
    assert run("apps", "logs", "echo", "--since", "1h", env=env).stdout == whole
    bad = run("apps", "logs", "echo", "--since", "yesterday-ish", env=env)
    assert bad.exit_code == 2 and "--since" in bad.stderr


def test_every_command_takes_dash_h_and_shows_examples() -> None:
    for command in (["-h"], ["serve", "-h"], ["apps", "logs", "-h"], ["apps", "start", "-h"], ["tasks", "list", "-h"],
                    ["admin", "users", "add", "-h"], ["registry", "serve", "-h"]):
        shown = run(*command)
        assert shown.exit_code == 0 and "Examples:" in shown.stdout, (command, shown.stdout)
