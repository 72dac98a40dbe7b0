"""`bolt-host serve` refuses bad settings in one line and holds its data dir against other writers.

Every refusal is a real subprocess: one ``Error: ...`` line naming the setting and its value,
no traceback, exit 2, and the data dir exactly as it was (missing stays missing).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import free_port, wait_until

pytestmark = pytest.mark.timeout(90)


def _environ(**env: str) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BOLT_")}
    environ.update(env)
    return environ


def _run_serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bolt_host", "serve", *args],
        env=env or _environ(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def _assert_refused(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.stderr
    for text in expected:
        assert text in lines[0], lines[0]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b"" for p in sorted(folder.rglob("*"))}


def test_a_file_as_data_dir_is_one_line(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    result = _run_serve("--data-dir", str(afile), "--port", str(free_port()))
    _assert_refused(result, "--data-dir", str(afile), "not a directory")
    assert afile.read_text() == "not a folder"


def test_a_data_dir_under_a_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    result = _run_serve("--data-dir", str(tmp_path / "afile" / "data"), "--port", str(free_port()))
    _assert_refused(result, "--data-dir", "afile", "not a directory")


@pytest.fixture
def readonly_folder(tmp_path: Path) -> Iterator[tuple[Path, list[str]]]:
    """A folder the serving user cannot write, and a command prefix that runs the host so.

    root writes through any mode bits, so as root the host runs in a mount namespace where
    the folder is a read-only bind mount.
    """
    folder = tmp_path / "ro"
    folder.mkdir()
    (folder / "keep.txt").write_text("kept")
    prefix: list[str] = []
    if os.geteuid() == 0:
        script = 'mount --bind "$0" "$0" && mount -o remount,ro,bind "$0" && exec "$@"'
        prefix = ["unshare", "--mount", "sh", "-c", script, str(folder)]
        probe = subprocess.run([*prefix, "touch", str(folder / "probe")], capture_output=True, text=True)
        if "Read-only" not in probe.stderr:
            pytest.skip(f"cannot make a read-only folder for root here: {probe.stderr.strip()}")
    else:
        folder.chmod(0o555)
    try:
        yield folder, prefix
    finally:
        folder.chmod(0o755)


def test_an_unwritable_data_dir_is_one_line(readonly_folder: tuple[Path, list[str]]) -> None:
    folder, prefix = readonly_folder
    before = _snapshot(folder)
    serve = [*prefix, sys.executable, "-m", "bolt_host", "serve", "--port", str(free_port()), "--data-dir"]
    result = subprocess.run([*serve, str(folder)], env=_environ(), capture_output=True, text=True, timeout=60)
    _assert_refused(result, "--data-dir", str(folder), "not writable")
    missing = folder / "new"
    result = subprocess.run([*serve, str(missing)], env=_environ(), capture_output=True, text=True, timeout=60)
    _assert_refused(result, "--data-dir", str(missing), "cannot be created")
    assert _snapshot(folder) == before


def test_a_backwards_port_range_is_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    result = _run_serve("--data-dir", str(data), "--port", str(free_port()), "--port-range", "5-2")
    _assert_refused(result, "--port-range", "5-2")
    assert not data.exists()


def test_a_bad_setting_from_the_environment_names_the_variable(tmp_path: Path) -> None:
    data = tmp_path / "data"
    result = _run_serve("--data-dir", str(data), env=_environ(BOLT_PORT_RANGE="banana", BOLT_PORT=str(free_port())))
    _assert_refused(result, "BOLT_PORT_RANGE", "banana")
    assert not data.exists()


def test_a_port_in_use_refuses_before_the_data_dir_is_made(tmp_path: Path) -> None:
    data = tmp_path / "data"
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        result = _run_serve("--data-dir", str(data), "--port", str(port), env=_environ())
    finally:
        taken.close()
    _assert_refused(result, "--port", str(port), "in use")
    assert not data.exists()  # no folder, no generated admin password, no start-up ran
    assert "password" not in result.stderr


def _start_serve(data: Path, port: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bolt_host", "serve", "--data-dir", str(data), "--port", str(port)],
        env=_environ(BOLT_ADMIN_PASSWORD="lock-test-password", BOLT_AUTOSTART="0"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/-/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def running_host(tmp_path: Path) -> Iterator[tuple[Path, str, subprocess.Popen[str]]]:
    data = tmp_path / "data"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _start_serve(data, port)
    try:
        wait_until(lambda: _healthy(url) or proc.poll() is not None, timeout=60, what="host health")
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        yield data, url, proc
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        if proc.stderr:
            proc.stderr.close()


def _admin(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bolt_host", "admin", "users", *args, "--data-dir", str(data)],
        env=_environ(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_offline_user_writes_refuse_while_a_host_serves_the_data_dir(
    running_host: tuple[Path, str, subprocess.Popen[str]],
) -> None:
    data, url, proc = running_host
    added = _admin(data, "add", "eve", "--password", "eve-password-1", "--role", "admin")
    assert added.returncode != 0
    assert "bolt-host users add eve" in added.stderr and f"pid {proc.pid}" in added.stderr, added.stderr
    assert "created" not in added.stdout
    changed = _admin(data, "passwd", "admin", "--password", "other-password-1")
    assert changed.returncode != 0 and "bolt-host users passwd" in changed.stderr, changed.stderr
    users = json.loads((data / "db.json").read_text())["users"].values()
    assert [u["name"] for u in users] == ["admin"]
    listed = _admin(data, "list", "--json")  # reading is harmless and stays allowed
    assert listed.returncode == 0 and '"admin"' in listed.stdout
    # the host still answers for the user it knows, with the password it knows
    me = httpx.get(url + "/api/users/@current", auth=("admin", "lock-test-password"), timeout=5)
    assert me.json()["body"]["name"] == "admin"


def test_a_second_serve_on_the_same_data_dir_refuses(running_host: tuple[Path, str, subprocess.Popen[str]]) -> None:
    data, url, proc = running_host
    result = _run_serve("--data-dir", str(data), "--port", str(free_port()), env=_environ())
    _assert_refused(result, "--data-dir", str(data), f"pid {proc.pid}")
    assert _healthy(url)


def test_the_lock_dies_with_the_host(running_host: tuple[Path, str, subprocess.Popen[str]]) -> None:
    data, _url, proc = running_host
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    added = _admin(data, "add", "eve", "--password", "eve-password-1")
    assert added.returncode == 0, added.stderr
    assert "created user eve" in added.stdout


def test_an_unknown_interface_names_the_host_setting(tmp_path: Path) -> None:
    data = tmp_path / "data"
    result = _run_serve("--data-dir", str(data), "--host", "no-such-host.invalid", "--port", str(free_port()))
    _assert_refused(result, "--host", "no-such-host.invalid", "cannot resolve")
    assert not data.exists()


def test_libraries_log_at_warning_unless_debug() -> None:
    script = (
        "import logging, sys\n"
        "from bolt_host.log_levels import configure_logging\n"
        "configure_logging(sys.argv[1])\n"
        "print(logging.getLogger('httpx').getEffectiveLevel(), logging.getLogger('amqtt.broker').getEffectiveLevel(),"
        " logging.getLogger('bolt_host').getEffectiveLevel())\n"
    )
    levels = {
        level: subprocess.run([sys.executable, "-c", script, level], capture_output=True, text=True, timeout=30)
        for level in ("info", "debug")
    }
    assert levels["info"].stdout.split() == ["30", "30", "20"], levels["info"].stderr
    assert levels["debug"].stdout.split() == ["10", "10", "10"], levels["debug"].stderr


def _initial_password(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bolt_host", "admin", "initial-password", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_root_keeps_its_data_outside_its_closed_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As root the default data dir is /var/lib/bolt-host: root's home is closed to the apps'
    own uids, which must pass through the data dir's parents to reach their code."""
    from bolt_host.config import default_data_dir

    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    expected = Path("/var/lib/bolt-host") if os.geteuid() == 0 else Path.home() / ".local/share/bolt-host"
    assert default_data_dir() == expected
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_data_dir() == tmp_path / "bolt-host"


def test_admin_initial_password_prints_the_generated_one(tmp_path: Path) -> None:
    data = tmp_path / "data"
    missing = _initial_password(_environ(), "--data-dir", str(data))
    assert missing.returncode == 1 and "initial-admin-password does not exist" in missing.stderr
    data.mkdir()
    (data / "initial-admin-password").write_text("s3cret-from-first-start\n")
    shown = _initial_password(_environ(XDG_DATA_HOME=str(tmp_path / "xdg")), "--data-dir", str(data))
    assert shown.returncode == 0 and shown.stdout == "s3cret-from-first-start\n"
    (tmp_path / "xdg" / "bolt-host").mkdir(parents=True)
    (tmp_path / "xdg" / "bolt-host" / "initial-admin-password").write_text("by-default\n")
    by_default = _initial_password(_environ(XDG_DATA_HOME=str(tmp_path / "xdg")))
    assert by_default.returncode == 0 and by_default.stdout == "by-default\n"
