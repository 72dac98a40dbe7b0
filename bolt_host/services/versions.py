"""Ordering of package versions.

Versions that parse as semantic versions compare by semver precedence: numeric
parts numerically, a prerelease (``1.2.3-rc.1``, also build-ish suffixes such as
``1.2.3-pi64``) below its release, numeric prerelease identifiers below
alphanumeric ones, build metadata (``+sha.1``) ignored.  The loose forms npm
accepts are tolerated: a leading ``v`` or ``=`` and missing minor/patch parts
(``1.2`` ranks as ``1.2.0``).

Anything that does not parse (``master``, ``latest-dev``, a git branch name) is
a *non-release*: it ranks above every release, and non-releases order among
themselves by their text.  The original string is always kept in
:attr:`Version.raw`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

_SEMVER = re.compile(
    r"""
    ^[v=]?\s*
    (?P<major>\d+)
    (?:\.(?P<minor>\d+))?
    (?:\.(?P<patch>\d+))?
    (?:-(?P<pre>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?
    (?:\+(?P<build>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?
    $
    """,
    re.VERBOSE,
)

# Sort-key building blocks: releases sort before non-releases; inside a release,
# a prerelease sorts before the plain release; numeric identifiers before words.
_RELEASE, _NON_RELEASE = 0, 1
_PRERELEASE, _FINAL = 0, 1
_NUMERIC, _ALPHA = 0, 1

Identifier = tuple[int, int | str]


@dataclass(frozen=True)
class Version:
    raw: str
    release: tuple[int, int, int] | None = None
    prerelease: tuple[str, ...] = ()
    build: tuple[str, ...] = ()
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


def _identifier_key(ident: str) -> Identifier:
    if ident.isdigit():
        return (_NUMERIC, int(ident))
    return (_ALPHA, ident)


def _precedence(release: tuple[int, int, int] | None, pre: tuple[str, ...], raw: str) -> tuple[Any, ...]:
    if release is None:
        return (_NON_RELEASE, raw)
    if not pre:
        return (_RELEASE, *release, (_FINAL,))
    return (_RELEASE, *release, (_PRERELEASE, *(_identifier_key(i) for i in pre)))


def parse_version(s: str) -> Version:
    """Parse ``s``; never raises: an unparseable string becomes a non-release."""
    text = str(s)
    match = _SEMVER.match(text.strip())
    if match is None:
        return Version(raw=text, _key=_precedence(None, (), text))
    release = (
        int(match["major"]),
        int(match["minor"] or 0),
        int(match["patch"] or 0),
    )
    pre = tuple(match["pre"].split(".")) if match["pre"] else ()
    build = tuple(match["build"].split(".")) if match["build"] else ()
    return Version(raw=text, release=release, prerelease=pre, build=build, _key=_precedence(release, pre, text))


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
