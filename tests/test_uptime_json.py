"""``uptime_json`` writes exactly the bytes the JSON encoding of ``round(uptime, 3)`` writes."""

from __future__ import annotations

import json
import random

from bolt_host.services.app_runtime import uptime_json


def test_uptime_bytes_are_those_of_the_rounded_float() -> None:
    rng = random.Random(20)
    values = [i / 1000 for i in range(200_000)]  # every millisecond of the first 200 s
    values += [i / 1000 + 0.0005 for i in range(0, 200_000, 7)]  # halfway cases
    values += [rng.uniform(0, 10) for _ in range(20_000)] + [rng.expovariate(1e-4) for _ in range(20_000)]
    values += [0.0, -0.0, 1e-9, 0.0004999, 0.0005, 0.0015, 2.675, 86_400 * 365 * 30 + 0.0005, 1e15, 1e17, -1.5]
    for value in values:
        assert uptime_json(value) == json.dumps(round(value, 3)).encode(), value
    assert uptime_json(None) == b"0.0"
