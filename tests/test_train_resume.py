"""A long YOLO11 run survives a new machine: the committed snapshot resumes it, and its
learning curve is scored by the project's evaluator."""

from __future__ import annotations

import csv
import os
import shutil

import pytest

pytestmark = [pytest.mark.export, pytest.mark.slow]


def _epochs_in(results_csv):
    with results_csv.open(newline="") as f:
        return [int(float(row["epoch"])) for row in csv.DictReader(f)]


def test_snapshot_resumes_on_a_new_machine_and_scores_a_curve(tiny_data, tmp_path, monkeypatch):
    from bonefrac.train import TrainError
    from bonefrac.train.curve import checkpoint_epoch, read_curve, score_snapshot
    from bonefrac.train.yolo11 import Yolo11TrainConfig, train_yolo11

    monkeypatch.chdir(tmp_path)  # the repository root of this run: paths relative to it
    snapshot = tmp_path / "snapshot"
    config = Yolo11TrainConfig(
        data=os.path.relpath(tiny_data),
        imgsz=64,
        epochs=2,
        batch=4,
        workers=0,
        project="runs",
        name="tiny",
        precision="bfloat16",  # CPU autocast: Ultralytics' own bf16 is CUDA-only
        cache="ram",
        snapshot="snapshot",
    )

    def stop_after_first_epoch(trainer):
        trainer.stop = True  # as a session that ends after one epoch

    train_yolo11(config, callbacks={"on_fit_epoch_end": stop_after_first_epoch})
    assert (snapshot / "checkpoint.pt").is_file()
    assert checkpoint_epoch(snapshot / "checkpoint.pt")[0] == 1
    assert _epochs_in(snapshot / "results.csv") == [1]
    _assert_no_machine_paths(snapshot, tmp_path, tiny_data.parent)

    # A new machine: the run folder is gone, only the committed snapshot is left.
    shutil.rmtree(tmp_path / "runs")
    train_yolo11(config, resume=True)
    assert checkpoint_epoch(snapshot / "checkpoint.pt")[0] == 2
    assert _epochs_in(snapshot / "results.csv") == [1, 2]
    _assert_no_machine_paths(snapshot, tmp_path, tiny_data.parent)  # a resume adds pt_path

    point = score_snapshot(snapshot, data=str(tiny_data), imgsz=64)
    epoch, hours = checkpoint_epoch(snapshot / "checkpoint.pt")
    # the checkpoint's training time, rounded to 3.6 s (a fast machine trains this in less)
    assert hours > 0 and point.epoch == epoch == 2 and point.train_hours == round(hours, 3)
    assert 0.0 <= point.ap50 <= 1.0 and 0.0 <= point.sens_at_1fp <= 1.0
    assert read_curve(snapshot) == [point]
    assert (snapshot / "curve.png").stat().st_size > 0
    assert not (snapshot / "checkpoint.onnx").exists()  # the export leaves nothing behind

    # Without a run folder or a snapshot there is nothing to resume: a clear error.
    empty = Yolo11TrainConfig(data=str(tiny_data), project=str(tmp_path / "none"), name="x")
    with pytest.raises(TrainError, match="nothing to resume"):
        train_yolo11(empty, resume=True)


def _assert_no_machine_paths(snapshot, *absolute_paths):
    for absolute in absolute_paths:
        leaks = [p.name for p in snapshot.iterdir() if str(absolute).encode() in p.read_bytes()]
        assert not leaks, f"{absolute} is in {leaks}"
