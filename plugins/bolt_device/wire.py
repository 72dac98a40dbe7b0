"""The MQTT wire format shared by the manager and the agents (see docs/device.md).

Topics follow Kura's namespace (``$EDC/<account>/<client>/...``); bodies are
JSON ``{"sentOn": <ms>, "metrics": {...}, "body": ...}`` instead of Kura's
protobuf KuraPayload, with Kura's metric names.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from bolt_host.plugin import jsondepth

EDC = "$EDC"
APP = "DEPLOY-V2"
PRESENCE = ("BIRTH", "DC", "LWT")
QOS = 1
# Reply codes (Kura's KuraResponsePayload).
OK, BAD_REQUEST, NOT_FOUND, ERROR = 200, 400, 404, 500


@dataclass
class Payload:
    metrics: dict[str, Any] = field(default_factory=dict)
    body: Any = None
    sent_on: int = field(default_factory=lambda: int(time.time() * 1000))

    def encode(self) -> bytes:
        doc: dict[str, Any] = {"sentOn": self.sent_on, "metrics": self.metrics}
        if self.body is not None:
            doc["body"] = self.body
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes | bytearray | str | None) -> Payload:
        """Parse a message; anything that is not our JSON object yields an empty payload."""
        if not raw:
            return cls()
        try:
            doc = jsondepth.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return cls()
        if not isinstance(doc, dict):
            return cls()
        metrics, sent_on = doc.get("metrics"), doc.get("sentOn")
        metrics = metrics if isinstance(metrics, dict) else {}
        sent_on = sent_on if isinstance(sent_on, int) else int(time.time() * 1000)
        return cls(metrics=metrics, body=doc.get("body"), sent_on=sent_on)


# topics -------------------------------------------------------------------------
def presence_topic(account: str, client: str, kind: str, prefix: str = EDC) -> str:
    return f"{prefix}/{account}/{client}/MQTT/{kind}"


def request_topic(account: str, client: str, verb: str, resource: str, prefix: str = EDC) -> str:
    return f"{prefix}/{account}/{client}/{APP}/{verb}/{resource}"


def reply_topic(account: str, requester: str, client: str, request_id: str, prefix: str = EDC) -> str:
    """Kura's reply topic plus the replying client's id, so that a broker ACL can let
    only that client write it and the manager can check who answered."""
    return f"{prefix}/{account}/{requester}/{APP}/REPLY/{client}/{request_id}"


def notify_topic(account: str, requester: str, client: str, resource: str, prefix: str = EDC) -> str:
    return f"{prefix}/{account}/{requester}/{APP}/NOTIFY/{client}/{resource}"


def manager_status_topic(manager: str) -> str:
    """Retained: ``online`` true while the manager is connected (its will says false)."""
    return f"bolt/manager/{manager}/status"


MANAGER_STATUS_FILTER = "bolt/manager/+/status"


@dataclass(frozen=True)
class Topic:
    """A parsed ``$EDC`` topic."""

    account: str
    client: str
    app: str
    rest: tuple[str, ...]

    @classmethod
    def parse(cls, topic: str, prefix: str = EDC) -> Topic | None:
        parts = topic.split("/")
        if len(parts) < 4 or parts[0] != prefix:
            return None
        return cls(parts[1], parts[2], parts[3], tuple(parts[4:]))
