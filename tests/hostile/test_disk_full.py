"""Issue 11 low: ``/healthz`` said ok while every write failed (disk full); every refused
submission logged one ERROR line (2,790 in 20 s)."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from postwatch.app import create_app
from postwatch.store import Database
from tests.conftest import make_config
from tests.support import require


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB tmpfs: a real disk that fills up."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True
    )
    require(done.returncode == 0, "mounting a tmpfs (root)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


async def test_healthz_reports_failing_writes_and_refusals_log_once(
    tmp_path: Path, small_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = Database(f"sqlite:///{small_disk / 'postwatch.db'}")
    db.migrate()
    cfg = make_config(tmp_path, database={"url": db.url}, intake={"rate_limit": 0})
    app = create_app(cfg, db)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 4000))
    async with httpx.AsyncClient(transport=transport, base_url="http://pw.test") as c:
        r = await c.get("/healthz")
        assert r.status_code == 200 and r.json()["status"] == "ok"
        filler = small_disk / "filler"
        with open(filler, "wb") as fh:  # fill the disk
            try:
                while True:
                    fh.write(b"\0" * 65536)
                    fh.flush()
            except OSError:
                pass
        caplog.set_level(logging.INFO, logger="postwatch.intake")
        statuses = []
        for i in range(200):
            r = await c.post("/f/contact", data={"msg": "x" * 4000, "i": str(i)},
                             headers={"Accept": "application/json"})
            statuses.append(r.status_code)
        assert set(statuses) == {503}, statuses
        r = await c.get("/healthz")
        assert r.status_code == 503, r.text
        assert r.json()["store"] == "writes failing"
        assert "full" in r.json()["error"]
        errors = [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
        assert 1 <= len(errors) <= 3, [rec.getMessage() for rec in errors]  # not one per refusal
        filler.unlink()  # space again
        r = await c.post("/f/contact", data={"msg": "back"}, headers={"Accept": "application/json"})
        assert r.status_code == 201, r.text
        r = await c.get("/healthz")
        assert r.status_code == 200 and r.json()["status"] == "ok"
        messages = " ".join(rec.getMessage() for rec in caplog.records)
        assert "refused" in messages and "200" in messages  # the count, once it ended
    db.dispose()
