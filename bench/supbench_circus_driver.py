"""Drives one circusd for ``supervisor_bench.py``; runs with bench/.venv-circus's Python.

One JSON request per stdin line, one JSON answer per stdout line (prefixed ``@@``):
``{"op": "start", "names": [...]}`` -> ``{"ok": true, "ms": ...}`` (one ``start`` per
watcher, one after the other: circus's ``start`` of all or of a glob skips watchers with
``autostart = false``, and circusd refuses a command while another is running),
``{"op": "stop"}`` (one ``stop`` of every watcher), ``{"op": "status"}`` (one ``status``
call, what ``circusctl status`` sends: states, no pids), ``{"op": "pids", "names": [...]}``
(one ``list`` per watcher), ``{"op": "quit"}`` (circusd's own shutdown).  ``ms`` is the
time the call itself took, measured here so the pipe to the benchmark is not counted.
"""

from __future__ import annotations

import json
import sys
import time

from circus.client import CircusClient

ALREADY_RUNNING = 5  # circus.exc: "arbiter is already running <command>"


def main() -> None:
    client = CircusClient(endpoint=sys.argv[1], timeout=120.0)
    for line in sys.stdin:
        request = json.loads(line)
        op = request["op"]
        t0 = time.perf_counter()
        try:
            result = run(client, op, request)
            answer = {"ok": True, "result": result}
        except Exception as exc:  # the benchmark reports it
            answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        answer["ms"] = (time.perf_counter() - t0) * 1000
        sys.stdout.write("@@" + json.dumps(answer) + "\n")
        sys.stdout.flush()
        if op == "quit":
            break
    client.stop()


def run(client: CircusClient, op: str, request: dict) -> object:
    if op == "start":
        for name in request["names"]:
            # waiting: circusd runs one watcher command at a time and refuses the next meanwhile
            call(client, "start", name=name, waiting=True)
        return None
    if op == "stop":
        return call(client, "stop", waiting=False)
    if op == "status":
        return call(client, "status")
    if op == "pids":
        found = {}
        for name in request["names"]:
            answer = call(client, "list", name=name)
            found[name] = answer.get("pids", [])
        return found
    if op == "quit":
        return call(client, "quit", waiting=True)
    raise ValueError(f"unknown op {op!r}")


def call(client: CircusClient, command: str, **properties: object) -> dict:
    """One command; while circusd is busy with another (errno 5, e.g. its own start-up), ask again."""
    deadline = time.monotonic() + 120
    while True:
        answer = client.call({"command": command, "properties": properties})
        if answer.get("errno") != ALREADY_RUNNING or time.monotonic() > deadline:
            return check(answer)
        time.sleep(0.005)


def check(answer: dict) -> dict:
    if answer.get("status") != "ok":
        raise RuntimeError(f"circus refused: {answer}")
    return answer


if __name__ == "__main__":
    main()
