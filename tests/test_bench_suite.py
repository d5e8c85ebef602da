"""The whole benchmark, in miniature: every step runs and RESULTS.md is written from them."""

from __future__ import annotations

import json

import pytest

pytestmark = [pytest.mark.server, pytest.mark.slow, pytest.mark.export]


@pytest.mark.timeout(1800)  # about 17 server starts: several minutes on 2 slow, busy cores
def test_suite_quick(repository, data_dir, tmp_path):
    from bonefrac.benchmarks.report import results_markdown
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
            "--data",
            str(data_dir / "data.yaml"),
            "--eval-limit",
            "24",
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
        "| triton | frcnn |  | 512 |",
        "## CPU profile tuning",
        "2 detectors x 1 thread, no dynamic batching",
        "**(fastest)**",
        "(shipped)",
        "## Preprocessed tensors straight to the detector",
        "| yolo11 | shared memory | 1 | 4 |",
        "| yolo11 | gRPC | 4 | 1 |",
        "| frcnn | shared memory | 1 | 1 |",
        "INT8 AP50 on valid within 0.01 of FP32",
        "| in-process | yolo11 | 2 sessions x 1 thread |",
        "Ultralytics' Triton-guide layout at concurrency 4",
        "| ultralytics-triton | yolo11 | 4 client threads |",
        "served Faster R-CNN >= 2 x its throughput of 2026-11-24",
        "Faster R-CNN AP50 on valid at most 0.01 below",
        "served Faster R-CNN vs torchvision in PyTorch",
        "| torchvision | frcnn | 2 threads |",
        "## CPU per request",
        "CPU per request, in-process ceiling over served",
    ):
        assert needle in text, needle
    for plot in ("throughput_vs_p99", "server_breakdown", "scaling", "tuning"):
        assert (out / f"{plot}.png").is_file(), plot
        assert f"{plot}.png)" in text, plot  # linked from the report
    record = json.loads((out / "runs.json").read_text())
    rows = record["runs"]
    assert all(r["errors"] == 0 for r in rows), [r for r in rows if r["errors"]]
    # the report is written from the record alone, which holds what it shows
    assert text == results_markdown(record, plots=".")
    assert (
        set(record["ap50"]) == {"yolo11", "yolo11_int8", "frcnn"}
        and "24 images" in record["ap50_source"]
    )
    assert record["shipped_variant"] in {r.get("variant") for r in rows}
    # every served or FastAPI step counted its server's CPU (tritonserver with its stubs)
    for r in rows:
        if r["target"] in ("triton", "fastapi", "ultralytics-triton"):
            assert r["server_cpu_ms"] > 0, r
    assert record["elapsed_s"] > 0 and record["started"]
    # shared-memory regions of the detector steps were unregistered and freed
    assert not [p for p in __import__("os").listdir("/dev/shm") if "bonefrac_bench" in p]
