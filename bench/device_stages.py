"""What the fan-out benchmark sees on the broker: an observer counting each device's requests,
replies and births, and the stage times it derives from them and from the manager's stage log."""

from __future__ import annotations

import json
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

MANAGER_PASSWORD = "bench-manager-password"  # the manager's and this observer's broker password


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)




class BrokerCounter:
    """Counts every fleet publish the broker routes, and install completions per device."""

    def __init__(self, port: int) -> None:
        self.count = 0
        self.times: list[float] = []
        self.installed: dict[str, float] = {}
        self.downloaded: dict[str, float] = {}
        self.failed: dict[str, str] = {}
        self.requested: dict[str, float] = {}  # device -> when its first download request went through
        self.replied: dict[str, float] = {}
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-counter")
        self.client.username_pw_set("bolt-manager-observer", MANAGER_PASSWORD)
        self.client.on_message = self._on_message
        self.births: dict[str, list[float]] = {}  # device -> when each of its BIRTHs went through
        self.connected = threading.Event()
        self.client.on_connect = self._on_connect
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        wait_for(self.connected.is_set, 10, "counter connected")

    def _on_connect(self, client: Any, *args: Any) -> None:
        # again after each reconnect (clean session), so a broker restart blinds it only while down
        client.subscribe([("$EDC/#", 1), ("bolt/#", 1)])
        self.connected.set()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        now = time.monotonic()
        self.count += 1
        self.times.append(now)
        if message.topic.endswith("/MQTT/BIRTH"):
            self.births.setdefault(message.topic.split("/")[2], []).append(now)
        elif message.topic.endswith("/DEPLOY-V2/EXEC/download"):
            self.requested.setdefault(message.topic.split("/")[2], now)
        elif "/DEPLOY-V2/REPLY/" in message.topic:
            self.replied.setdefault(message.topic.split("/")[-2], now)
        if "/NOTIFY/" in message.topic and message.topic.endswith(("/install", "/download")):
            metrics = json.loads(message.payload).get("metrics", {})
            device, step = message.topic.split("/")[-2:]
            if step == "install" and metrics.get("dp.install.status") == "COMPLETED":
                self.installed.setdefault(device, time.monotonic())
            elif step == "download" and metrics.get("dp.download.status") == "COMPLETED":
                self.downloaded.setdefault(device, now)
            elif metrics.get(f"dp.{step}.status") == "FAILED":
                self.failed[device] = metrics.get(f"dp.{step}.error.message", "")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def stage_seconds(counter: BrokerCounter, started: float) -> dict[str, Any]:
    """Where the time goes, per device, as the broker saw it: the manager's part (from the burst's
    start to the device's request going through the broker), the agent's answer (request to
    reply) and the agent's work (request to install COMPLETED: download, check, install, start)."""

    def spread(values: list[float]) -> dict[str, float] | None:
        if not values:
            return None
        ordered = sorted(values)
        return {"p50": round(statistics.median(ordered), 2), "p90": round(ordered[int(len(ordered) * 0.9) - 1], 2),
                "max": round(ordered[-1], 2)}

    requested = counter.requested
    return {
        "callToRequestPublished": spread([t - started for t in requested.values()]),
        "requestToReply": spread([counter.replied[d] - t for d, t in requested.items() if d in counter.replied]),
        "requestToInstalled": spread([counter.installed[d] - t for d, t in requested.items()
                                      if d in counter.installed]),
        "requestToDownloaded": spread([counter.downloaded[d] - t for d, t in requested.items()
                                       if d in counter.downloaded]),
        "downloadedToInstalled": spread([counter.installed[d] - t for d, t in counter.downloaded.items()
                                         if d in counter.installed]),
        "lastRequestPublished": round(max(requested.values()) - started, 2) if requested else None,
        "requestsSeen": len(requested),
    }


def manager_stages(path: Path, counter: BrokerCounter, calls: list[tuple[float, int, dict[str, Any]]],
                   started: float) -> dict[str, Any]:
    """Where each call's time went, from the manager's own stage log (bolt_device/stages.py:
    handler began, operation stored, request acknowledged by the broker, reply read, handler
    answered), the broker subscriber's view (request and reply through the broker) and this
    process (answer read); every time is the machine's monotonic clock."""
    if not path.exists():
        return {"missing": str(path)}
    rows = {row["clientId"]: row for row in json.loads(path.read_text()).values() if "clientId" in row}
    answered = {body["clientId"]: body["answeredAt"] for _, _, body in calls if "answeredAt" in body}

    def spread(pairs: list[tuple[float, float]]) -> dict[str, float] | None:
        gaps = sorted(b - a for a, b in pairs)
        if not gaps:
            return None
        return {"p50": round(statistics.median(gaps), 2), "p90": round(gaps[int(len(gaps) * 0.9) - 1], 2),
                "max": round(gaps[-1], 2)}

    def between(first: Any, second: Any) -> dict[str, float] | None:
        return spread([(first(d, r), second(d, r)) for d, r in rows.items()
                       if first(d, r) is not None and second(d, r) is not None])

    def stage(name: str) -> Any:
        return lambda d, r: r.get(name)

    return {
        "burstStartToHandler": between(lambda d, r: started, stage("call")),
        "handlerToOperationStored": between(stage("call"), stage("created")),
        "storedToRequestAcknowledged": between(stage("created"), stage("published")),
        "requestThroughBrokerToReplyThroughBroker": between(lambda d, r: counter.requested.get(d),
                                                            lambda d, r: counter.replied.get(d)),
        "replyThroughBrokerToReplyReadByManager": between(lambda d, r: counter.replied.get(d), stage("reply")),
        "replyReadToHandlerResumed": between(stage("reply"), stage("resumed")),
        "handlerResumedToAnswered": between(stage("resumed"), stage("answered")),
        "handlerAnsweredToAnswerSent": between(stage("answered"), stage("sent")),
        "answerSentToAnswerReadByBench": between(stage("sent"), lambda d, r: answered.get(d)),
        "replyThroughBrokerToAnswerReadByBench": between(lambda d, r: counter.replied.get(d),
                                                         lambda d, r: answered.get(d)),
        "calls": len(rows),
    }


def births_after(counter: BrokerCounter, up_at: float) -> dict[str, Any]:
    """How long after the broker came back each device announced itself again (its first BIRTH
    then), and how many never did while the counter watched."""
    back = sorted(min(t for t in times if t >= up_at) - up_at
                  for times in counter.births.values() if any(t >= up_at for t in times))
    if not back:
        return {"devices": 0}
    return {"devices": len(back), "p50": round(statistics.median(back), 2), "max": round(back[-1], 2)}
