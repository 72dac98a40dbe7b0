"""The device plugin's configuration, and that it is inert without it (no routes, no
broker, no network) so that every other host and test is unaffected."""

from __future__ import annotations

from pathlib import Path

import pytest
from bolt_device.config import DeviceConfig, DeviceConfigError, parse_broker_url
from bolt_device.downloads import parse_hash
from bolt_device.jobs import BadRequest, DownloadRequest, UninstallRequest, cache_file
from bolt_device.kapua import scope_id

from bolt_host.testing import running_host

pytestmark = pytest.mark.timeout(60)


async def test_without_device_settings_the_plugin_is_inert(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BOLT_DEVICE_MODE", "BOLT_DEVICE_BROKER_URL"):
        monkeypatch.delenv(name, raising=False)
    async with running_host(tmp_path / "data") as bolt:
        assert "device" in {p["name"] for p in (await bolt.admin.get("/-/plugins")).json()}
        assert "device" not in bolt.host.state
        response = await bolt.admin.post("/v1/authentication/user", json={"username": "admin", "password": "x"})
        assert response.status_code == 404
        for table in ("device_accounts", "device_devices", "device_operations", "device_access_tokens"):
            assert bolt.host.db.schema_version(table) == 0


def test_config_from_the_environment() -> None:
    assert DeviceConfig.from_env({}).active is False
    agent = DeviceConfig.from_env({
        "BOLT_DEVICE_MODE": "agent", "BOLT_DEVICE_BROKER_URL": "mqtt://broker.lan:1884",
        "BOLT_DEVICE_CLIENT_ID": "pump-7", "BOLT_DEVICE_SCOPE": "acme",
        "BOLT_DEVICE_USERNAME": "pump-7", "BOLT_DEVICE_PASSWORD": "s3cret",
    })
    assert (agent.mode, agent.client_id, agent.account) == ("agent", "pump-7", "acme")
    assert agent.broker is not None and (agent.broker.host, agent.broker.port) == ("broker.lan", 1884)
    assert agent.broker.password == "s3cret" and "s3cret" not in repr(agent)
    manager = DeviceConfig.from_env({"BOLT_DEVICE_MODE": "manager"})
    assert manager.broker is None and manager.client_id == manager.manager_id == "bolt-manager"
    tls = parse_broker_url("mqtts://u:p%40ss@example.org")
    assert (tls.tls, tls.port, tls.username, tls.password) == (True, 8883, "u", "p@ss")


@pytest.mark.parametrize(
    "environ",
    [
        {"BOLT_DEVICE_MODE": "fleet"},
        {"BOLT_DEVICE_MODE": "agent"},
        {"BOLT_DEVICE_MODE": "agent", "BOLT_DEVICE_BROKER_URL": "http://x"},
        {"BOLT_DEVICE_MODE": "agent", "BOLT_DEVICE_BROKER_URL": "mqtt://x", "BOLT_DEVICE_CLIENT_ID": "a/b"},
        {"BOLT_DEVICE_MODE": "manager", "BOLT_DEVICE_SCOPE": "#"},
        {"BOLT_DEVICE_MODE": "manager", "BOLT_DEVICE_TOKEN_SECONDS": "soon"},
    ],
)
def test_bad_settings_fail_loudly(environ: dict[str, str]) -> None:
    with pytest.raises(DeviceConfigError):
        DeviceConfig.from_env(environ)


def test_hashes_must_be_strong() -> None:
    assert parse_hash("SHA256:" + "A" * 64) == ("sha256", "a" * 64)
    assert parse_hash("sha512:" + "0" * 128)[0] == "sha512"
    for weak in ("MD5:0d04154164145cd6b2167fdd457ed28f", "SHA1:" + "0" * 40, "SHA256:xyz", "nohash"):
        with pytest.raises(ValueError):
            parse_hash(weak)


def test_scope_ids_are_kapua_short_ids() -> None:
    assert (scope_id(1), scope_id(2), scope_id(256)) == ("AQ", "Ag", "AQA")


@pytest.mark.parametrize("job_id", ["../../escaped", "a/b", "..", "x" * 65, "job id", "a\x00b", True, 1.5, ["1"]])
def test_hostile_job_ids_are_refused(job_id: object) -> None:
    metrics = {"job.id": job_id, "dp.uri": "http://x/p.tgz", "dp.name": "notes", "dp.version": "1.0.0"}
    with pytest.raises(BadRequest, match=r"job\.id"):
        DownloadRequest.from_metrics(metrics)
    with pytest.raises(BadRequest, match=r"job\.id"):
        UninstallRequest.from_metrics({"job.id": job_id, "dp.name": "notes"})


def test_job_ids_of_kapua_and_kura_are_accepted_and_stay_in_the_cache(tmp_path: Path) -> None:
    for job_id, expected in (("m8yYjYrF-_8", "m8yYjYrF-_8"), (1732380000000, "1732380000000")):
        request = DownloadRequest.from_metrics({"job.id": job_id, "dp.uri": "http://x/p.tgz", "dp.name": "notes",
                                                "dp.version": "1.0.0"})
        assert request.job_id == expected
        assert cache_file(tmp_path, request.job_id).parent == tmp_path
    with pytest.raises(BadRequest):
        cache_file(tmp_path, "../escaped")
