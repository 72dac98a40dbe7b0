"""Python apps through the host's install pipeline (issue 13): the app's own venv is made in
staging by the dependency step, its interpreter is on the app object, start serves it."""

from __future__ import annotations

from pathlib import Path

import pytest

from bolt_host.testing import running_host
from tests.helpers import app_started, private_port_range

pytestmark = pytest.mark.timeout(300)


async def test_the_bottle_sample_installs_as_a_task_and_is_served(tmp_path: Path) -> None:
    async with running_host(tmp_path / "data", port_range=private_port_range()) as bolt:
        preview = (await bolt.admin.post("/api/apps/local-package", json={"path": "hello-bottle"})).json()["body"]
        assert preview["_install"]["startFrom"] == "bolt.main"
        assert preview["_install"]["startCommand"] == "python app:app"
        installed = await bolt.admin.post("/api/apps/local", json={"path": "hello-bottle"})
        assert installed.status_code == 201, installed.text
        app = installed.json()["body"]
        assert app["python"] == str(Path(app["folder"]) / ".venv" / "bin" / "python")
        assert Path(app["python"]).exists()
        # uv's cache is the app's own (it runs as the app), as npm's is
        assert (bolt.host.settings.data_dir / "home" / "hello-bottle" / ".cache" / "uv").is_dir()
        async with app_started(bolt.admin, "hello-bottle"):
            page = await bolt.admin.get("/x/hello-bottle/")
            assert page.status_code == 200 and "Hello from Bottle" in page.text


async def test_a_bad_requirement_fails_the_install_and_leaves_nothing(tmp_path: Path) -> None:
    repo = tmp_path / "repo" / "bad-reqs"
    repo.mkdir(parents=True)
    (repo / "package.json").write_text('{"name": "bad-reqs", "version": "1.0.0", "bolt": {"main": "app.py"}}')
    (repo / "app.py").write_text("print('never runs')\n")
    (repo / "requirements.txt").write_text("bolt-host-no-such-package-xyz==9.9.9\n")
    async with running_host(tmp_path / "data", port_range=private_port_range(), local_repo=tmp_path / "repo") as bolt:
        answer = await bolt.admin.post("/api/apps/local", json={"path": "bad-reqs"})
        assert answer.json()["code"] == 415, answer.text
        assert "bolt-host-no-such-package-xyz" in answer.json()["error"]["message"]
        assert (await bolt.admin.get("/api/apps/bad-reqs")).json()["code"] == 403
        assert list((bolt.host.settings.data_dir / "apps").iterdir()) == []
