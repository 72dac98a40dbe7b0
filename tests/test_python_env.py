"""Python apps' environments: the real uv, real packages from the machine's index, real servers."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from bolt_host import errors
from bolt_host.errors import BoltError
from bolt_host.services.python_env import (
    needs_python_env,
    prepare_python_env,
    python_start_argv,
    venv_python,
)
from tests.helpers import end_process, free_port, make_wheel, only_from_wheelhouse, wait_until

SAMPLE = Path(__file__).resolve().parent.parent / "node_modules_sample" / "hello-bottle"

WSGI_APP = """\
import bottle

app = bottle.Bottle()


@app.get("/")
def index():
    return "wsgi says hi from bottle " + bottle.__version__
"""

ASGI_APP = """\
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"asgi says hi"})
"""


@pytest.fixture(scope="module")
def uv_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One uv cache for the module's tests, as the host shares one across its apps."""
    return tmp_path_factory.mktemp("uv-cache")


def make_app(folder: Path, main: str, files: dict[str, str]) -> dict:
    folder.mkdir(parents=True)
    manifest = {"name": folder.name, "version": "1.0.0", "bolt": {"main": main}}
    (folder / "package.json").write_text(json.dumps(manifest))
    for name, text in files.items():
        (folder / name).write_text(text)
    return manifest


async def prepare(folder: Path, manifest: dict, cache: Path, timeout: float = 90.0) -> tuple[Path, str]:
    log_path = folder.parent / f"{folder.name}-install.log"
    with open(log_path, "w", encoding="utf-8") as log:
        python = await prepare_python_env(folder, cache_dir=cache, log=log, timeout=timeout, manifest=manifest)
    return python, log_path.read_text()


@pytest.fixture
def served() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts; each is ended by its pid at the end."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        end_process(proc)


def serve(argv: list[str], cwd: Path, port: int, started: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    env = {"PATH": os.environ.get("PATH", os.defpath), "PORT": str(port)}
    proc = subprocess.Popen(
        argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    started.append(proc)
    return proc


def get_when_ready(port: int, proc: subprocess.Popen[bytes]) -> httpx.Response:
    def answer() -> httpx.Response | None:
        assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else "exited"
        try:
            return httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
        except httpx.TransportError:
            return None

    return wait_until(answer, timeout=30, what="the app to answer HTTP")


def test_needs_python_env_only_with_requirements_or_object_reference(tmp_path: Path) -> None:
    plain = make_app(tmp_path / "plain", "server.py", {"server.py": "print('hi')\n"})
    assert not needs_python_env(tmp_path / "plain", plain)
    reqs = make_app(tmp_path / "reqs", "server.py", {"requirements.txt": "bottle\n"})
    assert needs_python_env(tmp_path / "reqs", reqs)
    obj = make_app(tmp_path / "obj", "web.app:application", {})
    assert needs_python_env(tmp_path / "obj", obj)
    empty_project = make_app(tmp_path / "proj0", "main.py", {"pyproject.toml": "[project]\nname = 'x'\n"})
    assert not needs_python_env(tmp_path / "proj0", empty_project)
    project = make_app(tmp_path / "proj1", "main.py", {"pyproject.toml": "[project]\ndependencies = ['bottle']\n"})
    assert needs_python_env(tmp_path / "proj1", project)


async def test_requirements_go_into_the_apps_own_venv_which_survives_a_move(tmp_path: Path, uv_cache: Path) -> None:
    staged = tmp_path / "staging" / "package"
    manifest = make_app(staged, "main.py", {"requirements.txt": "bottle\n", "main.py": "import bottle\n"})
    python, log = await prepare(staged, manifest, uv_cache)
    assert python == venv_python(staged)
    assert "bottle" in log  # uv's own output is the task's log
    # The host's interpreter does not have it: the app's environment is its own.
    probe = "import bottle, sys; print(bottle.__file__)"
    assert subprocess.run([sys.executable, "-c", "import bottle"], capture_output=True).returncode != 0
    # The staged folder is renamed into place after the install, as the install's swap does.
    final = tmp_path / "apps" / "bottle-app"
    final.parent.mkdir()
    staged.rename(final)
    moved = subprocess.run(
        [str(venv_python(final)), "-c", probe],
        cwd=final,
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(moved.stdout.strip()).is_relative_to(final / ".venv")


async def test_project_dependencies_from_pyproject(tmp_path: Path, uv_cache: Path) -> None:
    folder = tmp_path / "proj"
    pyproject = "[project]\nname = 'proj'\nversion = '1'\ndependencies = ['bottle>=0.12']\n"
    manifest = make_app(folder, "main.py", {"pyproject.toml": pyproject})
    python, _ = await prepare(folder, manifest, uv_cache)
    subprocess.run([str(python), "-c", "import bottle"], check=True)


async def test_a_requirement_that_does_not_exist_fails_with_uvs_last_lines(tmp_path: Path, uv_cache: Path) -> None:
    folder = tmp_path / "bad"
    missing = "bolt-host-no-such-package-4f2a9"
    manifest = make_app(folder, "main.py", {"requirements.txt": f"{missing}==1.0\n"})
    with pytest.raises(BoltError) as caught:
        await prepare(folder, manifest, uv_cache)
    assert caught.value.code == errors.DOWNLOAD_FAILED
    message = str(caught.value.message)
    assert message.startswith("Installing the app's Python dependencies failed (exit code")
    assert missing in message  # uv's explanation, not just "failed"
    assert not (folder / ".venv").exists()  # nothing half-made is left


async def test_the_machines_pip_configuration_is_respected(
    tmp_path: Path, uv_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pip.conf that says "no index, only this wheelhouse" governs what uv installs."""
    wheelhouse = tmp_path / "wheelhouse"
    make_wheel(wheelhouse, "boltlocalpkg", "2.5", "VALUE = 'from the wheelhouse'\n")
    only_from_wheelhouse(wheelhouse, tmp_path / "pip.conf", monkeypatch)
    folder = tmp_path / "local"
    manifest = make_app(folder, "main.py", {"requirements.txt": "boltlocalpkg\n"})
    python, _ = await prepare(folder, manifest, tmp_path / "fresh-cache")
    shown = subprocess.run([str(python), "-c", "import boltlocalpkg; print(boltlocalpkg.VALUE)"], capture_output=True)
    assert shown.stdout.decode().strip() == "from the wheelhouse"
    # With no index allowed, a package that is not in the wheelhouse cannot come from anywhere.
    other = tmp_path / "other"
    manifest = make_app(other, "main.py", {"requirements.txt": "bottle\n"})
    with pytest.raises(BoltError) as caught:
        await prepare(other, manifest, tmp_path / "fresh-cache")
    assert "bottle" in caught.value.message


async def test_a_wsgi_object_is_served_with_waitress(tmp_path: Path, uv_cache: Path, served: list) -> None:
    folder = tmp_path / "wsgi"
    manifest = make_app(folder, "web:app", {"requirements.txt": "bottle\n", "web.py": WSGI_APP})
    python, _ = await prepare(folder, manifest, uv_cache)
    port = free_port()
    proc = serve(python_start_argv(python, "web:app"), folder, port, served)
    response = get_when_ready(port, proc)
    assert response.status_code == 200
    assert response.text.startswith("wsgi says hi from bottle ")
    assert response.headers["server"] == "waitress"
    assert end_process(proc) == 0  # SIGTERM ends it cleanly
    assert b"serving WSGI web:app with waitress" in proc.stdout.read()


async def test_an_asgi_object_is_served_with_uvicorn(tmp_path: Path, uv_cache: Path, served: list) -> None:
    folder = tmp_path / "asgi"
    manifest = make_app(folder, "pkg.web:app", {})
    (folder / "pkg").mkdir()
    (folder / "pkg" / "__init__.py").write_text("")
    (folder / "pkg" / "web.py").write_text(ASGI_APP)
    python, _ = await prepare(folder, manifest, uv_cache)
    port = free_port()
    proc = serve(python_start_argv(python, "pkg.web:app"), folder, port, served)
    response = get_when_ready(port, proc)
    assert response.text == "asgi says hi"
    assert response.headers["server"] == "uvicorn"
    assert end_process(proc) == 0


async def test_the_sample_bottle_app_installs_and_answers(tmp_path: Path, uv_cache: Path, served: list) -> None:
    import shutil

    folder = tmp_path / "hello-bottle"
    shutil.copytree(SAMPLE, folder)
    manifest = json.loads((folder / "package.json").read_text())
    main = manifest["bolt"]["main"]
    python, _ = await prepare(folder, manifest, uv_cache)
    port = free_port()
    proc = serve(python_start_argv(python, main), folder, port, served)
    response = get_when_ready(port, proc)
    assert response.status_code == 200
    assert "Hello from Bottle" in response.text


def test_a_script_main_runs_with_the_given_python(tmp_path: Path) -> None:
    assert python_start_argv(Path("/x/.venv/bin/python"), "server.py") == ["/x/.venv/bin/python", "server.py"]
    with pytest.raises(BoltError) as caught:
        python_start_argv(Path("/x/python"), "server.js")
    assert caught.value.code == errors.APP_START_FAILED


@pytest.fixture
def silent_index() -> Iterator[str]:
    """An index that accepts connections and never answers: uv hangs on it."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/simple"
    stop.set()
    thread.join(timeout=5)
    for connection in accepted:
        connection.close()
    listener.close()


def uv_descendants() -> list[list[str]]:
    """The command lines of live uv processes below this one (an exited, unreaped one is dead)."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.name() == "uv" and child.status() != psutil.STATUS_ZOMBIE:
                found.append(child.cmdline())
        except psutil.Error:  # gone (or became a zombie) since the listing
            continue
    return found


@pytest.fixture
def hanging_app(tmp_path: Path, silent_index: str, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict]:
    """An app whose requirement uv looks up on the silent index (the host's UV_* setting)."""
    monkeypatch.setenv("UV_DEFAULT_INDEX", silent_index)
    monkeypatch.setenv("UV_HTTP_TIMEOUT", "300")
    folder = tmp_path / "slow"
    return folder, make_app(folder, "main.py", {"requirements.txt": "bottle\n"})


async def test_timeout_kills_uv_and_fails_clearly(tmp_path: Path, hanging_app: tuple[Path, dict]) -> None:
    folder, manifest = hanging_app
    with pytest.raises(BoltError) as caught:
        await prepare(folder, manifest, tmp_path / "cache", timeout=4)
    assert "took longer than 4 s and was stopped" in caught.value.message
    assert uv_descendants() == []
    assert not (folder / ".venv").exists()


async def test_cancelling_the_install_kills_uv(tmp_path: Path, hanging_app: tuple[Path, dict]) -> None:
    folder, manifest = hanging_app
    install = asyncio.create_task(prepare(folder, manifest, tmp_path / "cache", timeout=300))
    deadline = asyncio.get_running_loop().time() + 30
    while not any("pip" in argv for argv in uv_descendants()):
        assert asyncio.get_running_loop().time() < deadline, "uv pip install never started"
        await asyncio.sleep(0.05)  # poll under a deadline
    install.cancel()
    with pytest.raises(asyncio.CancelledError):
        await install
    assert uv_descendants() == []


async def test_a_timeout_kills_the_whole_tree_even_escaped_children(tmp_path: Path) -> None:
    """What the install tools are run with: a process that forks and ``setsid``s a child."""
    from bolt_host.services.tool_runs import run_logged

    pids = tmp_path / "pids"
    script = f"sleep 300 & echo $! >> {pids}; setsid sleep 300 & echo $! >> {pids}; echo started; wait"
    log_path = tmp_path / "tool.log"

    async def run() -> None:
        with open(log_path, "w") as log:
            await run_logged(
                ["sh", "-c", script], cwd=tmp_path, env={"PATH": os.defpath}, log=log, timeout=3, what="tool", code=1
            )

    with pytest.raises(BoltError) as caught:
        await run()
    assert caught.value.message.startswith("tool took longer than 3 s and was stopped:\nstarted")
    recorded = [int(line) for line in pids.read_text().split()]
    assert len(recorded) == 2
    for pid in recorded:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert "started" in log_path.read_text()


def test_the_launcher_refuses_to_guess_a_port(tmp_path: Path) -> None:
    """Without PORT the launcher exits at once with code 2, as the sample apps do."""
    from bolt_host.services.python_env import LAUNCHER

    result = subprocess.run([sys.executable, str(LAUNCHER), "web:app"], env={"PATH": os.defpath}, capture_output=True)
    assert result.returncode == 2
    assert b"PORT is not set" in result.stderr


async def test_missing_uv_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A host whose environment lacks uv (and has none on PATH) says what to install."""
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-venv" / "bin" / "python"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    folder = tmp_path / "needs"
    manifest = make_app(folder, "main.py", {"requirements.txt": "bottle\n"})
    with pytest.raises(BoltError) as caught:
        await prepare(folder, manifest, tmp_path / "cache")
    assert caught.value.code == errors.DOWNLOAD_FAILED
    assert "uv is not installed" in caught.value.message


def test_pip_settings_follow_pips_precedence(tmp_path: Path) -> None:
    from bolt_host.services.pip_settings import config_files, uv_environment

    site = tmp_path / "xdg" / "pip"
    site.mkdir(parents=True)
    (site / "pip.conf").write_text(
        "[global]\nindex-url = https://mirror.example/simple\nfind-links = /site/wheels\n"
        "[install]\nextra-index-url = https://one.example/simple\n  https://two.example/simple\n"
    )
    user = tmp_path / "pip.conf"
    user.write_text("[global]\nfind-links = /user/wheels /more/wheels\nconstraint = /etc/c.txt\n")
    environ = {
        "HOME": str(tmp_path / "home"),
        "XDG_CONFIG_DIRS": str(tmp_path / "xdg"),
        "PIP_CONFIG_FILE": str(user),
        "PIP_DEFAULT_TIMEOUT": "60",
        "UV_CONSTRAINT": "/uv/wins.txt",
    }
    files = config_files(environ)
    assert files[0] == site / "pip.conf" and files[1] == Path("/etc/pip.conf") and files[-1] == user
    files.remove(Path("/etc/pip.conf"))  # this machine's own file is not the test's
    assert uv_environment(environ, files) == {
        "UV_DEFAULT_INDEX": "https://mirror.example/simple",
        "UV_INDEX": "https://one.example/simple https://two.example/simple",
        "UV_INDEX_STRATEGY": "unsafe-best-match",  # pip's semantics across several indexes
        "UV_FIND_LINKS": "/user/wheels,/more/wheels",  # the later file wins, uv wants commas
        "UV_CONSTRAINT": "/uv/wins.txt",  # uv's own variable beats pip's setting
        "UV_HTTP_TIMEOUT": "60",
    }
    assert config_files({**environ, "PIP_CONFIG_FILE": os.devnull}) == []
    assert uv_environment(environ, []) == {
        "UV_CONSTRAINT": "/uv/wins.txt",
        "UV_HTTP_TIMEOUT": "60",
    }
