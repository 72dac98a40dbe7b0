"""``requires_tool``: a missing tool skips its tests, or fails them when BOLT_REQUIRE_ALL_TOOLS=1.

Each case runs a real pytest process on a small test file, with this suite's
conftest loaded as a plugin, and reads its outcome.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REQUIRE_ALL_TOOLS_ENV

REPO = Path(__file__).resolve().parent.parent
NEEDS_A_TOOL = '''
from tests.helpers import requires_tool

pytestmark = requires_tool(False, "the frobnicator is missing (apt-get install frobnicator)")


def test_that_needs_it():
    raise AssertionError("never runs without its tool")
'''
HAS_ITS_TOOL = '''
from tests.helpers import requires_tool


@requires_tool("/usr/bin/present", "never shown")
def test_that_has_it():
    pass
'''


def run_pytest(tmp_path: Path, required: str | None) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_needs_a_tool.py").write_text(NEEDS_A_TOOL)
    (tmp_path / "test_has_its_tool.py").write_text(HAS_ITS_TOOL)
    env = {k: v for k, v in os.environ.items() if k != REQUIRE_ALL_TOOLS_ENV}
    env["PYTHONPATH"] = str(REPO)
    if required is not None:
        env[REQUIRE_ALL_TOOLS_ENV] = required
    command = [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider", "-rA", str(tmp_path)]
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=90)


@pytest.mark.parametrize("required", [None, "0", ""])
def test_a_missing_tool_skips_by_default(tmp_path: Path, required: str | None) -> None:
    result = run_pytest(tmp_path, required)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed, 1 skipped" in result.stdout
    assert "the frobnicator is missing (apt-get install frobnicator)" in result.stdout


def test_a_missing_tool_fails_when_every_tool_is_required(tmp_path: Path) -> None:
    result = run_pytest(tmp_path, "1")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 passed, 1 error" in result.stdout and "skipped" not in result.stdout
    assert "the frobnicator is missing (apt-get install frobnicator) (BOLT_REQUIRE_ALL_TOOLS=1" in result.stdout
    assert "never runs without its tool" not in result.stdout  # failed before the test body or a fixture ran
