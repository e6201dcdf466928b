"""The file follower: tail -F, rotation, truncation, restart without loss or duplicates."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from postwatch.watch.follow import Chunk, Follower, Position


def drain(f: Follower, limit: int = 100) -> list[str]:
    out: list[str] = []
    for _ in range(limit):
        chunk = f.poll()
        if chunk is None:
            break
        out.extend(chunk.lines)
    return out


def append(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(text)


def test_reads_appended_lines_and_holds_back_a_partial_line(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_text("")
    f = Follower(log)
    assert drain(f) == []
    append(log, "one\ntwo\nthr")
    assert drain(f) == ["one", "two"]
    append(log, "ee\n")
    assert drain(f) == ["three"]
    pos = f.position
    assert pos is not None and pos.offset == log.stat().st_size


def test_start_at_end_or_beginning(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_text("old 1\nold 2\n")
    assert drain(Follower(log)) == []
    assert drain(Follower(log, start="beginning")) == ["old 1", "old 2"]


def test_file_that_appears_later_is_read_from_its_start(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    f = Follower(log)
    assert drain(f) == []
    log.write_text("a\nb\n")
    assert drain(f) == ["a", "b"]


def test_rename_rotation(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_text("")
    f = Follower(log, rotate_grace=0)
    append(log, "1\n2\n")
    assert drain(f) == ["1", "2"]
    append(log, "3\n4")  # the last line is incomplete when rotation happens
    os.rename(log, tmp_path / "mail.log.1")
    log.write_text("5\n")
    assert drain(f) == ["3", "4", "5"]
    assert f.rotations == 1
    append(log, "6\n")
    assert drain(f) == ["6"]


def test_writer_still_appending_to_the_rotated_file(tmp_path: Path) -> None:
    """logrotate renames first and tells the writer to reopen after: late lines are kept."""
    log = tmp_path / "mail.log"
    log.write_text("")
    f = Follower(log, rotate_grace=0.3)
    append(log, "1\n2")
    assert drain(f) == ["1"]
    old = tmp_path / "mail.log.1"
    os.rename(log, old)
    log.write_text("new 1\n")
    assert drain(f) == ["new 1"]
    append(old, " end\nlate 3\nlate 4 partial")  # the writer has not reopened yet
    assert drain(f) == ["2 end", "late 3"]
    append(log, "new 2\n")
    assert drain(f) == ["new 2"]
    import time

    time.sleep(0.35)
    assert drain(f) == ["late 4 partial"]
    append(old, "too late\n")
    assert drain(f) == []
    f.close()


def test_copytruncate(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_text("")
    f = Follower(log)
    append(log, "1\n2\n")
    assert drain(f) == ["1", "2"]
    with open(log, "r+") as fh:
        fh.truncate(0)
    append(log, "3\n")
    assert drain(f) == ["3"]
    assert f.truncations == 1


def test_file_deleted_then_recreated(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_text("")
    f = Follower(log)
    append(log, "1\n")
    assert drain(f) == ["1"]
    log.unlink()
    assert drain(f) == []
    log.write_text("2\n")
    assert drain(f) == ["2"]


def test_restart_resumes_at_stored_position(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_text("")
    f = Follower(log)
    append(log, "1\n2\n3")
    assert drain(f) == ["1", "2"]
    pos = f.position
    f.close()
    append(log, "\n4\n")
    g = Follower(log, pos)
    assert drain(g) == ["3", "4"]


def test_restart_after_rotation_while_down_finishes_the_old_file(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_text("")
    f = Follower(log)
    append(log, "1\n")
    assert drain(f) == ["1"]
    pos = f.position
    f.close()
    append(log, "2\n")  # written while postwatch was down, before rotation
    os.rename(log, tmp_path / "mail.log.1")
    log.write_text("3\n")
    g = Follower(log, pos)
    assert drain(g) == ["2", "3"]


def test_restart_after_truncation_while_down(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_text("1\n2\n")
    pos = Position(log.stat().st_dev, log.stat().st_ino, log.stat().st_size)
    with open(log, "r+") as fh:
        fh.truncate(0)
    append(log, "3\n")
    assert drain(Follower(log, pos)) == ["3"]


def test_invalid_utf8_and_crlf(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_bytes(b"")
    f = Follower(log)
    with open(log, "ab") as fh:
        fh.write(b"caf\xe9\r\nok\n")
    assert drain(f) == ["caf\ufffd", "ok"]


_line = st.text(
    alphabet=st.characters(blacklist_characters="\n\r", blacklist_categories=("Cs",)),
    max_size=30,
)
_op = st.one_of(
    st.tuples(st.just("write"), st.lists(_line, min_size=1, max_size=5), st.booleans()),
    st.tuples(st.just("rotate"), st.just([]), st.just(False)),
    st.tuples(st.just("restart"), st.just([]), st.just(False)),
    st.tuples(st.just("poll"), st.just([]), st.just(False)),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=st.lists(_op, max_size=25))
def test_property_every_line_exactly_once(tmp_path_factory: object, ops: list) -> None:
    """Whatever the writes, rotations and restarts, each complete line comes out once, in order."""
    import tempfile

    d = Path(tempfile.mkdtemp(dir=str(tmp_path_factory.getbasetemp())))  # type: ignore[attr-defined]
    log = d / "mail.log"
    log.write_text("")
    f = Follower(log, rotate_grace=0)
    assert drain(f) == []
    written: list[str] = []
    partial = ""
    got: list[str] = []
    n = 0
    for op, lines, cut_last in ops:
        if op == "write":
            text = "\n".join(lines)
            if not cut_last:
                text += "\n"
            append(log, text)
            joined = partial + text
            parts = joined.split("\n")
            partial = parts.pop()
            written.extend(parts)
        elif op == "rotate":
            n += 1
            os.rename(log, d / f"mail.log.{n}")
            log.write_text("")
            if partial:
                written.append(partial)  # a rotated file's last partial line is handed out
                partial = ""
            got.extend(drain(f))
        elif op == "restart":
            got.extend(drain(f))
            pos = f.position
            f.close()
            f = Follower(log, pos, rotate_grace=0)
        else:
            got.extend(drain(f))
    append(log, "\n")
    written.append(partial)
    got.extend(drain(f))
    assert got == written


def test_chunk_type(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_text("")
    f = Follower(log)
    append(log, "x\n")
    c = f.poll()
    assert isinstance(c, Chunk) and c.lines == ["x"] and c.path == log
