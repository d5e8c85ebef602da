"""Both trainers on a few images for one short epoch, ending in an exported, servable model."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.export, pytest.mark.slow, pytest.mark.server]


def _serve_and_detect(repository, model, image):
    from bonefrac.client import DetectionClient
    from bonefrac.server import TritonServer

    server = TritonServer.ephemeral(repository, startup_timeout_s=300)
    with server, DetectionClient(server.grpc_url, model=model, timeout_s=60) as client:
        return client.detect(image.read_bytes(), conf_threshold=0.0)


def _train(args, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "bonefrac.cli", "train", *args, "--project", str(tmp_path / "runs")],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def test_yolo11_trains_exports_and_serves(tiny_data, tmp_path, valid_images):
    repo = tmp_path / "repo"
    out = _train(
        [
            "yolo11",
            "--data",
            str(tiny_data),
            "--imgsz",
            "64",
            "--epochs",
            "1",
            "--batch",
            "4",
            "--workers",
            "0",
            "--name",
            "tiny",
            "--export-to",
            str(repo),
            "--export-name",
            "tinyyolo",
        ],
        tmp_path,
    )
    run = tmp_path / "runs" / "tiny"
    assert (run / "weights" / "best.pt").is_file() and (run / "bonefrac_train.json").is_file()
    assert (run / "eval_valid_6class.json").is_file() and "AP50-95" in out
    detections = _serve_and_detect(repo, "tinyyolo", valid_images[0])
    assert detections.image_size[0] > 0


def test_frcnn_trains_resumes_exports_and_serves(tiny_data, tmp_path, valid_images):
    repo = tmp_path / "repo"
    common = [
        "frcnn",
        "--data",
        str(tiny_data),
        "--min-size",
        "128",
        "--max-size",
        "160",
        "--batch",
        "2",
        "--negatives",
        "0.5",
        "--roi-batch",
        "64",
        "--rpn-proposals",
        "300",
        "--name",
        "tinyf",
    ]
    _train([*common, "--epochs", "1"], tmp_path)
    run = tmp_path / "runs" / "tinyf"
    assert (run / "last.pth").is_file() and (run / "best.pth").is_file()
    out = _train([*common, "--epochs", "2", "--resume", "--export-to", str(repo)], tmp_path)
    assert "epoch 2/2:" in out and "epoch 1/" not in out  # resumed, not restarted
    log = (run / "results.csv").read_text().splitlines()
    assert log[0].startswith("epoch,loss") and len(log) == 3
    record = json.loads((run / "bonefrac_train.json").read_text())
    assert record["config"]["epochs"] == 2 and record["resumes"][0]["planned_before"] == 1
    changed = subprocess.run(
        [sys.executable, "-m", "bonefrac.cli", "train", *common, "--roi-batch", "32"]
        + ["--epochs", "2", "--resume", "--project", str(tmp_path / "runs")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert changed.returncode == 1
    assert "resume with the options the run was started with: --roi-batch 64 (now 32)" in (
        changed.stderr
    )
    detections = _serve_and_detect(repo, "frcnn", valid_images[0])
    assert len(detections) > 0
