from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from bolt_host.cli import main
from tests.helpers import free_port, wait_until


def _serve(tmp_path: Path, port: int, **env: str) -> subprocess.Popen[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BOLT_")}
    environ.update(env)
    return subprocess.Popen(
        [sys.executable, "-m", "bolt_host", "serve", "--port", str(port), "--data-dir", str(tmp_path / "data")],
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _stop(proc: subprocess.Popen[str]) -> tuple[int, str]:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        _, err = proc.communicate(timeout=10)
    return proc.returncode, err


def _health(url: str) -> bool:
    try:
        return httpx.get(url + "/-/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.timeout(60)
def test_serve_answers_on_a_real_port_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _serve(tmp_path, port, BOLT_ADMIN_PASSWORD="serve-test-password")
    try:
        wait_until(lambda: _health(url) or proc.poll() is not None, timeout=30, what="host health")
        assert proc.poll() is None, proc.stderr.read()
        me = httpx.get(url + "/api/users/@current", auth=("admin", "serve-test-password"), timeout=5)
        assert me.json()["body"]["name"] == "admin"
    finally:
        code, err = _stop(proc)
    # uvicorn re-raises SIGTERM after its graceful shutdown, the conventional clean exit.
    assert code in (0, -signal.SIGTERM), err
    assert "Application shutdown complete" in err
    assert f"serving on {url}" in err
    assert "log in as 'admin'" in err
    assert "serve-test-password" not in err


@pytest.mark.timeout(60)
def test_serve_prints_the_generated_password_once(tmp_path: Path) -> None:
    port = free_port()
    proc = _serve(tmp_path, port)
    try:
        wait_until(lambda: _health(f"http://127.0.0.1:{port}") or proc.poll() is not None, timeout=30)
    finally:
        _, err = _stop(proc)
    password = (tmp_path / "data" / "initial-admin-password").read_text().strip()
    assert password in err


@pytest.mark.timeout(60)
def test_serve_refuses_a_corrupt_db_and_keeps_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "db.json").write_text("{broken")
    proc = _serve(tmp_path, free_port(), BOLT_ADMIN_PASSWORD="serve-test-password")
    code, err = _stop(proc) if proc.wait(timeout=30) is None else (proc.returncode, proc.stderr.read())
    assert code != 0
    assert "db.json is not valid JSON" in err
    assert (data / "db.json").read_text() == "{broken"


def test_admin_users_commands_work_on_the_data_dir(tmp_path: Path) -> None:
    runner = CliRunner()
    data = str(tmp_path / "data")
    added = runner.invoke(
        main, ["admin", "users", "add", "zoe", "--password", "zoe-password", "--role", "admin", "--data-dir", data]
    )
    assert added.exit_code == 0, added.output
    listed = runner.invoke(main, ["admin", "users", "list", "--json", "--data-dir", data])
    assert [u["name"] for u in json.loads(listed.output)] == ["zoe"]
    changed = runner.invoke(
        main, ["admin", "users", "passwd", "zoe", "--password", "zoe-password-2", "--data-dir", data]
    )
    assert changed.exit_code == 0
    short = runner.invoke(main, ["admin", "users", "passwd", "zoe", "--password", "short", "--data-dir", data])
    assert short.exit_code != 0 and "at least" in short.output


def test_users_talks_to_a_host_not_to_a_data_dir(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    env = {"BOLT_URL": dead, "BOLT_USER": "admin", "BOLT_PASSWORD": "x", "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    for command in (["users", "list"], ["users", "add", "zoe", "--new-password", "zoe-password"]):
        result = CliRunner().invoke(main, command, env=env)
        assert result.exit_code == 3 and "cannot connect" in result.output, result.output  # it tried the host
    assert not (tmp_path / "data").exists()
    gone = CliRunner().invoke(main, ["users", "list", "--data-dir", str(tmp_path / "data")], env=env)
    assert gone.exit_code == 2 and "No such option" in gone.output


def test_plugins_command_lists_the_store_backends() -> None:
    result = CliRunner().invoke(main, ["plugins", "--json"])
    assert result.exit_code == 0, result.output
    assert {"robot", "market", "device", "enterprise"} <= {p["name"] for p in json.loads(result.output)}
