"""API fuzzing: schemathesis against the host's own ``/openapi.json`` on a real uvicorn server.

Every operation the running host describes (core and every loaded store backend) is
called with generated data, as the bootstrap admin and anonymously, and must answer:

* never a server error: no 500 (an unhandled exception), and no other 5xx than the
  deliberate upstream answers in ``DELIBERATE_5XX``;
* where the document declares a response schema (the Bolt envelope of the core
  ``/api/*`` routes), a response that matches it - ``response_schema_conformance``;
* within ``REQUEST_TIMEOUT`` seconds (no hung requests).

The number of examples is bounded (``FUZZ_EXAMPLES`` / ``FUZZ_ANON_EXAMPLES``, env
``BOLT_FUZZ_EXAMPLES`` to raise them locally) and generation is derandomized, so the
run is repeatable in CI.  Failures are collected over all operations and reported
together, without shrinking, so one run shows every broken route.
"""

from __future__ import annotations

import copy
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import response_schema_conformance

from bolt_host.config import BUNDLED_LOCAL_REPO
from bolt_host.services.sessions import LoginThrottle
from tests.helpers import free_port
from tests.servers import LiveServer, live_host

FIXTURE_APPS = Path(__file__).parent / "fixtures" / "apps"
REQUEST_TIMEOUT = 15.0
# Statuses an API answers on purpose when something upstream is missing or failing (502: the
# registry or device backend failed or is not configured, 503: no device backend).  Anything
# else from 500 up (an unhandled exception is a 500) fails the run.
DELIBERATE_5XX = {502, 503, 504}
FUZZ_EXAMPLES = int(os.environ.get("BOLT_FUZZ_EXAMPLES", "6"))
FUZZ_ANON_EXAMPLES = max(2, FUZZ_EXAMPLES // 2)
TIME_BUDGET = 150.0  # seconds per caller; the run fails (naming what is left) rather than creep

# Operations that cannot be fuzzed safely, and why.
EXCLUDED_PREFIXES = {
    # The proxy forwards anything to the app's own server: the app's answers are not the
    # host's, and the proxy's own checks are covered in test_running_apps/test_web_security.
    "/x/{name}": "app proxy: answers come from the app, not the host",
}
EXCLUDED_OPERATIONS = {
    ("GET", "/api/events/stream"): "server-sent events: the stream never ends by design",
}

# Fields the handlers read (core and store backends).  Declared as optional properties so
# the generator often sends them, with the right or a wrong type, instead of only random keys.
ANY: dict[str, Any] = {}
STRING = {"type": "string"}
FLAG = {"anyOf": [{"type": "boolean"}, {"type": "string"}]}
STRINGS = {"type": "array", "items": {"type": "string"}}
HINT_FIELDS: dict[str, Any] = {
    "name": STRING,
    "path": STRING,
    "version": STRING,
    "system": FLAG,
    "upgrade": FLAG,
    "password": STRING,
    "newPassword": STRING,
    "username": STRING,
    "roles": STRINGS,
    "query": ANY,
    "object": ANY,
    "values": ANY,
    "map": ANY,
    "app": STRING,
    "role": STRING,
    "permission": STRING,
    "permissions": STRINGS,
    "user": STRING,
    "body": ANY,
    "displayName": STRING,
    "tags": STRINGS,
    "order": ANY,
    "controlledVisibility": ANY,
    "deleteDatabase": FLAG,
    "deleteSourceFolder": FLAG,
    "packages": ANY,
    "filename": STRING,
    "id": ANY,
    "appName": STRING,
    "source": STRING,
    "asset": ANY,
    "type": STRING,
    "envs": ANY,
    "isAdmin": ANY,
}
HINT_BODY = {"type": "object", "properties": HINT_FIELDS}
BODY_METHODS = {"post", "put", "patch", "delete"}


@pytest.fixture
def fuzz_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LiveServer]:
    # The device backend as a fleet manager (its embedded broker, no Mosquitto needed), so
    # the Kapua routes under /v1 are in the document and fuzzed with the rest.
    monkeypatch.setenv("BOLT_DEVICE_MODE", "manager")
    monkeypatch.setenv("BOLT_DEVICE_EMBEDDED_BROKER_PORT", str(free_port()))
    repo = tmp_path / "repo"
    shutil.copytree(BUNDLED_LOCAL_REPO, repo)
    shutil.copytree(FIXTURE_APPS / "echo", repo / "echo")
    with live_host(tmp_path / "data", local_repo=repo, stop_grace_seconds=3.0) as server:
        pids: list[int] = []
        try:
            with httpx.Client(base_url=server.url, auth=server.admin_auth, timeout=60) as admin:
                assert admin.post("/api/apps/local", json={"path": "echo"}).status_code == 201
                started = admin.post("/api/apps/start", json={"name": "echo"})
                assert started.status_code == 200, started.text
                pids.append(started.json()["body"]["pid"])
            yield server
        finally:
            for pid in [*pids, *(c.get("pid") for c in server.host.supervisor.contexts())]:
                if pid and psutil.pid_exists(pid):
                    os.kill(pid, 9)


def _fuzzable_document(url: str) -> dict[str, Any]:
    """The host's document, with JSON bodies (and the known field names) on every write."""
    document = httpx.get(url + "/openapi.json", timeout=30).json()
    document = copy.deepcopy(document)
    for path, item in list(document["paths"].items()):
        if any(path.startswith(prefix) for prefix in EXCLUDED_PREFIXES):
            del document["paths"][path]
            continue
        for method in list(item):
            if (method.upper(), path) in EXCLUDED_OPERATIONS:
                del item[method]
            elif method in BODY_METHODS:
                # Test-only: the generator sends JSON objects to every write, plugin routes included.
                item[method]["requestBody"] = {
                    "required": False,
                    "content": {"application/json": {"schema": HINT_BODY}},
                }
        if not item:
            del document["paths"][path]
    return document


def _admin_token(server: LiveServer) -> str:
    """A user token for the admin (HTTP Basic would spend one scrypt run on every request)."""
    user, password = server.admin_auth
    login = httpx.post(server.url + "/api/users/login", json={"name": user, "password": password}, timeout=30)
    assert login.status_code == 200, login.text
    return login.json()["body"]["token"]


def _fuzz(server: LiveServer, as_admin: bool, examples: int) -> tuple[list[str], int, int]:
    schema = schemathesis.openapi.from_dict(_fuzzable_document(server.url))
    failures: list[str] = []
    calls = {"n": 0}
    operations = [result.ok() for result in schema.get_all_operations()]
    deadline = time.monotonic() + TIME_BUDGET
    host = server.host
    headers: dict[str, str] = {"X-Bolt-User-Token": _admin_token(server)} if as_admin else {}
    slowest: list[tuple[float, str]] = []

    def one_case(label: str, case: Any) -> None:
        # The login routes are fuzzed too: forget their failed attempts so they never throttle
        # the admin (throttling is tested in test_auth), and log in again after a fuzzed logout.
        host.login_throttle = LoginThrottle()
        if as_admin and host.sessions.user_for_token(headers["X-Bolt-User-Token"]) is None:
            headers["X-Bolt-User-Token"] = _admin_token(server)
        calls["n"] += 1
        started = time.monotonic()
        try:
            response = case.call(base_url=server.url, headers=headers, timeout=REQUEST_TIMEOUT)
            slowest.append((time.monotonic() - started, label))
        except requests.Timeout:
            failures.append(f"{label}: no answer within {REQUEST_TIMEOUT}s\n{_curl(case)}")
            return
        except requests.RequestException as exc:
            failures.append(f"{label}: {type(exc).__name__}: {exc}\n{_curl(case)}")
            return
        if response.status_code >= 500 and (response.status_code not in DELIBERATE_5XX or not response.content):
            failures.append(f"{label}: server error {response.status_code}: {response.text[:500]}\n{_curl(case)}")
            return
        try:
            case.validate_response(response, checks=[response_schema_conformance])
        except (AssertionError, BaseExceptionGroup) as exc:  # FailureGroup: names the check, with a curl
            failures.append(f"{label}: {str(exc)[:3000]}")

    for number, operation in enumerate(operations):
        if time.monotonic() > deadline:
            left = ", ".join(op.label for op in operations[number:])
            failures.append(f"time budget of {TIME_BUDGET}s spent; not fuzzed: {left}")
            break
        has_body = bool(operation.definition.raw.get("requestBody"))
        has_params = bool(operation.definition.raw.get("parameters"))
        # Negative data only where there is a body to break (a string path parameter has no
        # invalid value), and one call for an operation that takes nothing at all.
        modes = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE] if has_body else [GenerationMode.POSITIVE]
        if not as_admin:
            modes = [GenerationMode.POSITIVE]
        for mode in modes:
            label = f"{operation.label} [{mode.value}]"
            count = examples if has_body or has_params else 1
            try:
                strategy = operation.as_strategy(generation_mode=mode)
                _runner(strategy, count, label, one_case)()
            except Exception as exc:  # generation itself failed
                failures.append(f"{label}: generation failed: {exc!r}")
    slowest.sort(reverse=True)
    print("slowest requests:", ", ".join(f"{label} {seconds:.2f}s" for seconds, label in slowest[:8]))
    return failures, calls["n"], len(operations)


def _curl(case: Any) -> str:
    try:
        return str(case.as_curl_command())
    except Exception:  # a case that cannot be shown as curl is still reported
        return repr(case)


def _runner(strategy: Any, examples: int, label: str, one_case: Any) -> Any:
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        verbosity=Verbosity.quiet,
    )
    @given(case=strategy)
    def run(case: Any) -> None:
        one_case(label, case)

    return run


def _report(failures: list[str]) -> str:
    shown = "\n\n".join(failures[:15])
    more = f"\n\n... and {len(failures) - 15} more" if len(failures) > 15 else ""
    return f"{len(failures)} fuzzing failures:\n\n{shown}{more}"


@pytest.mark.timeout(400)
def test_fuzz_every_operation_as_admin_and_anonymous(fuzz_server: LiveServer) -> None:
    failures, calls, operations = _fuzz(fuzz_server, True, FUZZ_EXAMPLES)
    anonymous_failures, anonymous_calls, _ = _fuzz(fuzz_server, False, FUZZ_ANON_EXAMPLES)
    failures += [f"(anonymous) {f}" for f in anonymous_failures]
    print(f"fuzzed {operations} operations with {calls} admin and {anonymous_calls} anonymous requests")
    assert operations > 100, "the document lost operations (core + store backends expected)"
    assert not failures, _report(failures)
    # The host is still whole afterwards: it answers, and the app it ran is still running.
    with httpx.Client(base_url=fuzz_server.url, auth=fuzz_server.admin_auth, timeout=30) as client:
        assert client.get("/-/health").status_code == 200
        assert client.get("/api/users/@current").json()["body"]["isAdmin"] is True
