"""JSON from untrusted hands, with its nesting depth capped before it is parsed.

``json.loads`` recurses once per level: 100,000 ``[`` raise RecursionError (not a
ValueError, so callers' "bad JSON" branch missed it), and a document just under the
interpreter's limit parses but then fails wherever it is encoded again deeper in the stack
(storage, responses).  No request or registry answer the host reads nests anywhere near
``MAX_DEPTH``.
"""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

MAX_DEPTH = 64

_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(rb"[\[\]{}]")
_STEP = {b"[": 1, b"{": 1, b"]": -1, b"}": -1}


class TooDeep(ValueError):
    """The document nests deeper than allowed (a ValueError, like any other bad JSON)."""


def depth_of(raw: bytes | bytearray | str) -> int:
    """The deepest nesting of arrays and objects in ``raw`` (brackets inside strings do not count)."""
    data = raw.encode("utf-8", errors="surrogatepass") if isinstance(raw, str) else bytes(raw)
    brackets = _BRACKETS.findall(_STRINGS.sub(b"", data))
    return max(itertools.accumulate(_STEP[b] for b in brackets), default=0)


def loads(raw: bytes | bytearray | str, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads`` that refuses, as a ValueError, documents nested deeper than ``max_depth``."""
    depth = depth_of(raw)
    if depth > max_depth:
        raise TooDeep(f"JSON nested {depth} levels deep; at most {max_depth} are accepted")
    return json.loads(raw)
