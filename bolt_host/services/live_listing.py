"""``GET /api/apps/@live``'s body, kept encoded between calls.

Each runtime keeps its own context encoded in two parts, before and after the uptime's value
(:meth:`AppRuntime.encoded_parts`).  The listing keeps, per field selection, those parts of
every app it lists, joined with their separators, for as long as nothing any context shows has
changed (:class:`ShownChanges`) and the stats sampler has not published different figures.  A
call in between only writes each app's uptime (it moves with the clock) and joins the parts
once, envelope included; a change re-encodes only the apps whose context changed.

The bytes are the same as encoding every context afresh at the call's moment.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from bolt_host.services.app_runtime import (
    CONTEXT_FIELDS,
    ENCODED_VARIANTS,
    LIVE_STATUSES,
    USAGE_FIELDS,
    AppRuntime,
    uptime_json,
)
from bolt_host.services.runtimes import Runtimes
from bolt_host.services.stats import StatsSampler, TreeUsage


@dataclass
class _Kept:
    stamp: tuple[int, int]  # (shown changes, stats version) it was made at
    shows_usage: bool  # some listed app has a process: the call counts as reading the figures
    # per app: its JSON before the uptime's value (separator included), its runtime, its JSON
    # after the uptime's value (None: no uptime selected, the first part is all of it)
    entries: list[tuple[bytes, AppRuntime, bytes | None]]
    # no uptime selected: the whole answer is the same bytes until the stamp moves, kept for
    # the (head, tail) it was joined with
    whole: tuple[bytes, bytes, bytes] | None = None


class LiveListing:
    def __init__(self, runtimes: Runtimes, stats: StatsSampler) -> None:
        self._runtimes = runtimes
        self._stats = stats
        self._kept: dict[frozenset[str], _Kept] = {}

    def encode(
        self, fields: frozenset[str] | None = None, head: bytes = b"", tail: bytes = b"", now: float | None = None
    ) -> bytes:
        """The listed contexts (only ``fields``, when given) as a JSON array between ``head`` and
        ``tail``, their uptime at monotonic time ``now`` (default: the call's)."""
        key = fields if fields is not None else CONTEXT_FIELDS
        with_usage = not USAGE_FIELDS.isdisjoint(key)
        stamp = (self._runtimes.changes.count, self._stats.version if with_usage else -1)
        kept = self._kept.get(key)
        if kept is None or kept.stamp != stamp:
            kept = self._build(key, with_usage, stamp)
        elif kept.shows_usage:
            self._stats.mark_read()
        if "uptime" not in key:
            return self._whole(kept, head, tail)
        now = time.monotonic() if now is None else now
        out = [head, b"["]
        for before, runtime, after in kept.entries:
            out.append(before)
            if after is not None:
                out.append(uptime_json(runtime.uptime_at(now)))
                out.append(after)
        out.append(b"]")
        out.append(tail)
        return b"".join(out)

    @staticmethod
    def _whole(kept: _Kept, head: bytes, tail: bytes) -> bytes:
        """A listing without uptimes: joined once per stamp, the same bytes for every call until then."""
        if kept.whole is None or kept.whole[0] is not head or kept.whole[1] is not tail:
            body = b"".join([head, b"[", *(before for before, _runtime, _after in kept.entries), b"]", tail])
            kept.whole = (head, tail, body)
        return kept.whole[2]

    def _build(self, key: frozenset[str], with_usage: bool, stamp: tuple[int, int]) -> _Kept:
        listed = [rt for rt in self._runtimes.values() if rt.status in LIVE_STATUSES or rt.errored]
        entries = []
        for index, runtime in enumerate(listed):
            before, after = runtime.encoded_parts(self._usage(runtime) if with_usage else None, key)
            entries.append((before if index == 0 else b"," + before, runtime, after))
        shows_usage = with_usage and any(rt.process is not None for rt in listed)
        kept = _Kept(stamp, shows_usage, entries)
        if key in self._kept or len(self._kept) < ENCODED_VARIANTS:  # cycling field sets cannot grow it
            self._kept[key] = kept
        return kept

    def _usage(self, runtime: AppRuntime) -> TreeUsage | None:
        process = runtime.process
        return self._stats.latest(runtime.key, process.pid) if process is not None else None
