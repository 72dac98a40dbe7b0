"""App log files: character ranges over UTF-8, rotation, tail, follow."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from bolt_host.errors import BoltError
from bolt_host.services import applogs
from bolt_host.services.applogs import follow, read_range, rotate_if_needed, tail_lines

MIXED = "a\u00e9\u20ac\U0001f600"  # 1-, 2-, 3- and 4-byte characters


def test_ranges_count_characters_not_bytes(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text(MIXED * 3, encoding="utf-8")

    assert read_range(log, 0, None) == (MIXED * 3, False, 12)
    assert read_range(log, 1, 3) == ("\u00e9\u20ac", True, 12)
    assert read_range(log, 3, 5) == ("\U0001f600a", True, 12)
    assert read_range(log, 10, 100) == ("\u20ac\U0001f600", False, 12)
    assert read_range(log, 12, None) == ("", False, 12)
    assert read_range(log, 5, 5) == ("", True, 12)


def test_missing_log_is_empty(tmp_path: Path) -> None:
    assert read_range(tmp_path / "none.log", 0, 10) == ("", False, 0)


def test_ranges_across_chunks_and_a_growing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(applogs, "CHUNK", 7)  # multibyte characters straddle every chunk edge
    log = tmp_path / "app.log"
    text = "".join(f"{n}:{MIXED}\n" for n in range(200))
    log.write_text(text, encoding="utf-8")

    assert read_range(log, 0, None)[0] == text
    for start, end in ((0, 1), (13, 77), (500, 1234), (len(text) - 3, len(text))):
        assert read_range(log, start, end) == (text[start:end], end < len(text), len(text))

    more = "\u00fcber \u20ac\n"
    with log.open("a", encoding="utf-8") as handle:
        handle.write(more)
    assert read_range(log, len(text), None) == (more, False, len(text) + len(more))


def test_polling_a_slowly_growing_log_keeps_the_index_small(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("")
    for number in range(300):
        with log.open("a", encoding="utf-8") as handle:
            handle.write(f"line {number} \u20ac\n")
        text, more, total = read_range(log, 0, None)
    assert text.endswith("line 299 \u20ac\n") and total == len(text) and not more
    assert len(applogs._indexes[str(log)].byte_marks) == 1  # checkpoints stay CHUNK bytes apart


def test_an_incomplete_trailing_character_is_not_counted_yet(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    euro = "\u20ac".encode()
    log.write_bytes(b"ab" + euro[:2])

    assert read_range(log, 0, None) == ("ab", False, 2)
    with log.open("ab") as handle:
        handle.write(euro[2:] + b"!")
    assert read_range(log, 0, None) == ("ab\u20ac!", False, 4)


def test_an_invalid_byte_is_one_replacement_character(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"a\xffb")

    assert read_range(log, 0, None) == ("a\ufffdb", False, 3)
    assert read_range(log, 2, 3) == ("b", False, 3)


def test_rotation_keeps_a_few_files_and_ranges_cover_the_current_one(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    for generation in range(4):
        log.write_text(f"run {generation} " + "x" * 20)
        assert rotate_if_needed(log, max_bytes=10, keep=2)
    log.write_text("fresh")

    assert read_range(log, 0, None) == ("fresh", False, 5)
    assert (tmp_path / "app.log.1").read_text().startswith("run 3")
    assert (tmp_path / "app.log.2").read_text().startswith("run 2")
    assert not (tmp_path / "app.log.3").exists()
    assert not rotate_if_needed(log, max_bytes=10, keep=2)  # under the cap


def test_tail_lines_only_from_the_current_run(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("old 1\nold 2\n")
    offset = log.stat().st_size
    with log.open("a") as handle:
        handle.writelines(f"new {n}\n" for n in range(30))

    assert tail_lines(log, 3, from_byte=offset) == ["new 27", "new 28", "new 29"]
    assert tail_lines(log, 50, from_byte=offset)[0] == "new 0"


async def test_follow_yields_new_text_and_survives_rotation(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("skip\u20ac|start ")
    received: list[str] = []
    got_text = asyncio.Event()

    async def reader() -> None:
        async for text in follow(log, from_offset=5, poll_interval=0.01):
            received.append(text)
            got_text.set()

    task = asyncio.create_task(reader())
    try:
        await _until(lambda: "".join(received) == "|start ", got_text)
        euro = "\u20ac".encode()
        fd = os.open(log, os.O_WRONLY | os.O_APPEND)
        os.write(fd, euro[:1])  # a character split over two writes
        os.write(fd, euro[1:] + b" more")
        os.close(fd)
        await _until(lambda: "".join(received) == "|start \u20ac more", got_text)

        os.replace(log, tmp_path / "app.log.1")
        log.write_text("after rotation")
        await _until(lambda: "".join(received).endswith("after rotation"), got_text)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()


async def _until(condition: Callable[[], bool], event: asyncio.Event, timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while True:
            event.clear()
            if condition():
                return
            await event.wait()


def test_notes_create_the_folder_append_whole_lines_and_refuse_names_leaving_it(tmp_path: Path) -> None:
    folder = tmp_path / "logs" / "apps"  # not there yet: the first note makes it
    files = applogs.AppLogFiles(folder)
    files.note("web", "stopping")
    files.note("web", "stopped (exit code 0)")
    lines = (folder / "web.log").read_text().splitlines()
    assert [line.split(f" {applogs.NOTE_TAG} ")[1] for line in lines] == ["stopping", "stopped (exit code 0)"]
    assert files.path("web") == folder / "web.log"
    for bad in ("", "..", "a/b", "a\0b"):
        with pytest.raises(BoltError):
            files.note(bad, "x")
    assert sorted(path.name for path in tmp_path.rglob("*") if path.is_file()) == ["web.log"]
