from __future__ import annotations

import os
from pathlib import Path

import pytest

from postwatch.capacity.space import CATEGORIES, dir_category, file_category, scan
from tests.capacity.helpers import tree_bytes, write

# (path relative to the site root, size, expected category)
WORDPRESS = [
    ("public_html/index.php", 405, "other"),
    ("public_html/wp-config.php", 3_000, "other"),
    ("public_html/wp-includes/version.php", 1_200, "other"),
    ("public_html/wp-content/uploads/2024/05/hero.jpg", 250_000, "uploads"),
    ("public_html/wp-content/uploads/2024/06/menu.pdf", 80_000, "uploads"),
    ("public_html/wp-content/uploads/backwpup-abc123-backups/site-2024.zip", 900_000, "backups"),
    ("public_html/wp-content/uploads/wc-logs/fatal-errors.log", 7_000, "logs"),
    ("public_html/wp-content/uploads/old-site.wpress", 300_000, "backups"),
    ("public_html/wp-content/plugins/akismet/akismet.php", 11_000, "plugins"),
    ("public_html/wp-content/plugins/updraftplus/updraftplus.php", 40_000, "plugins"),
    ("public_html/wp-content/plugins/big-plugin/cache/x.bin", 5_000, "plugins"),
    ("public_html/wp-content/mu-plugins/loader.php", 500, "plugins"),
    ("public_html/wp-content/themes/astra/style.css", 60_000, "themes"),
    ("public_html/wp-content/updraft/backup_2024-db.gz", 120_000, "backups"),
    ("public_html/wp-content/ai1wm-backups/site.wpress", 700_000, "backups"),
    ("public_html/wp-content/cache/page/index.html", 9_000, "caches"),
    ("public_html/wp-content/et-cache/1/style.css", 4_000, "caches"),
    ("public_html/wp-content/debug.log", 33_000, "logs"),
    ("public_html/wp-content/wflogs/attack-data.php", 2_000, "logs"),
    ("public_html/error_log", 15_000, "logs"),
    ("public_html/dump.sql", 66_000, "databases"),
    ("public_html/db-2024.sql.gz", 22_000, "databases"),
    ("public_html/old.tar.gz", 44_000, "backups"),
    ("logs/access.log.1", 12_000, "logs"),
    ("logs/access.log.2.gz", 3_000, "logs"),
    ("mail/gym.example/info/cur/1.M1.host,S=5000", 5_000, "mail"),
    ("mail/gym.example/info/new/2.M2.host,S=6000", 6_000, "mail"),
    ("tmp/sess_abc", 100, "other"),
    ("backups/full-2024-01.tar", 1_000_000, "backups"),
    (".cache/composer/files.json", 2_500, "caches"),
]


@pytest.fixture
def wordpress(tmp_path: Path) -> Path:
    root = tmp_path / "gym"
    for rel, size, _cat in WORDPRESS:
        write(root / rel, size)
    return root


def test_fake_wordpress_tree_totals_per_category(wordpress: Path) -> None:
    rep = scan(wordpress, largest=5, limit_bytes=150 * 1024 * 1024)
    expected = dict.fromkeys(CATEGORIES, 0)
    for _rel, size, cat in WORDPRESS:
        expected[cat] += size
    assert rep.categories == expected
    assert rep.total_bytes == sum(s for _r, s, _c in WORDPRESS) == tree_bytes(wordpress)
    assert rep.files == len(WORDPRESS)
    assert rep.error_count == 0
    d = rep.as_dict()
    assert d["percent"] == round(100 * rep.total_bytes / (150 * 1024 * 1024), 2)


def test_largest_files_and_folders_are_bounded_and_sorted(wordpress: Path) -> None:
    rep = scan(wordpress, largest=3)
    assert [f["path"] for f in rep.largest_files] == [
        "backups/full-2024-01.tar",
        "public_html/wp-content/uploads/backwpup-abc123-backups/site-2024.zip",
        "public_html/wp-content/ai1wm-backups/site.wpress",
    ]
    assert rep.largest_files[0]["category"] == "backups"
    assert len(rep.largest_dirs) == 3
    assert rep.largest_dirs[0]["path"] == "public_html"
    sizes = [d["bytes"] for d in rep.largest_dirs]
    assert sizes == sorted(sizes, reverse=True)
    assert rep.largest_dirs[0]["bytes"] == tree_bytes(wordpress / "public_html")


def test_hard_links_count_once_and_symlinks_are_not_followed(tmp_path: Path) -> None:
    root = tmp_path / "site"
    big = write(root / "a" / "big.bin", 10_000)
    os.link(big, root / "a" / "big-again.bin")
    outside = write(tmp_path / "elsewhere" / "huge.bin", 1_000_000)
    os.symlink(outside, root / "link-to-huge")
    os.symlink(tmp_path / "elsewhere", root / "link-to-dir")
    rep = scan(root)
    assert rep.total_bytes == 10_000
    assert rep.files == 1


def test_a_bind_mounted_folder_counts_once(tmp_path: Path) -> None:
    """Issue 11 low: a folder bind-mounted inside the site was counted twice."""
    import subprocess

    from tests.support import require

    root = tmp_path / "site"
    write(root / "uploads" / "photo.jpg", 50_000)
    (root / "public_html" / "uploads").mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "--bind", str(root / "uploads"), str(root / "public_html" / "uploads")],
        capture_output=True,
    )
    require(mounted.returncode == 0, "bind mounts (root, CAP_SYS_ADMIN)")
    try:
        rep = scan(root)
    finally:
        subprocess.run(["umount", str(root / "public_html" / "uploads")], check=True)
    assert rep.total_bytes == 50_000
    assert rep.files == 1


def test_configured_maildir_paths_count_as_mail(tmp_path: Path) -> None:
    root = tmp_path / "home"
    write(root / "vmaildata" / "info" / "cur" / "m1", 4_000)
    write(root / "other.txt", 10)
    rep = scan(root, mail_dirs=[root / "vmaildata" / "info"])
    assert rep.categories["mail"] == 4_000 and rep.categories["other"] == 10


def test_missing_root_is_an_error_not_zero(tmp_path: Path) -> None:
    rep = scan(tmp_path / "missing")
    assert rep.error_count == 1 and "not a folder" in rep.errors[0]


def test_dangling_symlinks_are_ignored(tmp_path: Path) -> None:
    root = tmp_path / "site"
    write(root / "ok.txt", 5)
    (root / "dangling").symlink_to(tmp_path / "gone")  # lstat works; not followed
    rep = scan(root)
    assert rep.total_bytes == 5 and rep.error_count == 0


def test_classifier_rules() -> None:
    assert file_category("backup.SQL", "other") == "databases"
    assert file_category("x.log.3", "other") == "logs"
    assert file_category("photo.JPG", "uploads") == "uploads"
    assert file_category("photo.jpg", "plugins") == "plugins"
    assert file_category("archive.tar.gz", "uploads") == "backups"
    assert file_category("error_log", "other") == "logs"
    assert dir_category("uploads", "other", "wp-content") == "uploads"
    assert dir_category("wpvividbackups", "other", "wp-content") == "backups"
    assert dir_category("litespeed", "other", "wp-content") == "caches"
    assert dir_category("cache", "plugins", "x") == "plugins"
    assert dir_category("Maildir", "other", "home") == "mail"
    assert dir_category("logs", "other", "home") == "logs"
