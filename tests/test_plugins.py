from __future__ import annotations

import re
from pathlib import Path
from types import ModuleType

import pytest
from starlette.routing import Route

from bolt_host import errors, hookimpl
from bolt_host.app import create_app
from bolt_host.plugins import PluginLoadError
from bolt_host.testing import running_host, settings_for_tests

HERE = Path(__file__).parent
BUILT_IN = {"robot", "market", "device", "enterprise"}


async def test_built_in_store_backends_load_through_entry_points(tmp_path: Path) -> None:
    async with running_host(tmp_path) as bolt:
        listed = (await bolt.client.get("/-/plugins")).json()
    by_name = {p["name"]: p for p in listed}
    assert set(by_name) >= BUILT_IN
    assert all(by_name[name]["origin"] == "entry-point" for name in BUILT_IN)
    assert all(by_name[name]["version"] for name in BUILT_IN)


async def test_plugins_dir_adds_routes_events_and_permission_rules(tmp_path: Path) -> None:
    async with running_host(tmp_path, plugins_dir=HERE / "plugins") as bolt:
        assert (await bolt.client.get("/greet?name=ada")).json() == {"hello": "ada"}
        listed = {p["name"]: p for p in (await bolt.client.get("/-/plugins")).json()}
        assert listed["greeter"]["origin"] == "plugins-dir"
        assert {"register_routes", "on_event", "permission_allowed"} <= set(listed["greeter"]["hooks"])
        refused = await bolt.admin.get("/api/roles")
        assert refused.json()["code"] == errors.NO_ADMIN_RIGHT
        assert (await bolt.admin.get("/api/users")).json()["code"] == 0
        await bolt.host.events.drain()
        greeter = bolt.host.pm.get_plugin("greeter")
        assert "system-started" in greeter.seen_events
        doc = (await bolt.client.get("/openapi.json")).json()
        assert doc["paths"]["/greet"]["get"]["summary"] == "Say hello."


def test_allow_list_and_deny_list(tmp_path: Path) -> None:
    only_robot = create_app(settings_for_tests(tmp_path, plugins=("robot",)))
    assert {name for name, _ in only_robot.state.host.pm.list_name_plugin()} == {"robot"}
    no_market = create_app(settings_for_tests(tmp_path, disable_plugins=("market",)))
    names = {name for name, _ in no_market.state.host.pm.list_name_plugin()}
    assert "market" not in names and "robot" in names


def test_duplicate_route_fails_start_up_naming_both_plugins(tmp_path: Path) -> None:
    with pytest.raises(PluginLoadError) as failure:
        create_app(settings_for_tests(tmp_path, plugins_dir=HERE / "plugins_dup"))
    message = str(failure.value)
    assert "first" in message and "second" in message and "/same" in message


def test_plugin_cannot_take_a_core_route(tmp_path: Path) -> None:
    class Thief:
        @hookimpl
        def register_routes(self, host):
            return [Route("/api/users/login", lambda request: None, methods=["POST"])]

    with pytest.raises(PluginLoadError, match="bolt_host"):
        create_app(settings_for_tests(tmp_path), plugins=[Thief()])


def test_misspelled_hook_fails_loudly(tmp_path: Path) -> None:
    with pytest.raises(PluginLoadError, match="register_route"):
        create_app(settings_for_tests(tmp_path, plugins_dir=HERE / "plugins_bad"))


def _docs_example() -> ModuleType:
    text = (HERE.parent / "docs" / "plugins.md").read_text()
    match = re.search(r"<!-- example-plugin -->\s*```python\n(.*?)```", text, re.S)
    assert match, "docs/plugins.md lost its example plugin"
    module = ModuleType("docs_example_plugin")
    exec(compile(match.group(1), "docs/plugins.md", "exec"), module.__dict__)
    return module


async def test_the_example_in_docs_plugins_md_works(tmp_path: Path) -> None:
    example = _docs_example()
    async with running_host(tmp_path, plugins=[example]) as bolt:
        anonymous = await bolt.client.post("/hello/notes", json={"text": "hi"})
        assert anonymous.status_code == 401
        created = await bolt.admin.post("/hello/notes", json={"text": "hi"})
        assert created.status_code == 201
        listed = await bolt.admin.get("/hello/notes")
        assert [n["text"] for n in listed.json()["body"]] == ["hi"]
        await bolt.admin.post("/api/users", json={"name": "dora", "password": "dora-password"})
        await bolt.host.events.drain()
        assert "user-created" in [e for e, _ in example.EVENTS_SEEN]


def test_a_duplicate_plugin_name_says_where_each_plugin_came_from(tmp_path: Path) -> None:
    with pytest.raises(PluginLoadError) as failure:
        create_app(settings_for_tests(tmp_path, plugins_dir=HERE / "plugins_dupname"))
    message = str(failure.value)
    assert "two plugins are named 'robot'" in message
    assert "entry point 'robot' (bolt_robot)" in message
    assert str(HERE / "plugins_dupname" / "robot.py") in message
