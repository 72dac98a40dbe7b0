"""Package versions: npm's ordering and ranges (node-semver's Python port), plus non-releases.

Parsing, precedence and range matching are node-semver's (PyPI ``node-semver``, a port of
npm's own ``semver`` package), in its loose mode as npm uses it: a leading ``v`` or ``=``,
prereleases (``1.2.3-rc.1``, also build-ish suffixes such as ``1.2.3-pi64``) below their
release, numeric prerelease identifiers below alphanumeric ones, build metadata (``+sha.1``)
ignored.  bolt-host adds two rules on top:

* ``1.2`` and ``2`` rank as ``1.2.0`` and ``2.0.0`` (old robot catalogs use them).
* Anything that does not parse (``master``, ``latest-dev``, a git branch name) is a
  *non-release*: it ranks above every release (the robot seed relies on ``master`` being the
  newest), non-releases order among themselves by their text, and no range ever selects one
  (only its exact name does).

The original string is always kept in :attr:`Version.raw`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import nodesemver

_FULL = nodesemver.regexp[nodesemver.LOOSE]  # the library's own "is this a whole version" pattern
_SHORT = re.compile(r"^[v=\s]*(\d+)(?:\.(\d+))?\s*$")

# Sort-key building blocks: releases sort before non-releases.
_RELEASE, _NON_RELEASE = 0, 1


@functools.total_ordering
class _Precedence:
    """node-semver's comparison as a sort key (equal for versions differing only in build)."""

    __slots__ = ("semver",)

    def __init__(self, semver: nodesemver.SemVer) -> None:
        self.semver = semver

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Precedence) and self.semver.compare(other.semver) == 0

    def __lt__(self, other: _Precedence) -> bool:
        return bool(self.semver.compare(other.semver) < 0)

    def __hash__(self) -> int:
        return hash((self.semver.major, self.semver.minor, self.semver.patch, tuple(self.semver.prerelease)))


@dataclass(frozen=True)
class Version:
    raw: str
    release: tuple[int, int, int] | None = None
    prerelease: tuple[str, ...] = ()
    build: tuple[str, ...] = ()
    semver: nodesemver.SemVer | None = field(default=None, repr=False, compare=False)
    _key: tuple[Any, ...] = field(default=(), repr=False, compare=False)

    @property
    def is_release(self) -> bool:
        """True for a parseable version (a prerelease still counts as parseable)."""
        return self.release is not None

    @property
    def is_prerelease(self) -> bool:
        return self.release is not None and bool(self.prerelease)

    @property
    def precedence(self) -> tuple[Any, ...]:
        """What semver compares: equal for versions differing only in build metadata."""
        return self._key


def _semver(text: str) -> nodesemver.SemVer | None:
    stripped = text.strip()
    short = _SHORT.match(stripped)
    if short:
        stripped = f"{short[1]}.{short[2] or 0}.0"
    elif not _FULL.match(stripped):
        return None  # e.g. "1.2.3.4", which the port would otherwise cut short
    try:
        return nodesemver.make_semver(stripped, loose=True)
    except ValueError:
        return None


@functools.lru_cache(maxsize=4096)
def parse_version(s: str) -> Version:
    """Parse ``s``; never raises: an unparseable string becomes a non-release."""
    text = str(s)
    semver = _semver(text)
    if semver is None:
        return Version(raw=text, _key=(_NON_RELEASE, text))
    return Version(
        raw=text,
        release=(semver.major, semver.minor, semver.patch),
        prerelease=tuple(str(part) for part in semver.prerelease),
        build=tuple(str(part) for part in semver.build),
        semver=semver,
        _key=(_RELEASE, _Precedence(semver)),
    )


def compare_versions(a: str, b: str) -> int:
    """-1, 0 or 1 as ``a`` ranks below, equal to or above ``b``."""
    ka, kb = parse_version(a).precedence, parse_version(b).precedence
    return (ka > kb) - (ka < kb)


def sort_key(s: str) -> tuple[Any, ...]:
    """Key for ``sorted``: semver precedence, ties broken by the raw text so the order is total."""
    return (parse_version(s).precedence, str(s))


def max_version(versions: Iterable[str]) -> str | None:
    """The highest version of ``versions`` (the original string), or None if there is none."""
    return max(versions, key=sort_key, default=None)


def is_range(spec: str) -> bool:
    """Is ``spec`` an npm version range (``^6``, ``~6.0``, ``>=5 <7``, ``6.x``, ``*``)?"""
    return nodesemver.valid_range(spec, loose=True) is not None


def satisfies(version: str, spec: str) -> bool:
    """Does release ``version`` fall in range ``spec`` (prereleases only when the range names one)?"""
    parsed = parse_version(version).semver
    return parsed is not None and is_range(spec) and nodesemver.make_range(spec, loose=True).test(parsed)


def resolve_version(
    spec: str | None, versions: Iterable[str], tags: Mapping[str, object] | None = None
) -> str | None:
    """The version npm would install for ``name@spec``, or None when nothing matches.

    ``None`` means the ``latest`` tag (else the highest version); an exact version (also a
    non-release such as ``master``) or a dist-tag is taken as it is; a range picks the
    ``latest`` tag when it is in the range, else the highest version in it, as npm does.
    """
    available = [str(v) for v in versions]
    tags = tags or {}
    tagged = tags.get("latest")
    latest = tagged if isinstance(tagged, str) and tagged in available else None
    if spec is None:
        return latest or max_version(available)
    if spec in available:
        return spec
    tagged = tags.get(spec)
    if isinstance(tagged, str) and tagged in available:
        return tagged
    if not is_range(spec):
        return None
    if isinstance(latest, str) and satisfies(latest, spec):
        return latest
    in_range = [version for version in available if satisfies(version, spec)]
    return max_version(in_range)
