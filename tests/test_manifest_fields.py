"""Every package.json field the host reads is type-checked: a wrong one is a 418 naming it,
through ``POST /api/apps/local``, with nothing changed on disk or in the db."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bolt_host import errors
from bolt_host.testing import RunningHost, running_host
from tests.helpers import settled_snapshot

BAD_BOLT_FIELDS: list[tuple[str, Any]] = [
    ("main", 5),
    ("main", ""),
    ("start", 7),
    ("start", []),
    ("start", ["python3", 1]),
    ("server", "false"),
    ("server", 0),
    ("health", 200),
    ("health", "/he alth"),
    ("system", "yes"),
    ("displayName", {"en": "x"}),
    ("tags", 5),
    ("tags", "abc"),
    ("tags", ["ok", 3]),
    ("index", ["/"]),
    ("public", 5),
    ("public", {"paths": "static"}),
    ("public", ["static", 2]),
    ("env", ["A=1"]),
    ("env", {"A": {"nested": 1}}),
    ("env", {"A": True}),
    ("env", {"BAD=NAME": "1"}),
    ("restart", ["always"]),
    ("restart", "sometimes"),
    ("hooks", ["app-started"]),
    ("hooks", {"app-started": 5}),
    ("hooks", {"app-started": {"type": "web"}}),
    ("permissions", ["write"]),
    ("permissions", {"write": 5}),
    ("controlledVisibility", "true"),
    ("order", "first"),
    ("order", True),
    ("stopGraceSeconds", 0),
    ("stopGraceSeconds", 301),
    ("stopGraceSeconds", "10"),
    ("stopGraceSeconds", True),
    ("firmware", "true"),
    ("flash", 3),
    ("image", 3),
    ("price", "2.50"),
    ("entrances", {"name": "web"}),
]
BAD_PACKAGE_FIELDS: list[tuple[str, Any]] = [
    ("keywords", 5),
    ("keywords", "bolt-app"),
    ("description", ["a"]),
]


def _package(bolt: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"name": "typed", "version": "1.0.0", "keywords": ["bolt-app"], **top, "bolt": {"main": "s.py", **bolt}}


def _write(repo: Path, folder: str, manifest: dict[str, Any]) -> None:
    (repo / folder).mkdir(parents=True)
    (repo / folder / "package.json").write_text(json.dumps(manifest))
    (repo / folder / "s.py").write_text("")
    (repo / folder / "static").mkdir()


@pytest.fixture
async def typed_host(tmp_path: Path) -> AsyncIterator[RunningHost]:
    repo = tmp_path / "repo"
    for index, (field, value) in enumerate(BAD_BOLT_FIELDS):
        _write(repo, f"bolt-{index}", _package({field: value}))
    for index, (field, value) in enumerate(BAD_PACKAGE_FIELDS):
        _write(repo, f"package-{index}", _package({}, **{field: value}))
    _write(repo, "good", _package({"server": False, "tags": ["a"], "stopGraceSeconds": 2.5, "health": None}))
    async with running_host(tmp_path / "data", local_repo=repo) as bolt:
        yield bolt


async def _refused(bolt: RunningHost, folder: str) -> str:
    before = await settled_snapshot(bolt.host)
    response = await bolt.admin.post("/api/apps/local", json={"path": folder})
    assert response.status_code == 404, response.text
    assert response.json()["code"] == errors.LOCAL_PACKAGE_FAILED, response.text
    assert await settled_snapshot(bolt.host) == before
    assert bolt.host.apps.list() == []
    return response.json()["error"]["message"]


@pytest.mark.parametrize(("index", "field"), [(i, f) for i, (f, _) in enumerate(BAD_BOLT_FIELDS)])
async def test_a_badly_typed_bolt_field_is_418_naming_it(typed_host: RunningHost, index: int, field: str) -> None:
    message = await _refused(typed_host, f"bolt-{index}")
    assert f"bolt.{field}" in message


@pytest.mark.parametrize(("index", "field"), [(i, f) for i, (f, _) in enumerate(BAD_PACKAGE_FIELDS)])
async def test_a_badly_typed_package_field_is_418_naming_it(typed_host: RunningHost, index: int, field: str) -> None:
    message = await _refused(typed_host, f"package-{index}")
    assert f"'{field}'" in message


async def test_well_typed_fields_are_kept_as_given(typed_host: RunningHost) -> None:
    response = await typed_host.admin.post("/api/apps/local", json={"path": "good"})
    assert response.status_code == 201, response.text
    app = response.json()["body"]
    assert app["server"] is False and app["tags"] == ["a"] and app["keywords"] == ["bolt-app"]
    assert app["stopGraceSeconds"] == 2.5 and app["health"] is None
