"""safe_extract against a corpus of hostile tarballs, and the good cases it must accept."""

from __future__ import annotations

import gzip
import io
import os
import stat
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from bolt_host.services.extract import (
    TEMP_PREFIX,
    ExtractError,
    ExtractLimits,
    extraction_dir,
    pack_directory,
    safe_extract,
)

MiB = 1024 * 1024


@dataclass
class M:
    """One member to put in a test archive."""

    name: str
    data: bytes = b""
    type: bytes = tarfile.REGTYPE
    mode: int = 0o644
    linkname: str = ""
    size: int | None = None  # a header size that differs from len(data)
    pax: dict[str, str] | None = None


def tar_bytes(members: list[M], *, gz: bool = True) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for m in members:
            info = tarfile.TarInfo(m.name)
            info.type = m.type
            info.mode = m.mode
            info.linkname = m.linkname
            info.size = len(m.data) if m.type == tarfile.REGTYPE else 0
            if m.pax:
                info.pax_headers = dict(m.pax)
            if m.type in (tarfile.CHRTYPE, tarfile.BLKTYPE):
                info.devmajor, info.devminor = 1, 3
            tf.addfile(info, io.BytesIO(m.data) if m.type == tarfile.REGTYPE else None)
    raw = buf.getvalue()
    return gzip.compress(raw, mtime=0) if gz else raw


def raw_header(name: str, size: int, type: bytes = tarfile.REGTYPE) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.type = type
    return info.tobuf(format=tarfile.USTAR_FORMAT)


def pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 512)


class _Zeros(io.RawIOBase):
    def __init__(self, n: int) -> None:
        self.left = n

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        k = min(len(b), self.left)
        b[:k] = bytes(k)
        self.left -= k
        return k


def bomb_bytes(members: int, each: int) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=1) as gz, tarfile.open(fileobj=gz, mode="w") as tf:
        for i in range(members):
            info = tarfile.TarInfo(f"package/zeros-{i}")
            info.size = each
            tf.addfile(info, io.BufferedReader(_Zeros(each), MiB))
    return buf.getvalue()


def snapshot(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


@pytest.fixture
def place(tmp_path: Path):
    """Write archive bytes under tmp_path; return (archive, dest_parent)."""

    def _place(data: bytes, name: str = "pkg.tgz") -> tuple[Path, Path]:
        archive = tmp_path / "archives" / name
        archive.parent.mkdir(exist_ok=True)
        archive.write_bytes(data)
        dest = tmp_path / "apps" / "staging"
        dest.mkdir(parents=True)
        return archive, dest

    return _place


def assert_refused(tmp_path: Path, archive: Path, dest: Path, *words: str, limits: ExtractLimits | None = None):
    before = snapshot(tmp_path)
    with pytest.raises(ExtractError) as caught:
        if limits is None:
            safe_extract(archive, dest)
        else:
            safe_extract(archive, dest, limits)
    reason = caught.value.reason
    assert reason and reason == str(caught.value)
    for word in words:
        assert word in reason, reason
    assert list(dest.iterdir()) == [], "the temp dir was left behind"
    assert snapshot(tmp_path) == before, "something was written"
    return reason


# ------------------------------------------------------------------ hostile corpus

GOOD = M("package/package.json", b'{"name": "x"}')

HOSTILE: dict[str, tuple[Callable[[Path], list[M]], tuple[str, ...]]] = {
    "absolute-path": (lambda t: [GOOD, M(str(t / "abs-evil"), b"x")], ("abs-evil", "absolute")),
    "dotdot": (lambda t: [GOOD, M("../evil", b"x")], ("'../evil'", "..")),
    "nested-dotdot": (lambda t: [GOOD, M("package/a/../../../evil", b"x")], ("package/a/../../../evil",)),
    "dotdot-only-to-root": (lambda t: [GOOD, M("package/../x", b"x")], ("package/../x",)),
    "symlink-etc-passwd": (
        lambda t: [GOOD, M("package/passwd", type=tarfile.SYMTYPE, linkname="/etc/passwd")],
        ("package/passwd", "/etc/passwd"),
    ),
    "symlink-up-up": (
        lambda t: [GOOD, M("package/up", type=tarfile.SYMTYPE, linkname="../..")],
        ("package/up", "outside"),
    ),
    "symlink-to-sibling-of-package": (
        lambda t: [GOOD, M("package/peer", type=tarfile.SYMTYPE, linkname="../other-app")],
        ("package/peer", "outside"),
    ),
    "symlink-loop-to-root": (
        lambda t: [GOOD, M("package/sub/self", type=tarfile.SYMTYPE, linkname="..")],
        ("package/sub/self", "loop"),
    ),
    "write-through-symlink": (
        lambda t: [
            GOOD,
            M("package/sub/", type=tarfile.DIRTYPE, mode=0o755),
            M("package/link", type=tarfile.SYMTYPE, linkname="sub"),
            M("package/link/planted", b"x"),
        ],
        ("package/link/planted", "inside symlink"),
    ),
    "symlink-through-symlink": (
        lambda t: [
            GOOD,
            # Lexically package/t -> package/a (inside), really package/c/../.. (outside).
            M("package/a/b/", type=tarfile.DIRTYPE, mode=0o755),
            M("package/c/", type=tarfile.DIRTYPE, mode=0o755),
            M("package/a/b/s3", type=tarfile.SYMTYPE, linkname="../../c"),
            M("package/t", type=tarfile.SYMTYPE, linkname="a/b/s3/../.."),
        ],
        ("package/t", "through another symlink"),
    ),
    "symlink-drive-letter": (
        lambda t: [GOOD, M("package/win", type=tarfile.SYMTYPE, linkname="C:/Windows")],
        ("package/win",),
    ),
    "hardlink-escaping": (
        lambda t: [GOOD, M("package/h", type=tarfile.LNKTYPE, linkname="../../../etc/passwd")],
        ("package/h", "hard link"),
    ),
    "hardlink-inside": (
        lambda t: [GOOD, M("package/h", type=tarfile.LNKTYPE, linkname="package/package.json")],
        ("package/h", "hard link"),
    ),
    "char-device": (lambda t: [GOOD, M("package/null", type=tarfile.CHRTYPE)], ("package/null", "device")),
    "block-device": (lambda t: [GOOD, M("package/sda", type=tarfile.BLKTYPE)], ("package/sda", "device")),
    "fifo": (lambda t: [GOOD, M("package/pipe", type=tarfile.FIFOTYPE)], ("package/pipe", "FIFO")),
    "backslash": (lambda t: [GOOD, M("package\\..\\..\\evil", b"x")], ("backslash",)),
    "drive-letter": (lambda t: [GOOD, M("C:/evil", b"x")], ("C:/evil", "drive")),
    "nul-in-pax-path": (
        lambda t: [GOOD, M("package/innocent", b"x", pax={"path": "package/a\x00/../../../evil"})],
        ("NUL",),
    ),
    "newline-in-name": (lambda t: [GOOD, M("package/a\nb", b"x")], ("control",)),
    "component-too-long": (lambda t: [GOOD, M("package/" + "a" * 300, b"x")], ("too long",)),
    "nested-1100-folders": (
        lambda t: [GOOD, *(M("package/" + "a/" * depth, type=tarfile.DIRTYPE, mode=0o755) for depth in range(1, 1101))],
        ("nested more than 64 folders deep",),
    ),
    "nested-deep-file": (lambda t: [GOOD, M("package/" + "d/" * 70 + "f", b"x")], ("nested more than 64",)),
    "path-too-long": (lambda t: [GOOD, M("package/" + ("b" * 200 + "/") * 6 + "f", b"x")], ("longer than 1024",)),
    "file-then-symlink-same-name": (
        lambda t: [GOOD, M("package/x", b"x"), M("package/x", type=tarfile.SYMTYPE, linkname="package.json")],
        ("package/x", "twice"),
    ),
    "member-inside-file": (
        lambda t: [GOOD, M("package/package.json/evil", b"x")],
        ("package/package.json/evil", "inside file"),
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archive_is_refused_and_leaves_nothing(case: str, tmp_path: Path, place) -> None:
    build, words = HOSTILE[case]
    archive, dest = place(tar_bytes(build(tmp_path)))
    assert_refused(tmp_path, archive, dest, *words)


def test_hostile_member_after_good_data_is_refused_before_writing(tmp_path: Path, place) -> None:
    # The bad member comes last: a pre-pass must see it before any good file is written.
    members = [M(f"package/f{i}", b"data" * 100) for i in range(50)] + [M("../evil", b"x")]
    archive, dest = place(tar_bytes(members))
    assert_refused(tmp_path, archive, dest, "'../evil'")


def test_too_many_members(tmp_path: Path, place) -> None:
    members = [M(f"package/f{i}") for i in range(20_000)]
    archive, dest = place(tar_bytes(members))
    assert_refused(tmp_path, archive, dest, "more than 10000 members")


def test_gzip_bomb_over_small_cap(tmp_path: Path, place) -> None:
    archive, dest = place(bomb_bytes(1, 4 * MiB))
    assert archive.stat().st_size < 64 * 1024
    limits = ExtractLimits(max_bytes=1 * MiB)
    assert_refused(tmp_path, archive, dest, "more than 1048576 bytes", "zeros-0", limits=limits)


def test_many_members_adding_up_over_cap(tmp_path: Path, place) -> None:
    archive, dest = place(bomb_bytes(3, 400 * 1024))
    limits = ExtractLimits(max_bytes=1 * MiB)
    assert_refused(tmp_path, archive, dest, "zeros-2", limits=limits)


@pytest.mark.timeout(60)
def test_gzip_bomb_over_default_cap(tmp_path: Path, place) -> None:
    archive, dest = place(bomb_bytes(31, 10 * MiB))  # 310 MiB inflated from about 1.5 MB
    assert archive.stat().st_size < 4 * MiB
    assert_refused(tmp_path, archive, dest, f"more than {300 * MiB} bytes")


def test_pax_header_bomb(tmp_path: Path, place) -> None:
    # A pax header "claiming" 20 MiB of metadata: the data are never members, but a
    # naive reader would inflate all of it into memory.
    data = raw_header("././@PaxHeader", 20 * MiB, tarfile.XHDTYPE) + bytes(20 * MiB) + bytes(1024)
    archive, dest = place(gzip.compress(data, compresslevel=1))
    assert_refused(tmp_path, archive, dest, "metadata")


def test_member_claiming_a_smaller_size_than_its_data(tmp_path: Path, place) -> None:
    # The header says 10 bytes; 3000 bytes of text follow, which are not a tar header.
    body = b"A" * 3000
    data = raw_header("package/a.txt", 10) + pad(body) + bytes(1024)
    archive, dest = place(gzip.compress(data))
    assert_refused(tmp_path, archive, dest, "package/a.txt")


def test_member_claiming_a_small_size_smuggles_a_header(tmp_path: Path, place) -> None:
    # The data of a.txt "continue" with a header for ../evil: whatever the reader
    # sees as a member is checked, so the smuggled member is refused.
    smuggled = raw_header("../evil", 1) + pad(b"x")
    data = raw_header("package/a.txt", 3) + pad(b"abc") + smuggled + bytes(1024)
    archive, dest = place(gzip.compress(data))
    assert_refused(tmp_path, archive, dest, "'../evil'")


def test_member_claiming_more_than_the_archive_holds(tmp_path: Path, place) -> None:
    data = raw_header("package/package.json", 2) + pad(b"{}") + raw_header("package/big", 100_000) + b"x" * 600
    archive, dest = place(data, "truncated.tar")
    # The headers look fine, so this fails while writing: the temp dir must still go.
    assert_refused(tmp_path, archive, dest, "truncated.tar", "not a valid tar archive")


@pytest.mark.parametrize(
    "data",
    [b"", b"this is not an archive at all" * 40, b"\x1f\x8b\x08\x00garbage after the gzip magic"],
    ids=["empty-file", "text", "broken-gzip"],
)
def test_not_an_archive(tmp_path: Path, place, data: bytes) -> None:
    archive, dest = place(data)
    assert_refused(tmp_path, archive, dest, "not a valid tar archive")


def test_empty_archive(tmp_path: Path, place) -> None:
    archive, dest = place(tar_bytes([]))
    assert_refused(tmp_path, archive, dest, "empty")


# ------------------------------------------------------------------ good cases


def test_npm_layout_returns_package_folder(tmp_path: Path, place) -> None:
    members = [
        M("package/package.json", b'{"name": "hello", "version": "1.0.0"}'),
        M("package/lib/index.js", b"console.log('hi')\n"),
        M("package/README.md", b"# hello\n"),
    ]
    archive, dest = place(tar_bytes(members))
    root = safe_extract(archive, dest)
    assert root.name == "package"
    tmp = extraction_dir(root, dest)
    assert tmp.parent == dest and tmp.name.startswith(TEMP_PREFIX)
    assert list(dest.iterdir()) == [tmp]
    assert (root / "lib" / "index.js").read_bytes() == b"console.log('hi')\n"
    assert snapshot(root) == {"package.json", "lib", "lib/index.js", "README.md"}


def test_flat_tarball_returns_temp_dir(tmp_path: Path, place) -> None:
    archive, dest = place(tar_bytes([M("package.json", b"{}"), M("index.js", b"1")]))
    root = safe_extract(archive, dest)
    assert root.parent == dest and root.name.startswith(TEMP_PREFIX)
    assert snapshot(root) == {"package.json", "index.js"}
    assert extraction_dir(root, dest) == root


def test_single_top_file_is_not_a_package_folder(tmp_path: Path, place) -> None:
    archive, dest = place(tar_bytes([M("package", b"just a file")]))
    root = safe_extract(archive, dest)
    assert root.parent == dest
    assert (root / "package").read_bytes() == b"just a file"


def test_modes_exec_kept_setuid_and_world_write_dropped(tmp_path: Path, place) -> None:
    members = [
        M("package/run.sh", b"#!/bin/sh\n", mode=0o755),
        M("package/suid", b"x", mode=0o4755),
        M("package/sgid-world-writable", b"x", mode=0o2777),
        M("package/readonly", b"x", mode=0o400),
        M("package/group-exec-only", b"x", mode=0o654),
    ]
    archive, dest = place(tar_bytes(members))
    root = safe_extract(archive, dest)

    def mode(name: str) -> int:
        return stat.S_IMODE((root / name).stat().st_mode)

    assert mode("run.sh") == 0o755
    assert mode("suid") == 0o755
    assert mode("sgid-world-writable") == 0o755
    assert mode("readonly") == 0o600
    assert mode("group-exec-only") == 0o644
    assert os.access(root / "run.sh", os.X_OK)


@pytest.mark.parametrize(("gz", "name"), [(True, "pkg.tar"), (False, "pkg.tgz"), (True, "download")])
def test_gzip_detected_by_content_not_name(tmp_path: Path, place, gz: bool, name: str) -> None:
    archive, dest = place(tar_bytes([GOOD], gz=gz), name)
    root = safe_extract(archive, dest)
    assert (root / "package.json").read_bytes() == GOOD.data


def test_safe_relative_symlink_is_kept(tmp_path: Path, place) -> None:
    members = [
        GOOD,
        M("package/lib/cli.js", b"cli"),
        M("package/bin/cli", type=tarfile.SYMTYPE, linkname="../lib/cli.js"),
    ]
    archive, dest = place(tar_bytes(members))
    root = safe_extract(archive, dest)
    assert (root / "bin" / "cli").is_symlink()
    assert (root / "bin" / "cli").read_bytes() == b"cli"


def test_dest_parent_is_created(tmp_path: Path) -> None:
    archive = tmp_path / "a.tgz"
    archive.write_bytes(tar_bytes([GOOD]))
    root = safe_extract(archive, tmp_path / "new" / "parent")
    assert (root / "package.json").is_file()


def test_limits_are_configurable(tmp_path: Path, place) -> None:
    archive, dest = place(tar_bytes([M(f"package/f{i}") for i in range(5)]))
    assert_refused(tmp_path, archive, dest, "more than 4 members", limits=ExtractLimits(max_members=4))
    root = safe_extract(archive, dest, ExtractLimits(max_members=5))
    assert len(list(root.iterdir())) == 5


# ------------------------------------------------------------------ pack_directory


def make_src(root: Path) -> Path:
    (root / "lib").mkdir(parents=True)
    (root / "package.json").write_text('{"name": "demo", "version": "1.0.0"}')
    (root / "lib" / "index.js").write_text("module.exports = 1\n")
    (root / "run.sh").write_text("#!/bin/sh\n")
    (root / "run.sh").chmod(0o755)
    for skipped in ("node_modules/dep", ".git", "lib/__pycache__"):
        (root / skipped).mkdir(parents=True)
        (root / skipped / "junk").write_text("junk")
    (root / "link").symlink_to("package.json")
    return root


def test_pack_directory_is_npm_style_and_deterministic(tmp_path: Path) -> None:
    src = make_src(tmp_path / "src")
    first = pack_directory(src, tmp_path / "one.tgz")
    (src / "lib" / "index.js").touch()  # mtimes must not matter
    second = pack_directory(src, tmp_path / "two.tgz")
    assert first.read_bytes() == second.read_bytes()
    assert first.read_bytes()[:2] == b"\x1f\x8b"
    with tarfile.open(first) as tf:
        names = tf.getnames()
        modes = {m.name: m.mode for m in tf.getmembers()}
    assert names == ["package/lib/index.js", "package/package.json", "package/run.sh"]
    assert modes["package/run.sh"] == 0o755
    assert modes["package/package.json"] == 0o644


def test_pack_then_extract_round_trip(tmp_path: Path) -> None:
    src = make_src(tmp_path / "src")
    archive = pack_directory(src, tmp_path / "out" / "demo.tgz")
    root = safe_extract(archive, tmp_path / "dest")
    assert root.name == "package"
    assert snapshot(root) == {"lib", "lib/index.js", "package.json", "run.sh"}
    assert os.access(root / "run.sh", os.X_OK)
