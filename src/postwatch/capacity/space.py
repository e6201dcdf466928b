"""Space scanner: what fills a hosting account's folder, by category, WordPress-aware.

One pass with ``os.scandir`` (no subprocess, no per-file open): each folder gets a category when
it is entered (from its name and its parent's category: ``wp-content/uploads`` is uploads,
``wp-content/updraft`` is backups, ``logs/`` is logs, a ``mail``/``Maildir`` folder is mail...),
and files in the generic categories are refined by name (``*.sql.gz`` is a database dump,
``*.zip``/``*.tar.gz``/``*.wpress`` a backup, ``*.log``/``error_log`` a log). Sizes are apparent
sizes (``st_size``) of regular files; symbolic links are not followed; a file with several hard
links counts once, and so does a folder seen at two paths (a bind mount: folders are told apart
by device and inode, one stat per folder). The largest files and folders are kept in bounded
heaps, so memory does not grow with the number of files.
"""

from __future__ import annotations

import heapq
import os
import stat
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CATEGORIES = (
    "mail",
    "uploads",
    "plugins",
    "themes",
    "backups",
    "caches",
    "logs",
    "databases",
    "other",
)

#: folders named like this hold mail, wherever they are (outside code folders)
MAIL_DIRS = frozenset({"mail", "Maildir", "maildir", ".maildir", "vmail", "imap"})
#: inside ``wp-content``
WP_CONTENT = {
    "uploads": "uploads",
    "blogs.dir": "uploads",
    "plugins": "plugins",
    "mu-plugins": "plugins",
    "themes": "themes",
    "languages": "other",
    "upgrade": "caches",
    "cache": "caches",
    "et-cache": "caches",
    "w3tc-config": "other",
    "litespeed": "caches",
    "wflogs": "logs",
    "updraft": "backups",
    "ai1wm-backups": "backups",
    "backups-dup-lite": "backups",
    "backups-dup-pro": "backups",
    "backup-db": "backups",
    "backupwordpress": "backups",
    "wpvividbackups": "backups",
    "wpvivid_staging": "backups",
    "backup-guard": "backups",
    "managewp": "backups",
}
#: backup plugins' folders by prefix, in wp-content or wp-content/uploads
BACKUP_PREFIXES = (
    "backwpup-",
    "backupbuddy_backups",
    "pb_backupbuddy",
    "backupwordpress-",
    "updraft",
    "wp-clone",
    "wpvivid",
    "ai1wm-backups",
    "jetbackup",
    "snapshots",
)
#: folder names with a meaning anywhere in the generic parts of the tree
ANY_DIR = {
    "cache": "caches",
    ".cache": "caches",
    "caches": "caches",
    "__pycache__": "caches",
    "node_modules": "other",
    "logs": "logs",
    "log": "logs",
    "wc-logs": "logs",
    "backup": "backups",
    "backups": "backups",
    ".backup": "backups",
    ".backups": "backups",
    "mysql-backups": "databases",
    "db-backups": "databases",
    "dumps": "databases",
}
DUMP_EXT = frozenset({"sql", "mysql", "dump", "pgdump", "psql"})
ARCHIVE_EXT = frozenset(
    {"zip", "tar", "tgz", "tbz", "tbz2", "txz", "7z", "rar", "wpress", "bak", "jpa", "daf"}
)
COMPRESS_EXT = frozenset({"gz", "bz2", "xz", "zst", "lz4", "z"})
LOG_NAMES = frozenset({"error_log", "access_log", "debug.log", "php_errorlog", "php_error.log"})
#: categories whose files are refined by file name
REFINED = frozenset({"other", "uploads"})


def file_category(name: str, dir_category: str) -> str:
    """The category of a file called ``name`` in a folder of ``dir_category``."""
    if dir_category not in REFINED:
        return dir_category
    lower = name.lower()
    dot = lower.rfind(".")
    if dot <= 0:
        return "logs" if lower in LOG_NAMES else dir_category
    ext = lower[dot + 1 :]
    if ext == "log" or lower in LOG_NAMES:
        return "logs"
    if ext in DUMP_EXT:
        return "databases"
    if ext in ARCHIVE_EXT:
        return "backups"
    if ext in COMPRESS_EXT or ext.isdigit():
        inner = lower[:dot]
        if ".log" in inner or inner.endswith("_log"):
            return "logs"
        if inner.endswith((".sql", ".mysql", ".dump")):
            return "databases"
        return "backups" if ext in COMPRESS_EXT else dir_category
    return dir_category


def dir_category(name: str, parent_category: str, parent_name: str) -> str:
    """The category of a folder from its name and its parent's."""
    if parent_category in ("mail", "plugins", "themes", "backups", "logs", "databases", "caches"):
        return parent_category
    if parent_name == "wp-content":
        cat = WP_CONTENT.get(name)
        if cat is not None:
            return cat
        lower = name.lower()
        if lower.startswith(BACKUP_PREFIXES):
            return "backups"
        if "cache" in lower:
            return "caches"
        if lower.endswith("-logs") or lower.endswith("_logs"):
            return "logs"
        return parent_category
    if parent_category == "uploads":
        lower = name.lower()
        if lower.startswith(BACKUP_PREFIXES) or "backup" in lower:
            return "backups"
        if lower in ("wc-logs", "logs"):
            return "logs"
        if "cache" in lower:
            return "caches"
        return "uploads"
    if name in MAIL_DIRS:
        return "mail"
    return ANY_DIR.get(name.lower(), parent_category)


@dataclass
class SpaceReport:
    root: str
    total_bytes: int = 0
    files: int = 0
    dirs: int = 0
    categories: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CATEGORIES, 0))
    largest_files: list[dict[str, Any]] = field(default_factory=list)
    largest_dirs: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    error_count: int = 0
    seconds: float = 0.0
    limit_bytes: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "total_bytes": self.total_bytes,
            "limit_bytes": self.limit_bytes,
            "percent": (
                round(100.0 * self.total_bytes / self.limit_bytes, 2) if self.limit_bytes else None
            ),
            "files": self.files,
            "dirs": self.dirs,
            "categories": dict(self.categories),
            "largest": self.largest_files,
            "largest_dirs": self.largest_dirs,
            "errors": self.errors,
            "error_count": self.error_count,
            "seconds": round(self.seconds, 3),
        }


class _Scanner:
    MAX_ERRORS = 20
    MAX_DEPTH = 400

    def __init__(self, root: Path, largest: int, mail_dirs: Iterable[Path]) -> None:
        self.root = root
        self.root_str = str(root)
        self.n = largest
        self.mail_dirs = {os.path.normpath(str(p)) for p in mail_dirs}
        self.files_heap: list[tuple[int, str, str]] = []
        self.dirs_heap: list[tuple[int, str]] = []
        self.cats: dict[str, int] = dict.fromkeys(CATEGORIES, 0)
        self.files = 0
        self.dirs = 0
        self.errors: list[str] = []
        self.error_count = 0
        self.seen_inodes: set[tuple[int, int]] = set()
        # folders by (device, inode): a bind mount shows one folder at two paths
        self.seen_dirs: set[tuple[int, int]] = set()
        self.memo: dict[str, dict[str, str]] = {}

    def error(self, path: str, exc: OSError) -> None:
        self.error_count += 1
        if len(self.errors) < self.MAX_ERRORS:
            self.errors.append(f"{path}: {exc.strerror or exc}")

    def scan_dir(self, path: str, category: str, name: str, depth: int) -> int:
        """Bytes below ``path`` (recursive); adds to the counters and heaps."""
        self.dirs += 1
        try:
            it = os.scandir(path)
        except OSError as exc:
            self.error(path, exc)
            return 0
        total = 0
        files = 0
        cats = self.cats
        refine = category in REFINED
        memo = self.memo.setdefault(category, {})
        fheap = self.files_heap
        n = self.n
        fmin = fheap[0][0] if len(fheap) >= n else -1
        subdirs: list[tuple[str, str]] = []
        with it:
            for entry in it:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        subdirs.append((entry.path, entry.name))
                        continue
                    st = entry.stat(follow_symlinks=False)
                except OSError as exc:
                    self.error(entry.path, exc)
                    continue
                if not stat.S_ISREG(st.st_mode):
                    continue
                if st.st_nlink > 1:
                    key = (st.st_dev, st.st_ino)
                    if key in self.seen_inodes:
                        continue
                    self.seen_inodes.add(key)
                size = st.st_size
                files += 1
                total += size
                if refine:
                    # memo by extension: most files of a folder share one
                    nm = entry.name
                    dot = nm.rfind(".")
                    ext = nm[dot + 1 :] if dot > 0 else ""
                    cat = memo.get(ext) if ext else None
                    if cat is None:
                        cat = file_category(nm, category)
                        if (
                            ext
                            and len(memo) < 4096
                            and not ext.isdigit()
                            and ext.lower() not in COMPRESS_EXT
                        ):
                            memo[ext] = cat
                else:
                    cat = category
                cats[cat] += size
                if size > fmin:
                    item = (size, entry.path, cat)
                    if len(fheap) < n:
                        heapq.heappush(fheap, item)
                    else:
                        heapq.heapreplace(fheap, item)
                    fmin = fheap[0][0] if len(fheap) >= n else -1
        self.files += files
        for sub_path, sub_name in subdirs:
            if depth >= self.MAX_DEPTH:
                self.error(sub_path, OSError(0, "folders nested too deep; not scanned"))
                continue
            if not self.first_visit(sub_path):
                continue
            if self.mail_dirs and os.path.normpath(sub_path) in self.mail_dirs:
                sub_cat = "mail"
            else:
                sub_cat = dir_category(sub_name, category, name)
            sub_total = self.scan_dir(sub_path, sub_cat, sub_name, depth + 1)
            total += sub_total
            dheap = self.dirs_heap
            if len(dheap) < n:
                heapq.heappush(dheap, (sub_total, sub_path))
            elif sub_total > dheap[0][0]:
                heapq.heapreplace(dheap, (sub_total, sub_path))
        return total

    def first_visit(self, path: str) -> bool:
        """False for a folder already scanned under another path (a bind mount)."""
        try:
            st = os.stat(path, follow_symlinks=False)
        except OSError:
            return True  # scan_dir reports the error
        key = (st.st_dev, st.st_ino)
        if key in self.seen_dirs:
            return False
        self.seen_dirs.add(key)
        return True

    def rel(self, path: str) -> str:
        return os.path.relpath(path, self.root_str)


def scan(
    root: Path | str,
    *,
    largest: int = 20,
    mail_dirs: Iterable[Path] = (),
    limit_bytes: int | None = None,
) -> SpaceReport:
    """Scan ``root``; a missing or unreadable root gives a report with an error, never raises."""
    root = Path(root)
    report = SpaceReport(root=str(root), limit_bytes=limit_bytes)
    started = time.perf_counter()
    sc = _Scanner(root, max(1, largest), mail_dirs)
    if not root.is_dir():
        report.errors.append(f"{root}: not a folder (missing or not readable)")
        report.error_count = 1
        return report
    start_cat = "mail" if os.path.normpath(str(root)) in sc.mail_dirs else "other"
    sc.first_visit(str(root))
    report.total_bytes = sc.scan_dir(str(root), start_cat, root.name, 0)
    report.seconds = time.perf_counter() - started
    report.files, report.dirs = sc.files, sc.dirs
    report.categories = sc.cats
    report.largest_files = [
        {"path": sc.rel(p), "bytes": size, "category": cat}
        for size, p, cat in sorted(sc.files_heap, reverse=True)
    ]
    report.largest_dirs = [
        {"path": sc.rel(p), "bytes": size} for size, p in sorted(sc.dirs_heap, reverse=True)
    ]
    report.errors, report.error_count = sc.errors, sc.error_count
    return report
