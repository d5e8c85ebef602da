"""The whole benchmark, in miniature: every step runs and RESULTS.md is written from them."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.server, pytest.mark.slow, pytest.mark.export]


def test_suite_quick(repository, data_dir, tmp_path):
    from bonefrac.benchmarks.suite import main

    out = tmp_path / "results"
    code = main(
        [
            "--repository",
            str(repository),
            "--images",
            str(data_dir / "valid" / "images"),
            "--concurrency",
            "1,4",
            "--sizes",
            "512",
            "--window-s",
            "2",
            "--warmup-s",
            "0.3",
            "--max-windows",
            "1",
            "--stability-pct",
            "100",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    text = (out / "RESULTS.md").read_text()
    for needle in (
        "## Targets",
        "in-process ceiling",
        "Ultralytics",
        "FastAPI",
        "perf_analyzer agree",
        "| triton | frcnn | 512 |",
    ):
        assert needle in text, needle
    assert (out / "throughput_vs_p99.png").is_file()
