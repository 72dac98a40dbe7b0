"""The public plugin API: documented hooks, plugins that use nothing else, hooks through the host,
and the worked fifth backend of docs/plugins.md run as written."""

from __future__ import annotations

import inspect
import re
import shutil
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from bolt_host.plugin import hookimpl
from bolt_host.plugins import make_plugin_manager
from bolt_host.testing import running_host, settings_for_tests

ROOT = Path(__file__).parent.parent
DOCS = (ROOT / "docs" / "plugins.md").read_text()
INTERNALS = re.compile(r"^\s*(?:from|import)\s+bolt_host\.(?:services|web|storage|statefile|host|plugins)\b", re.M)


def test_every_hookspec_has_a_docstring_and_a_row_in_the_plugin_docs(tmp_path: Path) -> None:
    pm = make_plugin_manager(settings_for_tests(tmp_path))  # the backends' own hookspecs included
    specs = {name: getattr(pm.hook, name).spec for name in dir(pm.hook) if not name.startswith("_")}
    specs = {name: spec for name, spec in specs.items() if spec is not None}
    assert {"startup", "register_routes", "permission_allowed", "verify_payment"} <= set(specs)
    undocumented = [name for name, spec in specs.items() if not (inspect.getdoc(spec.function) or "").strip()]
    missing = [name for name, spec in specs.items() if f"`{name}({', '.join(spec.argnames)})" not in DOCS]
    assert undocumented == [] and missing == []


def test_plugins_import_only_the_public_api_and_never_call_pm_hook() -> None:
    wrong = []
    for path in sorted((ROOT / "plugins").rglob("*.py")):
        text = path.read_text()
        wrong += [f"{path.relative_to(ROOT)}: {m.group(0).strip()}" for m in INTERNALS.finditer(text)]
        if "pm.hook" in text or ".pm." in text:
            wrong.append(f"{path.relative_to(ROOT)}: calls the plugin manager")
        if "python_multipart" in text:
            wrong.append(f"{path.relative_to(ROOT)}: drives the multipart parser itself")
    assert wrong == []


class AsyncAbstainer:
    """An ``async def`` firstresult implementation that abstains (pluggy alone would count its coroutine)."""

    calls = 0

    @hookimpl(tryfirst=True)
    async def permission_allowed(self, host: Any, actor: Any, action: str, resource: Any) -> bool | None:
        AsyncAbstainer.calls += 1
        return None


class Refuser:
    @hookimpl
    async def permission_allowed(self, host: Any, actor: Any, action: str, resource: Any) -> bool | None:
        return False if action == "users.list" else None


async def test_an_async_firstresult_implementation_may_abstain(tmp_path: Path) -> None:
    async with running_host(tmp_path, plugins=[AsyncAbstainer(), Refuser()]) as bolt:
        assert await bolt.host.hooks.call("permission_allowed", actor=None, action="users.list", resource=None) is False
        assert await bolt.host.hooks.call("permission_allowed", actor=None, action="other", resource=None) is None
        assert AsyncAbstainer.calls == 2


def test_hook_wrappers_are_refused(tmp_path: Path) -> None:
    class Wrapper:
        @hookimpl(wrapper=True)
        def on_event(self, host: Any, event: Any) -> Any:
            return (yield)

    try:
        make_plugin_manager(settings_for_tests(tmp_path), extra=[Wrapper()])
    except Exception as exc:
        assert "wrappers are not supported" in str(exc)
    else:
        raise AssertionError("a hook wrapper was accepted")


def _worked_backend() -> ModuleType:
    match = re.search(r"<!-- example-backend -->\s*```python\n(.*?)```", DOCS, re.S)
    assert match, "docs/plugins.md lost its worked backend"
    module = ModuleType("docs_shelf_backend")
    exec(compile(match.group(1), "docs/plugins.md", "exec"), module.__dict__)
    return module


async def test_the_worked_fifth_backend_runs_as_documented(tmp_path: Path) -> None:
    shelf = _worked_backend()
    assert isinstance(shelf.plugin, shelf.ShelfPlugin)
    async with running_host(tmp_path, plugins=[shelf.plugin], max_body_bytes=1024) as bolt:
        anonymous = await bolt.client.get("/shelf/items")
        assert anonymous.status_code == 401 and "shelf_error" in anonymous.json()
        bad = await bolt.admin.post("/shelf/install", json={"folder": 7})
        assert bad.status_code == 400 and bad.json()["shelf_error"].startswith("send {")
        missing = await bolt.admin.post("/shelf/install", json={"folder": "../../etc"})
        assert missing.status_code == 404 and bolt.host.apps.get("etc") is None
        too_big = await bolt.admin.post("/shelf/install", content=b"x" * 2048)
        assert too_big.status_code == 413 and "shelf_error" in too_big.json()  # the host's 413, in shelf's format
        queued = await bolt.admin.post("/shelf/install", json={"folder": "hello-web"})
        assert queued.status_code == 202
        task_id = queued.json()["task"]
        done = await bolt.host.tasks.wait(task_id, timeout=60)
        assert done["status"] == "succeeded", done
        status = (await bolt.admin.get(f"/shelf/tasks/{task_id}")).json()
        assert status == {"status": "succeeded", "progress": 1.0, "error": None}
        items = (await bolt.admin.get("/shelf/items")).json()["items"]
        assert {"name": "hello-web", "version": bolt.host.apps.get("hello-web")["version"]} in items
        assert bolt.host.apps.get("hello-web")["source"]["type"] == "local"
        unknown = await bolt.admin.get("/shelf/tasks/99999")
        assert unknown.status_code == 404 and unknown.json() == {"shelf_error": "no such shelf task", "status": 404}


def test_pluggy_is_not_bypassed_by_the_host_for_firstresult(tmp_path: Path) -> None:
    """The reason for host.hooks: pluggy itself counts an abstaining coroutine as the answer."""
    pm = make_plugin_manager(settings_for_tests(tmp_path, plugins=()), extra=[AsyncAbstainer()])
    answer = pm.hook.permission_allowed(host=None, actor=None, action="x", resource=None)
    assert inspect.iscoroutine(answer)
    answer.close()
    assert isinstance(pm, pluggy.PluginManager)


class SystemOnly:
    """A route only system apps may call, through the API's require_system_app."""

    @hookimpl
    def register_routes(self, host: Any) -> list[Any]:
        from starlette.responses import JSONResponse
        from starlette.routing import Route

        from bolt_host.plugin import require_system_app

        async def whoami(request: Any) -> Any:
            return JSONResponse({"app": require_system_app(request).app})

        return [Route("/system-only", whoami, methods=["GET"])]


async def test_require_system_app_admits_only_a_system_apps_token(tmp_path: Path) -> None:
    from bolt_host import errors

    async with running_host(tmp_path, plugins=[SystemOnly()]) as bolt:
        for path in ("notes", "app-admin"):
            assert (await bolt.admin.post("/api/apps/local", json={"path": path})).status_code == 201
        assert (await bolt.admin.get("/system-only")).json()["code"] == errors.APP_TOKEN_MISSING
        async with bolt.client_with(**{"X-Bolt-App-Token": bolt.host.tokens.issue("notes")}) as plain:
            assert (await plain.get("/system-only")).json()["code"] == errors.NOT_SYSTEM_APP
        async with bolt.client_with(**{"X-Bolt-App-Token": bolt.host.tokens.issue("app-admin")}) as system:
            assert (await system.get("/system-only")).json() == {"app": "app-admin"}


async def test_a_plugins_dir_file_registers_its_plugin_object(tmp_path: Path) -> None:
    """The worked backend saved as a loose file: the host registers its ``plugin``, as for an entry point."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    match = re.search(r"<!-- example-backend -->\s*```python\n(.*?)```", DOCS, re.S)
    assert match
    (folder / "shelf.py").write_text(match.group(1))
    async with running_host(tmp_path / "data", plugins_dir=folder) as bolt:
        anonymous = await bolt.client.get("/shelf/items")
        assert anonymous.status_code == 401 and "shelf_error" in anonymous.json()
        listed = {p["name"]: p for p in (await bolt.client.get("/-/plugins")).json()}
        assert {"register_routes", "register_error_formats"} <= set(listed["shelf"]["hooks"])


class Uploader:
    """A route that streams one multipart file into a folder with the API's helper."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @hookimpl
    def register_upload_paths(self, host: Any) -> list[str]:
        return ["/up"]

    @hookimpl
    def register_routes(self, host: Any) -> list[Any]:
        from starlette.responses import JSONResponse
        from starlette.routing import Route

        from bolt_host.plugin import UploadRefused, receive_multipart

        async def upload(request: Any) -> Any:
            try:
                got = await receive_multipart(request, self.folder, 4096, file_field="file")
            except UploadRefused as exc:
                return JSONResponse({"kind": exc.kind}, status_code=exc.status)
            final = got.publish(self.folder / "stored.bin")
            return JSONResponse({"name": got.filename, "size": got.size, "fields": got.fields, "at": final.name})

        return [Route("/up", upload, methods=["POST"])]


async def test_the_multipart_helper_streams_to_disk_caps_and_cleans_up(tmp_path: Path) -> None:
    folder = tmp_path / "incoming"
    uploader = Uploader(folder)
    async with running_host(tmp_path / "data", plugins=[uploader], max_body_bytes=1024) as bolt:
        good = await bolt.client.post("/up", files={"file": ("a.bin", b"x" * 2000)}, data={"note": "hi"})
        assert good.status_code == 200, good.text  # over max_body_bytes: register_upload_paths let it in
        assert good.json() == {"name": "a.bin", "size": 2000, "fields": {"note": "hi"}, "at": "stored.bin"}
        assert (folder / "stored.bin").read_bytes() == b"x" * 2000
        big = await bolt.client.post("/up", files={"file": ("b.bin", b"y" * 5000)})
        assert big.status_code == 413 and big.json() == {"kind": "too-large"}
        long_header = {"Content-Type": "multipart/form-data; boundary=zz"}
        disposition = b'Content-Disposition: form-data; name="file"; filename="' + b"n" * 5000 + b'"'
        body = b"--zz\r\n" + disposition + b"\r\n\r\nx\r\n--zz--\r\n"
        refused = await bolt.client.post("/up", content=body, headers=long_header)
        # python-multipart's own header cap or ours, whichever comes first: a 400, nothing kept
        assert refused.status_code == 400 and refused.json()["kind"] in {"malformed", "header-too-long"}
        missing = await bolt.client.post("/up", files={"other": ("c.bin", b"z")})
        assert missing.status_code == 400 and missing.json() == {"kind": "no-file"}
    assert sorted(p.name for p in folder.iterdir()) == ["stored.bin"]  # no part file left behind


async def test_install_as_task_runs_the_backends_after_step_and_discards_its_copy(tmp_path: Path) -> None:
    from bolt_host.config import BUNDLED_LOCAL_REPO
    from bolt_host.plugin import install_as_task

    async with running_host(tmp_path / "data") as bolt:
        copy = tmp_path / "copy-of-hello-web"
        shutil.copytree(BUNDLED_LOCAL_REPO / "hello-web", copy)
        seen: list[tuple[str, bool]] = []

        async def after(task: Any, app: dict[str, Any]) -> None:
            seen.append((app["name"], bolt.host.apps.get(app["name"]) is not None))
            task.log("backend bookkeeping done")

        record = install_as_task(bolt.host, copy, {"type": "local", "path": "copy"}, name="hello-web", version=None,
                                 after=after, discard_package=True)
        done = await bolt.host.tasks.wait(record["id"], timeout=60)
        assert done["status"] == "succeeded", done
        assert seen == [("hello-web", True)]
        assert "backend bookkeeping done" in bolt.host.tasks.read_log(record["id"])[0]
        assert not copy.exists()

        broken = tmp_path / "broken.tgz"
        broken.write_bytes(b"not a tarball")
        failed = install_as_task(bolt.host, broken, {"type": "upload"}, name="broken", version="1.0.0",
                                 after=after, discard_package=True)
        assert (await bolt.host.tasks.wait(failed["id"], timeout=60))["status"] == "failed"
        assert seen == [("hello-web", True)] and not broken.exists()
