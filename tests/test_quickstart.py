"""The README's quick start, as written: a host started the way ./scripts/serve starts it
(on its defaults, under a temporary HOME), then the README's sample-install block run by
bash in the repository's root, then the sample is running."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.helpers import end_process, free_port, wait_until

ROOT = Path(__file__).resolve().parent.parent
CLI = ROOT / ".venv" / "bin" / "bolt-host"
pytestmark = pytest.mark.timeout(120)


def _readme_block() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- quickstart-sample -->\s*```sh\n(.*?)```", text, re.S)
    assert match, "README.md lost its quick-start sample block"
    return match.group(1)


def _serve_flags() -> list[str]:
    """The flags ./scripts/serve passes to `bolt-host serve` (its "$@" aside)."""
    line = next(ln for ln in (ROOT / "scripts" / "serve").read_text().splitlines() if ln.startswith("exec "))
    words = shlex.split(line)
    assert words[1:3] == [".venv/bin/bolt-host", "serve"], line
    return [w for w in words[3:] if w != "$@"]


def _environment(home: Path, **extra: str) -> dict[str, str]:
    kept = {k: v for k, v in os.environ.items() if not k.startswith(("BOLT_", "XDG_"))}
    return {**kept, "HOME": str(home), **extra}


@pytest.fixture
def default_host(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`bolt-host serve` with ./scripts/serve's flags and every default but the port."""
    home = tmp_path / "home"
    home.mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bolt_host", "serve", *_serve_flags(), "--port", str(port)],
        env=_environment(home), stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
    )  # fmt: skip
    try:
        wait_until(lambda: _healthy(url) or proc.poll() is not None, timeout=60, what="the host")
        assert proc.poll() is None, (tmp_path / "serve.log").read_text()
        yield url, home
    finally:
        children = psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else []
        end_process(proc)
        for child in children:  # apps the host failed to stop, by pid
            if child.is_running():
                child.kill()
        log.close()


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/-/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.skipif(not CLI.exists(), reason=f"{CLI} is missing (./scripts/setup makes it)")
def test_the_readme_quick_start_installs_and_starts_a_sample(default_host: tuple[str, Path]) -> None:
    url, home = default_host
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", _readme_block()],
        cwd=ROOT, env=_environment(home, BOLT_URL=url), capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "hello-web" in done.stdout
    password = (home / ".local" / "share" / "bolt-host" / "initial-admin-password").read_text().strip()
    live = httpx.get(url + "/api/apps/@live", auth=("admin", password), timeout=10).json()["body"]
    assert [(c["name"], c["status"]) for c in live] == [("hello-web", "running")]
    page = httpx.get(f"http://127.0.0.1:{live[0]['port']}/health", timeout=10)
    assert page.status_code == 200
    bundled = httpx.get(url + "/api/apps/bolt-admin", auth=("admin", password), timeout=10).json()["body"]
    assert bundled["source"]["type"] == "bundled" and bundled["system"] is True
