"""Version ordering: semver precedence, prerelease-ish suffixes, non-releases on top."""

from __future__ import annotations

import itertools
import random

import pytest

from bolt_host.services.versions import compare_versions, max_version, parse_version, sort_key

# Strictly increasing (each element ranks above the previous one).
ORDERED = [
    "0.0.1",
    "0.9.0",
    "0.10.0",
    "1.0.0-alpha",
    "1.0.0-alpha.1",
    "1.0.0-alpha.beta",
    "1.0.0-beta",
    "1.0.0-beta.2",
    "1.0.0-beta.11",
    "1.0.0-rc.1",
    "1.0.0",
    "1.2.3-pi64",
    "1.2.3",
    "1.2.10",
    "1.10.0",
    "2.0.0",
    "10.0.0",
    "latest-dev",
    "master",
]


@pytest.mark.parametrize(("low", "high"), list(itertools.pairwise(ORDERED)))
def test_adjacent_pairs_compare(low: str, high: str) -> None:
    assert compare_versions(low, high) == -1
    assert compare_versions(high, low) == 1
    assert compare_versions(low, low) == 0


def test_sorting_a_shuffled_list() -> None:
    shuffled = ORDERED[:]
    random.Random(7).shuffle(shuffled)
    assert sorted(shuffled, key=sort_key) == ORDERED


def test_numeric_parts_compare_numerically_not_as_text() -> None:
    assert compare_versions("1.10.0", "1.9.0") == 1
    assert compare_versions("1.0.0-rc.10", "1.0.0-rc.9") == 1
    assert compare_versions("1.0.0-2", "1.0.0-10") == -1


def test_numeric_identifiers_rank_below_alphanumeric() -> None:
    assert compare_versions("1.0.0-999", "1.0.0-a") == -1


def test_build_metadata_is_ignored_for_precedence_but_kept() -> None:
    assert compare_versions("1.0.0+build.1", "1.0.0+build.2") == 0
    v = parse_version("1.0.0+build.1")
    assert v.build == ("build", "1")
    assert v.raw == "1.0.0+build.1"


def test_build_suffix_is_prerelease_but_original_kept() -> None:
    v = parse_version("1.2.3-pi64")
    assert v.is_release and v.is_prerelease
    assert v.release == (1, 2, 3)
    assert v.prerelease == ("pi64",)
    assert v.raw == "1.2.3-pi64"
    assert max_version(["1.2.3-pi64", "1.2.2"]) == "1.2.3-pi64"


@pytest.mark.parametrize("text", ["master", "develop", "", "1.2.3.4", "latest", "v", "1.x"])
def test_non_release_ranks_above_every_release(text: str) -> None:
    v = parse_version(text)
    assert not v.is_release
    assert v.raw == text
    assert compare_versions(text, "999.999.999") == 1
    assert compare_versions("0.0.1-alpha", text) == -1


def test_non_releases_order_by_text() -> None:
    assert compare_versions("develop", "master") == -1
    assert sorted(["master", "2.0.0", "develop"], key=sort_key) == ["2.0.0", "develop", "master"]


def test_loose_forms() -> None:
    assert compare_versions("v1.2.3", "1.2.3") == 0
    assert compare_versions("=1.2.3", "1.2.3") == 0
    assert compare_versions("1.2", "1.2.0") == 0
    assert compare_versions("2", "1.9.9") == 1
    assert parse_version("v1.2.3").raw == "v1.2.3"


def test_sort_key_is_total_and_keeps_originals() -> None:
    versions = ["1.0.0+b", "1.0.0+a", "v1.0.0", "1.0.0"]
    assert sorted(versions, key=sort_key) == ["1.0.0", "1.0.0+a", "1.0.0+b", "v1.0.0"]


def test_max_version() -> None:
    assert max_version(["1.0.0", "1.10.0", "1.9.0"]) == "1.10.0"
    assert max_version(["1.0.0", "master", "2.0.0"]) == "master"
    assert max_version(iter(["0.1.0-rc.1", "0.1.0"])) == "0.1.0"
    assert max_version([]) is None


def test_huge_numbers() -> None:
    assert compare_versions("1.0.12345678901234567890", "1.0.9") == 1
