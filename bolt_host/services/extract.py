"""Safe extraction of package tarballs, and npm-style packing of a folder.

:func:`safe_extract` never trusts the archive.  It first reads every header
(a *pre-pass*, nothing is written yet) and rejects the archive if any member

* has an absolute name, a drive letter, a ``..`` component, a NUL, a backslash or
  another control character in its name, a name longer than the limits, or more
  nested folders than allowed (a tree too deep to walk, copy or remove safely);
* is a device file, a FIFO or another special type;
* is a **hard link** (always refused: npm never packs them, and copying their
  targets is where tar extractors keep getting bypassed);
* is a symlink whose target is absolute, leaves the package folder, points at a
  folder containing the link (a loop) or passes through another symlink;
* lies inside a symlink or inside a regular file of the same archive;
* appears twice with different types;

and it also rejects archives with too many members or whose members add up to
more inflated bytes than allowed.  The cap is enforced a second time while the
bytes are written, and the decompressed stream itself is bounded, so metadata
blocks (pax headers, GNU long names) cannot be used as a decompression bomb.

Only then are members written, into a fresh temp dir created inside
``dest_parent`` (same filesystem, so the caller can ``os.replace`` the result into
place).  Directories are walked with ``O_NOFOLLOW`` directory handles, files are
created with ``O_NOFOLLOW``, symlinks are created last, and every symlink is
re-checked with ``realpath`` afterwards.  File modes lose setuid/setgid/sticky and
group/other write; the owner always keeps read and write, the exec bit is kept.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from bolt_host.lazy import lazy_module
from bolt_host.services.trees import remove_tree

if TYPE_CHECKING:
    import gzip
    import tarfile
else:  # install and packing paths only: not loaded by a host that only serves
    gzip = lazy_module("gzip")
    tarfile = lazy_module("tarfile")

MiB = 1024 * 1024
TEMP_PREFIX = ".extract-"
GZIP_MAGIC = b"\x1f\x8b"
SKIP_DIRS = frozenset({"node_modules", ".git", "__pycache__"})
NPM_MTIME = 499162500  # 1985-10-26T08:15:00Z, the timestamp npm pack stamps on every entry
_COPY_CHUNK = MiB
_MAX_SINGLE_READ = 16 * MiB  # larger reads only come from metadata blocks (pax headers, long names)
_METADATA_PER_MEMBER = 10 * 1024
_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f\\]")
_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True)
class ExtractLimits:
    max_members: int = 10_000
    max_bytes: int = 300 * MiB
    max_name_bytes: int = 1024  # leaves room for the data dir's own path below PATH_MAX
    max_component_bytes: int = 255
    max_depth: int = 64  # path components; npm's flat node_modules rarely needs a dozen


class ExtractError(Exception):
    """The archive was refused or could not be extracted; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class _Entry:
    parts: tuple[str, ...]
    kind: str  # "file" | "dir" | "symlink"
    info: tarfile.TarInfo

    @property
    def name(self) -> str:
        return self.info.name


class _TooMuchData(Exception):
    pass


class _BoundedReader:
    """File-like view of a (decompressed) stream that refuses to go past ``limit`` bytes."""

    def __init__(self, stream: BinaryIO | gzip.GzipFile, limit: int) -> None:
        self._stream = stream
        self._limit = limit
        self._pos = stream.tell()

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            size = self._limit - self._pos + 1
        if size > _MAX_SINGLE_READ:
            raise _TooMuchData(f"a metadata block of {size} bytes is larger than allowed")
        data = self._stream.read(size)
        self._pos += len(data)
        self._check()
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        self._pos = self._stream.seek(offset, whence)
        self._check()
        return self._pos

    def tell(self) -> int:
        return self._pos

    def _check(self) -> None:
        if self._pos > self._limit:
            raise _TooMuchData(f"the archive inflates to more than {self._limit} bytes")


# ---------------------------------------------------------------- pre-pass


def _show(name: str) -> str:
    text = name if len(name) <= 200 else name[:200] + "..."
    return repr(text)


def _name_parts(name: str, limits: ExtractLimits, what: str = "member") -> tuple[str, ...]:
    """The path components of a member name, or ExtractError if the name is unsafe."""
    if not name:
        raise ExtractError(f"a {what} has an empty name")
    if _BAD_CHARS.search(name):
        raise ExtractError(f"{what} {_show(name)} has a NUL, backslash or control character in its name")
    if name.startswith("/"):
        raise ExtractError(f"{what} {_show(name)} has an absolute path")
    if _DRIVE.match(name):
        raise ExtractError(f"{what} {_show(name)} starts with a drive letter")
    if len(name.encode("utf-8", "surrogateescape")) > limits.max_name_bytes:
        raise ExtractError(f"{what} {_show(name)} has a name longer than {limits.max_name_bytes} bytes")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise ExtractError(f"{what} {_show(name)} has a '..' component that could leave the package folder")
    for part in parts:
        if len(part.encode("utf-8", "surrogateescape")) > limits.max_component_bytes:
            raise ExtractError(f"{what} {_show(name)} has a path component that is too long")
    if len(parts) > limits.max_depth:
        raise ExtractError(f"{what} {_show(name)} is nested more than {limits.max_depth} folders deep")
    return parts


def _kind(info: tarfile.TarInfo) -> str:
    if info.isreg():
        return "file"
    if info.isdir():
        return "dir"
    if info.issym():
        return "symlink"
    name = _show(info.name)
    if info.islnk():
        raise ExtractError(f"member {name} is a hard link; hard links are not accepted in packages")
    if info.ischr() or info.isblk():
        raise ExtractError(f"member {name} is a device file")
    if info.isfifo():
        raise ExtractError(f"member {name} is a FIFO (named pipe)")
    raise ExtractError(f"member {name} has an unsupported type {info.type!r}")


def _check_member(info: tarfile.TarInfo, limits: ExtractLimits) -> _Entry | None:
    parts = _name_parts(info.name, limits)
    kind = _kind(info)
    if not parts:
        if kind == "dir":
            return None  # "./" - the archive root itself
        raise ExtractError(f"member {_show(info.name)} has no usable name")
    if kind == "symlink":
        target = info.linkname
        if not target:
            raise ExtractError(f"symlink {_show(info.name)} has an empty target")
        if _BAD_CHARS.search(target) or target.startswith("/") or _DRIVE.match(target):
            raise ExtractError(f"symlink {_show(info.name)} points to {_show(target)}, outside the package")
    if kind == "file" and info.size < 0:
        raise ExtractError(f"member {_show(info.name)} has a negative size")
    return _Entry(parts=parts, kind=kind, info=info)


def _read_entries(tf: tarfile.TarFile, limits: ExtractLimits) -> list[_Entry]:
    entries: list[_Entry] = []
    count = 0
    total = 0
    while (info := tf.next()) is not None:
        count += 1
        if count > limits.max_members:
            raise ExtractError(f"the archive has more than {limits.max_members} members")
        entry = _check_member(info, limits)
        if entry is None:
            continue
        if entry.kind == "file":
            total += info.size
            if total > limits.max_bytes:
                raise ExtractError(
                    f"the archive inflates to more than {limits.max_bytes} bytes "
                    f"(limit reached at member {_show(info.name)})"
                )
        entries.append(entry)
    _check_clean_end(tf, entries)
    if not entries:
        raise ExtractError("the archive is empty")
    return entries


def _check_clean_end(tf: tarfile.TarFile, entries: list[_Entry]) -> None:
    """tarfile stops quietly at a block that is not a header; refuse such an archive."""
    assert tf.fileobj is not None
    tf.fileobj.seek(tf.offset)
    if tf.fileobj.read(tarfile.BLOCKSIZE).strip(b"\0"):
        after = f" after member {_show(entries[-1].name)}" if entries else ""
        raise ExtractError(f"the archive holds data that is not a tar header{after}; a header may state a wrong size")


def _package_root(entries: list[_Entry]) -> tuple[str, ...]:
    """``(top,)`` when every member lives under one top folder, else ``()``."""
    tops = {e.parts[0] for e in entries}
    if len(tops) != 1:
        return ()
    top_level = [e for e in entries if len(e.parts) == 1]
    if any(e.kind != "dir" for e in top_level):
        return ()
    if not top_level and all(len(e.parts) == 1 for e in entries):
        return ()
    return (tops.pop(),)


def _check_tree(entries: list[_Entry], root: tuple[str, ...]) -> None:
    kinds: dict[tuple[str, ...], str] = {}
    for e in entries:
        seen = kinds.get(e.parts)
        if seen is not None and (seen != e.kind or e.kind == "symlink"):
            raise ExtractError(f"member {_show(e.name)} appears twice with different types")
        kinds[e.parts] = e.kind
    links = {p for p, k in kinds.items() if k == "symlink"}
    for e in entries:
        for i in range(1, len(e.parts)):
            prefix = e.parts[:i]
            if kinds.get(prefix) in ("symlink", "file"):
                raise ExtractError(f"member {_show(e.name)} lies inside {kinds[prefix]} {_show('/'.join(prefix))}")
    for e in entries:
        if e.kind == "symlink":
            _check_link_target(e, links, root)


def _check_link_target(e: _Entry, links: set[tuple[str, ...]], root: tuple[str, ...]) -> None:
    target = e.info.linkname
    where = list(e.parts[:-1])
    for part in target.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if len(where) <= len(root):
                raise ExtractError(f"symlink {_show(e.name)} points to {_show(target)}, outside the package folder")
            where.pop()
            continue
        where.append(part)
        if tuple(where) in links:
            raise ExtractError(f"symlink {_show(e.name)} points through another symlink ({_show(target)})")
    resolved = tuple(where)
    if e.parts[: len(resolved)] == resolved:
        raise ExtractError(f"symlink {_show(e.name)} points to a folder that contains it (a loop)")
    if resolved[: len(root)] != root:
        raise ExtractError(f"symlink {_show(e.name)} points to {_show(target)}, outside the package folder")


# ---------------------------------------------------------------- writing


def _file_mode(mode: int) -> int:
    mode &= 0o755  # no setuid/setgid/sticky, no group/other write
    mode |= 0o600  # the owner can always read and write
    if not mode & stat.S_IXUSR:
        mode &= ~0o111
    return mode


def _open_dir(root_fd: int, parts: tuple[str, ...]) -> int:
    """A handle on ``parts`` below ``root_fd``, creating folders; never follows a symlink."""
    fd = os.dup(root_fd)
    try:
        for part in parts:
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o755, dir_fd=fd)
            child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _write_file(tf: tarfile.TarFile, e: _Entry, dir_fd: int, budget: list[int]) -> None:
    source = tf.extractfile(e.info)
    if source is None:
        raise ExtractError(f"member {_show(e.name)} has no readable data")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(e.parts[-1], flags, 0o600, dir_fd=dir_fd)
    with os.fdopen(fd, "wb") as out, source:
        written = 0
        while chunk := source.read(_COPY_CHUNK):
            written += len(chunk)
            budget[0] -= len(chunk)
            if written > e.info.size or budget[0] < 0:
                raise ExtractError(f"member {_show(e.name)} holds more data than its header says")
            out.write(chunk)
        if written != e.info.size:
            raise ExtractError(f"member {_show(e.name)} is truncated")
        out.flush()
        os.fchmod(out.fileno(), _file_mode(e.info.mode))
        with contextlib.suppress(OverflowError, OSError, ValueError):
            os.utime(out.fileno(), (e.info.mtime, e.info.mtime))


def _write_entries(tf: tarfile.TarFile, entries: list[_Entry], tmp: Path, limits: ExtractLimits) -> None:
    budget = [limits.max_bytes]
    root_fd = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        for e in entries:
            if e.kind == "symlink":
                continue
            parent = e.parts if e.kind == "dir" else e.parts[:-1]
            fd = _open_dir(root_fd, parent)
            try:
                if e.kind == "file":
                    _write_file(tf, e, fd, budget)
            finally:
                os.close(fd)
        for e in entries:  # symlinks last: nothing is ever written through one
            if e.kind == "symlink":
                fd = _open_dir(root_fd, e.parts[:-1])
                try:
                    os.symlink(e.info.linkname, e.parts[-1], dir_fd=fd)
                finally:
                    os.close(fd)
    finally:
        os.close(root_fd)


def _verify_links(entries: list[_Entry], tmp: Path, package_root: Path) -> None:
    """Belt and braces: every symlink, as written, must resolve inside the package root."""
    real_root = os.path.realpath(package_root)
    for e in entries:
        if e.kind != "symlink":
            continue
        real = os.path.realpath(tmp.joinpath(*e.parts))
        if real == real_root or os.path.commonpath([real_root, real]) != real_root:
            raise ExtractError(f"symlink {_show(e.name)} resolves outside the package folder")


# ---------------------------------------------------------------- public API


def _open_tar(raw: BinaryIO, limits: ExtractLimits) -> tarfile.TarFile:
    magic = raw.read(2)
    raw.seek(0)
    stream: BinaryIO | gzip.GzipFile = gzip.GzipFile(fileobj=raw, mode="rb") if magic == GZIP_MAGIC else raw
    limit = limits.max_bytes + (limits.max_members + 1) * _METADATA_PER_MEMBER + MiB
    reader: Any = _BoundedReader(stream, limit)  # file-like enough for tarfile's stream reading
    return tarfile.open(fileobj=reader, mode="r:")


def _run(archive: Path, dest_parent: Path, limits: ExtractLimits, tmp_holder: list[Path]) -> Path:
    with open(archive, "rb") as raw, _open_tar(raw, limits) as tf:
        entries = _read_entries(tf, limits)
        root = _package_root(entries)
        _check_tree(entries, root)
        tmp = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=dest_parent))
        tmp_holder.append(tmp)
        _write_entries(tf, entries, tmp, limits)
    package_root = tmp.joinpath(*root)
    _verify_links(entries, tmp, package_root)
    os.chmod(tmp, 0o755)
    return package_root


def safe_extract(archive: Path, dest_parent: Path, limits: ExtractLimits = ExtractLimits()) -> Path:
    """Extract ``archive`` into a fresh temp dir inside ``dest_parent``; return the package root.

    The root is the archive's single top folder (npm's ``package/``) when every
    member lives under one, else the temp dir itself.  Use
    :func:`extraction_dir` to find the temp dir to move or remove afterwards.
    """
    dest_parent = Path(dest_parent)
    dest_parent.mkdir(parents=True, exist_ok=True)
    tmp_holder: list[Path] = []
    try:
        return _run(Path(archive), dest_parent, limits, tmp_holder)
    except BaseException as exc:
        for tmp in tmp_holder:
            remove_tree(tmp, ignore_errors=True)
        if isinstance(exc, ExtractError):
            raise
        if isinstance(exc, _TooMuchData):
            raise ExtractError(str(exc)) from None
        if isinstance(exc, tarfile.TarError | zlib.error | EOFError | gzip.BadGzipFile):
            raise ExtractError(f"{Path(archive).name} is not a valid tar archive ({exc})") from None
        if isinstance(exc, OSError):
            raise ExtractError(f"could not extract {Path(archive).name}: {exc.strerror or exc}") from None
        raise


def extraction_dir(package_root: Path, dest_parent: Path) -> Path:
    """The temp dir :func:`safe_extract` created for ``package_root`` (a direct child of ``dest_parent``)."""
    parent = Path(dest_parent).resolve()
    path = Path(package_root).resolve()
    while path.parent != parent:
        if path.parent == path:
            raise ValueError(f"{package_root} is not inside {dest_parent}")
        path = path.parent
    return path


# ---------------------------------------------------------------- packing


def _pack_files(src: Path) -> list[str]:
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not os.path.islink(os.path.join(dirpath, d)))
        for name in filenames:
            path = os.path.join(dirpath, name)
            if os.path.isfile(path) and not os.path.islink(path):
                found.append(os.path.relpath(path, src).replace(os.sep, "/"))
    return sorted(found)


def pack_directory(src: Path, out: Path) -> Path:
    """Write an npm-style ``.tgz`` of ``src`` to ``out``: files under ``package/``, sorted, reproducible.

    ``node_modules``, ``.git`` and ``__pycache__`` folders and symlinks are skipped.
    """
    src, out = Path(src), Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with (
        open(out, "wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tf,
    ):
        for rel in _pack_files(src):
            path = src / rel
            info = tarfile.TarInfo(f"package/{rel}")
            info.size = path.stat().st_size
            info.mode = 0o755 if path.stat().st_mode & stat.S_IXUSR else 0o644
            info.mtime = NPM_MTIME
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            with open(path, "rb") as data:
                tf.addfile(info, data)
    return out
