"""A short soak at saturation: zero errors, flat memory, no shared memory left behind.
The long run is ``bonefrac soak --duration-s 600`` (docs/RELIABILITY.md)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.server, pytest.mark.slow]


def test_short_soak(repository, data_dir, tmp_path):
    out = tmp_path / "soak.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bonefrac.cli",
            "soak",
            "--repository",
            str(repository),
            "--model",
            "yolo11",
            "--images",
            str(data_dir / "valid" / "images"),
            "--warmup-s",
            "120",
            "--duration-s",
            "40",
            "--concurrency",
            "6",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(out.read_text())
    assert report["errors"] == 0 and report["requests"] > 50
    assert report["rss_growth_pct"] < 5.0, report["rss_samples_mb"]
    assert report["shm_files_left_after_stop"] == 0
