"""The unprivileged path end to end (issue 17): the isolation tests run again in a pytest of
their own as uid 65534 (nobody), so the host really is unprivileged and picks bubblewrap (user
namespaces, no root anywhere): the data dir hidden, installs in the app's sandbox with a network
namespace of their own.  As root only (it needs to become another user); CI runs as root.

That pytest runs on a virtual environment made here from the system's Python of this version
(the test's own interpreter may sit where other users cannot reach it, a pyenv under /root)
with this environment's packages added through a ``.pth`` file."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from bolt_host.services.python_env import base_interpreter, find_uv, reachable_by_others
from tests.helpers import REQUIRE_ALL_TOOLS_ENV

pytestmark = pytest.mark.timeout(900)
NOBODY = 65534
PROJECT = Path(__file__).resolve().parent.parent
SELECTED = ["tests/test_isolation.py", "tests/test_confined_installs.py", "tests/test_install_network.py"]


def readable_by_others(path: Path) -> bool:
    return all(folder.stat().st_mode & 0o001 for folder in [path, *path.parents]) and bool(path.stat().st_mode & 0o004)


@pytest.fixture
def nobodys_python() -> Iterator[tuple[Path, Path]]:
    """(an interpreter uid 65534 can run with bolt-host's packages, a scratch folder of its own)."""
    if os.geteuid() != 0:
        pytest.skip("becoming another user needs the tests to run as root (as CI does)")
    if not shutil.which("setpriv"):
        pytest.skip("setpriv (util-linux) is missing")
    base = base_interpreter(for_other_user=True)
    packages = [Path(p) for p in site.getsitepackages()]
    uv = find_uv()
    unreachable = [str(p) for p in [PROJECT, *packages, uv] if not readable_by_others(p)]
    if not reachable_by_others(base):
        unreachable.append(str(base))
    if unreachable:
        pytest.skip(f"not reachable by other users: {', '.join(unreachable)}")
    scratch = Path(tempfile.mkdtemp(prefix="bolt-nobody-"))
    try:
        scratch.chmod(0o755)
        subprocess.run([str(base), "-m", "venv", "--without-pip", str(scratch / "venv")], check=True, timeout=120)
        version = f"python{sys.version_info.major}.{sys.version_info.minor}"
        pth = scratch / "venv" / "lib" / version / "site-packages" / "bolt-host-test.pth"
        # addsitedir, not a bare path: the editable install's own .pth files must run too
        pth.write_text("".join(f"import site; site.addsitedir({str(p)!r})\n" for p in packages))
        (scratch / "venv" / "bin" / "uv").symlink_to(uv)  # where bolt-host looks for it
        for name in ("home", "pt"):
            (scratch / name).mkdir()
            os.chown(scratch / name, NOBODY, NOBODY)
        yield scratch / "venv" / "bin" / "python", scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def test_the_isolation_tests_pass_with_the_host_unprivileged_under_bubblewrap(
    nobodys_python: tuple[Path, Path],
) -> None:
    python, scratch = nobodys_python
    env = {"HOME": str(scratch / "home"), "PATH": os.pathsep.join([str(python.parent), os.defpath]),
           "PYTHONDONTWRITEBYTECODE": "1", "LANG": "C.UTF-8"}
    env.update({key: os.environ[key] for key in (REQUIRE_ALL_TOOLS_ENV,) if key in os.environ})
    argv = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--",
            str(python), "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", f"--basetemp={scratch / 'pt' / 'run'}",
            *SELECTED]
    done = subprocess.run(argv, cwd=PROJECT, env=env, capture_output=True, text=True, timeout=840, check=False)
    report = done.stdout[-6000:] + done.stderr[-2000:]
    assert done.returncode == 0, report
    assert "uid per app needs the host to run as root" in report  # it did run unprivileged
    assert "network namespace" not in report.split("short test summary")[-1], report  # nothing skipped for that
    assert " passed" in report and " failed" not in report, report
