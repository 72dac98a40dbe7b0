"""The README's quick start, as written: a host started the way ./scripts/serve starts it
(on its defaults, under a temporary HOME), then the README's sample-install block run by
bash in the repository's root, then the sample is running."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.helpers import end_process, free_port, wait_until

ROOT = Path(__file__).resolve().parent.parent
CLI = ROOT / ".venv" / "bin" / "bolt-host"
pytestmark = pytest.mark.timeout(120)


def _readme_block(marker: str = "quickstart-sample") -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"<!-- {marker} -->\s*```sh\n(.*?)```", text, re.S)
    assert match, f"README.md lost its {marker} block"
    return match.group(1)


def _serve_flags() -> list[str]:
    """The flags ./scripts/serve passes to `bolt-host serve` (its "$@" aside)."""
    line = next(ln for ln in (ROOT / "scripts" / "serve").read_text().splitlines() if ln.startswith("exec "))
    words = shlex.split(line)
    assert words[1:3] == [".venv/bin/bolt-host", "serve"], line
    return [w for w in words[3:] if w != "$@"]


def _environment(home: Path, **extra: str) -> dict[str, str]:
    kept = {k: v for k, v in os.environ.items() if not k.startswith(("BOLT_", "XDG_"))}
    # a temporary data home: as root the default would be /var/lib/bolt-host, the machine's own
    return {**kept, "HOME": str(home), "XDG_DATA_HOME": str(home / ".local" / "share"), **extra}


@contextlib.contextmanager
def _running(argv: list[str], env: dict[str, str], url: str, log_path: Path, **popen: Any) -> Iterator[None]:
    """Run ``argv`` at the repository's root until the host at ``url`` is healthy; end it (and its
    process group, when it has its own) afterwards, then anything of it that is still there."""
    log = log_path.open("w")
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, **popen)
    try:
        wait_until(lambda: _healthy(url) or proc.poll() is not None, timeout=60, what="the host")
        assert proc.poll() is None, log_path.read_text()
        yield
    finally:
        children = psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else []
        if proc.poll() is None and popen.get("start_new_session"):
            os.killpg(proc.pid, signal.SIGTERM)  # a script's group: it, the host and its helpers
        end_process(proc)
        # the host got the group's SIGTERM too: its shutdown (apps stopped, their cgroups removed) ends
        # first; only then is anything that outlived it killed, by pid
        _, alive = psutil.wait_procs(children, timeout=30)
        for child in alive:
            with contextlib.suppress(psutil.Error):
                child.kill()
        log.close()


@pytest.fixture
def default_host(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`bolt-host serve` with ./scripts/serve's flags and every default but the port."""
    home = tmp_path / "home"
    home.mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "bolt_host", "serve", *_serve_flags(), "--port", str(port)]
    with _running(argv, _environment(home), url, tmp_path / "serve.log"):
        yield url, home


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/-/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _run_readme_block(marker: str, url: str, home: Path) -> tuple[str, str]:
    """Run the README's block ``marker`` with bash against ``url``: (its stdout, the admin password)."""
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", _readme_block(marker)],
        cwd=ROOT, env=_environment(home, BOLT_URL=url), capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout, (home / ".local" / "share" / "bolt-host" / "initial-admin-password").read_text().strip()


@pytest.mark.skipif(not CLI.exists(), reason=f"{CLI} is missing (./scripts/setup makes it)")
def test_the_readme_quick_start_installs_and_starts_a_sample(default_host: tuple[str, Path]) -> None:
    url, home = default_host
    output, password = _run_readme_block("quickstart-sample", url, home)
    assert "hello-web" in output
    live = httpx.get(url + "/api/apps/@live", auth=("admin", password), timeout=10).json()["body"]
    assert [(c["name"], c["status"]) for c in live] == [("hello-web", "running")]
    page = httpx.get(f"http://127.0.0.1:{live[0]['port']}/health", timeout=10)
    assert page.status_code == 200
    bundled = httpx.get(url + "/api/apps/bolt-admin", auth=("admin", password), timeout=10).json()["body"]
    assert bundled["source"]["type"] == "bundled" and bundled["system"] is True


@pytest.fixture
def demo_registry_host(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`./scripts/serve --demo-registry` itself, on free ports, under a temporary HOME."""
    home = tmp_path / "home"
    home.mkdir()
    port, registry_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    argv = ["./scripts/serve", "--demo-registry", "--port", str(port), "--no-install-bundled"]
    env = _environment(home, BOLT_DEMO_REGISTRY_PORT=str(registry_port))
    with _running(argv, env, url, tmp_path / "serve.log", start_new_session=True):
        yield url, home
    assert f"registry:   http://127.0.0.1:{registry_port}" in (tmp_path / "serve.log").read_text()


@pytest.mark.skipif(not CLI.exists(), reason=f"{CLI} is missing (./scripts/setup makes it)")
def test_the_readme_registry_block_installs_from_the_demo_registry(demo_registry_host: tuple[str, Path]) -> None:
    url, home = demo_registry_host
    output, password = _run_readme_block("quickstart-registry", url, home)
    assert "installed notes 1.0.0" in output
    app = httpx.get(url + "/api/apps/notes", auth=("admin", password), timeout=10).json()["body"]
    assert app["source"]["type"] == "registry"
    live = httpx.get(url + "/api/apps/@live", auth=("admin", password), timeout=10).json()["body"]
    assert [(c["name"], c["status"]) for c in live] == [("notes", "running")]
