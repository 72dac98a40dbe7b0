from __future__ import annotations

import logging

import pytest

from bolt_host import errors
from bolt_host.testing import RunningHost


async def test_success_envelope_has_code_zero_and_body(bolt: RunningHost) -> None:
    response = await bolt.admin.get("/api/users/@current")
    assert response.status_code == 200
    data = response.json()
    assert data["code"] == 0
    assert data["body"]["name"] == "admin"
    assert "error" not in data


async def test_unknown_api_path_answers_103_with_trace_id(bolt: RunningHost, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bolt_host")
    response = await bolt.admin.get("/api/no-such-thing")
    assert response.status_code == 404
    data = response.json()
    assert data["code"] == errors.ENDPOINT_NOT_FOUND
    assert "/api/no-such-thing" in data["error"]["message"]
    assert data["errorUserTitle"] == "Bolt Error 103"
    trace = data["errorTraceId"]
    assert trace and response.headers["x-trace-id"] == trace
    assert any(trace in record.getMessage() for record in caplog.records), "trace id missing from the log"


async def test_wrong_method_is_an_envelope_error(bolt: RunningHost) -> None:
    response = await bolt.admin.put("/api/users/login")
    assert response.status_code == 405
    assert response.json()["code"] == errors.ENDPOINT_NOT_FOUND


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b"\xff\xfe"])
async def test_malformed_body_is_a_clear_400(bolt: RunningHost, raw: bytes) -> None:
    response = await bolt.client.post("/api/users/login", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 400
    data = response.json()
    assert data["code"] == errors.BAD_REQUEST
    assert "JSON" in data["error"]["message"]
    assert data["errorTraceId"]


async def test_oversized_body_is_refused_before_reading(bolt: RunningHost) -> None:
    big = b"x" * (bolt.host.settings.max_body_bytes + 1)
    response = await bolt.admin.post("/api/users", content=big, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.json()["code"] == errors.PAYLOAD_TOO_LARGE
    assert len(bolt.host.users.list()) == 1


async def test_form_encoded_bodies_are_accepted(bolt: RunningHost) -> None:
    response = await bolt.client.post(
        "/api/users/login",
        content=f"name=admin&password={bolt.admin_password}",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.json()["code"] == 0


async def test_health_reports_version_and_uptime(bolt: RunningHost) -> None:
    data = (await bolt.client.get("/-/health")).json()
    assert data["body"]["version"] == bolt.host.version
    assert data["body"]["uptime"] >= 0


async def test_security_headers_on_every_response(bolt: RunningHost) -> None:
    response = await bolt.client.get("/-/health")
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_openapi_lists_core_routes(bolt: RunningHost) -> None:
    doc = (await bolt.client.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    assert "post" in doc["paths"]["/api/users/login"]
    assert doc["paths"]["/api/users/{name}"]["delete"]["parameters"][0]["name"] == "name"


# Bolt's own code table (bolt-internal-errors, as listed in the reference notes): the
# host may use these with Bolt's meaning; anything it invents belongs in 1100-1199.
BOLT_TABLE = {
    0, 1000, 100, 103, 110, 113, 120, 130, 200, 201, 202, 203, 212, 213, 300, 301, 302, 303,
    310, 311, 312, 313, 320, 321, 322, 323, 334, 335, 336, 337, 340, 341, 342, 343, 350,
    400, 401, 402, 403, 404, 405, 406, 410, 414, 415, 416, 417, 418, 419, 420, 432, 433,
    504, 510, 520, 524, 600, 601, 602, 603, 604, 612, 613, 700, 701, 702, 703, 704, 710,
}  # fmt: skip


def test_every_code_is_bolts_or_in_the_extension_range() -> None:
    codes = {name: value for name, value in vars(errors).items() if name.isupper() and isinstance(value, int)}
    invented = {name: code for name, code in codes.items() if code not in BOLT_TABLE}
    assert invented, "the extension codes went missing"
    assert {name: code for name, code in invented.items() if code not in errors.EXTENSION_CODES} == {}
    assert errors.BoltError(errors.RATE_LIMITED).http_status == 429
    assert errors.BoltError(errors.BAD_REQUEST).http_status == 400
    assert errors.BoltError(errors.PAYLOAD_TOO_LARGE).http_status == 413
    assert errors.BoltError(errors.CSRF_FAILED).http_status == 403
