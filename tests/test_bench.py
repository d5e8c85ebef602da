"""Smoke run of the load generator against a real server (correctness, not speed)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.server


def _bench(triton, data_dir, out, *extra: str) -> list[dict]:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bonefrac.cli",
            "bench",
            "--server",
            triton.grpc_url,
            "--metrics-url",  # a one-model pipeline's per-step times are on the metrics port
            triton.metrics_url,
            "--model",
            "yolo11",
            "--images",
            str(data_dir / "valid" / "images"),
            "--duration-s",
            "2",
            "--warmup-s",
            "0.5",
            "--max-windows",
            "2",
            "--out",
            str(out),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads((out / "runs.json").read_text())["runs"]


def test_bench_smoke(triton, repository, data_dir, tmp_path):
    out = tmp_path / "bench"
    _bench(
        triton,
        data_dir,
        out,
        "--concurrency",
        "1,3",
        "--baseline",
        "in-process",
        "--repository",
        str(repository),
    )
    data = json.loads((out / "runs.json").read_text())
    assert {"command", "date", "machine", "versions", "runs"} <= set(data)
    runs = data["runs"]
    assert [(r["target"], r["concurrency"]) for r in runs] == [
        ("triton", 1),
        ("triton", 3),
        ("in-process", 1),
        ("in-process", 3),
    ]
    for r in runs:
        assert r["errors"] == 0 and r["requests"] > 0 and r["throughput_rps"] > 0
        assert 0 < r["p50_ms"] <= r["p90_ms"] <= r["p95_ms"] <= r["p99_ms"]
    triton_run = runs[1]
    assert {"yolo11_preprocess", "yolo11_detector", "yolo11_postprocess"} <= set(
        triton_run["server"]
    )
    assert triton_run["server"]["yolo11_detector"]["compute_infer_ms"] > 0
    for name in ("runs.csv", "report.md", "throughput_vs_p99.png", "server_breakdown.png"):
        assert (out / name).is_file(), name
    assert "| triton | 3 |" in (out / "report.md").read_text()


@pytest.mark.parametrize("mode", ["tensors", "shm"])
def test_bench_tensors_straight_to_the_detector(triton, repository, data_dir, tmp_path, mode):
    """Preprocessed batches to yolo11_detector, over gRPC or system shared memory: served
    without errors, the detector's own statistics reported, and no region left behind."""
    import os

    runs = _bench(
        triton,
        data_dir,
        tmp_path / "bench",
        "--input",
        mode,
        "--batch",
        "2",
        "--concurrency",
        "2",
        "--repository",
        str(repository),
    )
    assert len(runs) == 1
    r = runs[0]
    assert r["target"] == "triton-detector" and r["input"] == mode and r["batch"] == 2
    assert r["errors"] == 0 and r["requests"] > 0
    assert r["server"]["yolo11_detector"]["compute_infer_ms"] > 0
    assert not [f for f in os.listdir("/dev/shm") if f.startswith("bonefrac_bench")]


def test_shm_close_while_requests_are_in_flight(triton, repository, data_dir):
    """Issue 17: closing the shared-memory target while requests are in flight (one answered,
    the others still queued or running on the server), with one core kept busy by another
    process. Close waits for them and retries the unregister while the server still holds a
    region; nothing stays registered on the server or in /dev/shm, and no warning is needed."""
    import asyncio
    import os

    import tritonclient.grpc as grpcclient

    from bonefrac.benchmarks import loadgen
    from bonefrac.benchmarks.soak import load_images
    from bonefrac.pipeline import read_repository_model

    spec = read_repository_model(repository, "yolo11").spec
    payloads = loadgen.detector_payloads(
        load_images(data_dir / "valid" / "images", limit=8), spec, batch=4
    )
    mine = f"{loadgen.REGION_PREFIX}{os.getpid()}_"

    async def main() -> tuple[list[str], list, int]:
        target, _, close = loadgen.detector_target(
            triton.grpc_url, spec.detector, shared_memory=True
        )
        tasks = [asyncio.ensure_future(target(p)) for p in payloads]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        in_flight = sum(not t.done() for t in tasks)
        refused = await close()
        return refused, await asyncio.gather(*tasks, return_exceptions=True), in_flight

    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        refused, results, in_flight = asyncio.run(main())
    finally:
        hog.kill()
        hog.wait()
    assert in_flight > 0, "close ran after every request had finished: no race exercised"
    assert refused == []
    assert results == [None] * len(payloads), results  # every request answered
    raw = grpcclient.InferenceServerClient(triton.grpc_url)
    try:
        status = raw.get_system_shared_memory_status(as_json=True)
    finally:
        raw.close()
    assert not [r for r in status.get("regions", {}) if r.startswith(loadgen.REGION_PREFIX)]
    assert not [f for f in os.listdir("/dev/shm") if f.startswith(mine)]


def test_bench_tensors_refuse_baselines(triton, repository, data_dir, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "bonefrac.cli", "bench", "--server", triton.grpc_url]
        + ["--images", str(data_dir / "valid" / "images"), "--input", "shm"]
        + ["--baseline", "in-process", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "baselines take encoded images" in result.stderr


def test_open_loop_poisson_step(triton, data_dir):
    import asyncio

    from bonefrac.benchmarks import loadgen
    from bonefrac.benchmarks.soak import load_images

    payloads = load_images(data_dir / "valid" / "images", limit=4)

    async def main():
        target, stats, close = loadgen.triton_target(triton.grpc_url, "yolo11")
        try:
            return await loadgen.run_step(
                target,
                payloads,
                name="triton",
                rate_rps=4.0,
                poisson=True,
                warmup_s=0.5,
                window_s=2.0,
                max_windows=2,
                stats=stats,
            )
        finally:
            await close()

    step = asyncio.run(main())
    assert step.errors == 0 and step.rate_rps == 4.0
    assert 1.0 < step.throughput_rps < 8.0  # about the offered rate, not a closed loop


@pytest.mark.export
def test_bench_fastapi_and_ultralytics_baselines(triton, repository, data_dir, tmp_path):
    """The baselines run in the same bench call on the same images, error-free."""
    from bonefrac.export._offline import prepare_ultralytics_offline

    prepare_ultralytics_offline()
    from ultralytics import YOLO

    weights = tmp_path / "yolo11n.pt"
    YOLO("yolo11n.yaml", task="detect").save(str(weights))  # a config-built checkpoint
    runs = _bench(
        triton,
        data_dir,
        tmp_path / "bench",
        "--concurrency",
        "2",
        "--baseline",
        "fastapi,ultralytics,ultralytics-triton",
        "--weights",
        str(weights),
        "--imgsz",
        "640",
        "--repository",
        str(repository),
    )
    assert [r["target"] for r in runs] == ["triton", "fastapi", "ultralytics", "ultralytics-triton"]
    for r in runs:
        assert r["errors"] == 0 and r["requests"] > 0, r


@pytest.mark.export
def test_bench_torchvision_baseline(triton, repository, data_dir, tmp_path):
    """Faster R-CNN served and in PyTorch with the same weights, in one bench call."""
    runs = _bench(
        triton,
        data_dir,
        tmp_path / "bench",
        *("--model", "frcnn", "--concurrency", "1", "--baseline", "torchvision"),
        *("--repository", str(repository)),
    )
    assert [r["target"] for r in runs] == ["triton", "torchvision"]
    for r in runs:
        assert r["errors"] == 0 and r["requests"] > 0, r


def test_bench_torchvision_baseline_refuses_yolo(repository, data_dir, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "bonefrac.cli", "bench", "--server", "127.0.0.1:1"]
        + ["--images", str(data_dir / "valid" / "images"), "--model", "yolo11"]
        + ["--baseline", "torchvision", "--repository", str(repository)]
        + ["--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "the torchvision baseline runs Faster R-CNN models" in result.stderr


def test_perf_analyzer_cross_check_runs(triton, data_dir, tmp_path):
    """perf_analyzer beside our own sweep in one bench call: the command succeeds whether or
    not perf_analyzer found a stable window on this (possibly busy) machine."""
    runs = _bench(
        triton, data_dir, tmp_path / "bench", "--concurrency", "2", "--baseline", "perf_analyzer"
    )
    assert [r["target"] for r in runs] == ["triton", "perf_analyzer"]
    _check_perf_analyzer_row(runs[1], concurrency=2)


def test_perf_analyzer_without_a_stable_window_is_a_result(triton, data_dir):
    """A stability criterion no window can meet (0 %): perf_analyzer exits with "Failed to
    obtain stable measurement"; its last trial comes back as the result, marked unstable."""
    from bonefrac.benchmarks import perf_analyzer
    from bonefrac.benchmarks.soak import load_images

    binary = perf_analyzer.locate() or perf_analyzer.install()
    row = perf_analyzer.run(
        binary,
        url=triton.grpc_url,
        model="yolo11",
        images=load_images(data_dir / "valid" / "images", limit=4),
        concurrency=1,
        window_s=1.0,
        max_trials=3,
        stability_pct=0,
    )
    assert row["stable"] is False
    _check_perf_analyzer_row(row, concurrency=1)


def _check_perf_analyzer_row(row: dict, *, concurrency: int) -> None:
    assert row["target"] == "perf_analyzer" and row["concurrency"] == concurrency
    assert row["throughput_rps"] > 0 and row["errors"] == 0
    if row["stable"]:
        assert 0 < row["p50_ms"] <= row["p99_ms"], row
    else:  # the last trial: its throughput and the mean latency perf_analyzer printed for it
        assert row["mean_ms"] > 0, row


def test_perf_analyzer_cache_with_a_dangling_library_is_made_again(tmp_path, monkeypatch):
    """A cache whose libraries pointed into a virtual environment that is gone (as older
    versions linked them) is not used: locate() says so and install() makes it again."""
    from bonefrac.benchmarks import perf_analyzer

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("BONEFRAC_PERF_ANALYZER", raising=False)
    cache = perf_analyzer.cache_dir()
    (cache / "bin").mkdir(parents=True)
    (cache / "lib").mkdir()
    (cache / "bin" / "perf_analyzer").write_bytes(b"\x7fELF")
    for _, name in perf_analyzer.LIBRARIES:
        (cache / "lib" / name).symlink_to(tmp_path / "gone-venv" / name)
    assert perf_analyzer.locate() is None
    for _, name in perf_analyzer.LIBRARIES:
        (cache / "lib" / name).unlink()
        (cache / "lib" / name).write_bytes(b"library")
    assert perf_analyzer.locate() == cache / "bin" / "perf_analyzer"
