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
    # A leak of the size that matters here (a decoded image or an output tensor per request,
    # 0.5 MB or more) adds 300 MB or more over these ~600 requests: +35 % of the ~850 MB the
    # server holds. What is left of the allocators settling after the warm-up is smaller but not
    # zero on a slow CPU (+5.03 % in 40 s on a 2-core AMD EPYC, 2026-12-07), so the bound sits
    # between the two; the long soak in docs/RELIABILITY.md measures the growth itself.
    assert report["rss_growth_pct"] < 15.0, report["rss_samples_mb"]
    assert report["shm_files_left_after_stop"] == 0
