from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from postwatch.capacity.maildir import MaildirSource, parse_maildirsize, sum_maildir
from postwatch.capacity.sources import QuotaTarget, read_quotas
from postwatch.config import QuotaSourceConfig
from tests.capacity.helpers import make_maildir, write


def target(path: Path, limit: int | None = None) -> QuotaTarget:
    return QuotaTarget(
        "gym", "info@gym.example", QuotaSourceConfig(source="maildir", path=path), limit
    )


def test_parse_maildirsize_limits_and_deltas() -> None:
    parsed = parse_maildirsize("204800S,1000C\n1000 1\n2500 2\n-500 -1\n")
    assert parsed is not None
    assert (parsed.used_bytes, parsed.messages) == (3000, 2)
    assert (parsed.limit_bytes, parsed.message_limit) == (204800, 1000)
    only_count = parse_maildirsize("50C\n10 1\n")
    assert only_count is not None and only_count.limit_bytes is None
    assert only_count.message_limit == 50


def test_untrusted_maildirsize_is_refused() -> None:
    assert parse_maildirsize("") is None
    assert parse_maildirsize("garbage\n1 1\n") is None
    assert parse_maildirsize("100S\n1 2 3\n") is None
    assert parse_maildirsize("100S\nabc 1\n") is None
    big = "100S\n" + "10 1\n" * 2000  # over 5120 bytes: the spec says recalculate
    assert parse_maildirsize(big) is None


@given(st.lists(st.tuples(st.integers(0, 10**7), st.integers(0, 100)), max_size=50))
def test_maildirsize_sums_any_deltas(deltas: list[tuple[int, int]]) -> None:
    text = "1000000S\n" + "".join(f"{b} {c}\n" for b, c in deltas)
    parsed = parse_maildirsize(text)
    if len(text) > 5120:
        assert parsed is None
    else:
        assert parsed is not None
        assert parsed.used_bytes == sum(b for b, _ in deltas)


def test_maildirsize_file_on_disk_wins(tmp_path: Path) -> None:
    box = tmp_path / "info"
    make_maildir(box, {"": [100, 200]})
    (box / "maildirsize").write_text("1048576S,0C\n5000 3\n")
    r = MaildirSource().read_one(target(box))
    assert r.ok and r.used_bytes == 5000 and r.limit_bytes == 1048576 and r.messages == 3


def test_sum_maildir_when_no_maildirsize(tmp_path: Path) -> None:
    box = tmp_path / "info"
    expected = make_maildir(box, {"": [1000, 2000, 3000], ".Sent": [400], ".Trash": [50]})
    assert sum_maildir(box) == (expected, 5)
    r = read_quotas([target(box, limit=10_000)])[0]
    assert r.ok and r.used_bytes == expected and r.limit_bytes == 10_000
    assert r.percent == round(100 * expected / 10_000, 2)


def test_sizes_from_files_when_names_have_none(tmp_path: Path) -> None:
    box = tmp_path / "home"
    expected = make_maildir(box / "Maildir", {"": [123, 456]}, size_in_name=False)
    write(box / "Maildir" / "dovecot.index.cache", 99999)  # not a message
    r = MaildirSource().read_one(target(box))  # a home folder holding Maildir/
    assert r.ok and r.used_bytes == expected and r.messages == 2


def test_missing_maildir_is_an_error_not_zero(tmp_path: Path) -> None:
    r = MaildirSource().read_one(target(tmp_path / "nope"))
    assert not r.ok and r.used_bytes is None and r.percent is None
    assert r.error and "no such Maildir" in r.error


def test_stale_maildirsize_keeps_its_limit_but_sums_the_maildir(tmp_path: Path) -> None:
    box = tmp_path / "info"
    expected = make_maildir(box, {"": [700, 800]})
    (box / "maildirsize").write_text("300000S\n" + "10 1\n" * 2000)  # too long: recalculate
    r = MaildirSource().read_one(target(box))
    assert r.ok and r.used_bytes == expected and r.limit_bytes == 300000
