"""A long YOLO11 run survives a new machine: the committed snapshot resumes it, and its
learning curve is scored by the project's evaluator."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT

pytestmark = [pytest.mark.export, pytest.mark.slow]


def _epochs_in(results_csv):
    with results_csv.open(newline="") as f:
        return [int(float(row["epoch"])) for row in csv.DictReader(f)]


def test_snapshot_resumes_on_a_new_machine_and_scores_a_curve(tiny_data, tmp_path, monkeypatch):
    import torch

    from bonefrac.train import TrainError
    from bonefrac.train.curve import checkpoint_epoch, read_curve, score_snapshot, snapshot_epoch
    from bonefrac.train.model_card import epochs_by_machine
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

    # A new machine: the run folder is gone, only the committed snapshot is left. It has no
    # bfloat16 instructions: the run goes on in float32 (Ultralytics would keep the checkpoint's
    # amp and emulate bfloat16, ten times slower), and the record says so.
    shutil.rmtree(tmp_path / "runs")
    train_yolo11(dataclasses.replace(config, precision="float32"), resume=True)
    assert checkpoint_epoch(snapshot / "checkpoint.pt")[0] == snapshot_epoch(snapshot) == 2
    assert _epochs_in(snapshot / "results.csv") == [1, 2]
    saved = torch.load(snapshot / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert saved["train_args"]["amp"] is False
    record = json.loads((snapshot / "bonefrac_train.json").read_text())
    assert [(r["after_epoch"], r["precision"]) for r in record["resumes"]] == [(1, "float32")]
    assert epochs_by_machine(record, 2).endswith(f"2: {os.cpu_count()}-core CPU, float32")
    _assert_no_machine_paths(snapshot, tmp_path, tiny_data.parent)  # a resume adds pt_path

    point = score_snapshot(snapshot, data=str(tiny_data))
    epoch, hours = checkpoint_epoch(snapshot / "checkpoint.pt")
    # the checkpoint's training time, rounded to 3.6 s (a fast machine trains this in less)
    assert hours > 0 and point.epoch == epoch == 2 and point.train_hours == round(hours, 3)
    assert 0.0 <= point.ap50 <= 1.0 and 0.0 <= point.sens_at_1fp <= 1.0
    assert read_curve(snapshot) == [point]
    assert (snapshot / "curve.png").stat().st_size > 0
    assert not (snapshot / "checkpoint.onnx").exists()  # the export leaves nothing behind

    # Its curve still rising, the run goes on past its plan: the schedule grows to 3 epochs.
    # Ultralytics stripped the finished checkpoint (no optimizer, epoch -1): it resumes after
    # the epochs in results.csv with the momentum restarted, and the record says so.
    train_yolo11(dataclasses.replace(config, precision="float32", epochs=3), resume=True)
    assert _epochs_in(snapshot / "results.csv") == [1, 2, 3]
    assert checkpoint_epoch(snapshot / "checkpoint.pt")[0] == 3
    record = json.loads((snapshot / "bonefrac_train.json").read_text())
    extended = record["resumes"][-1]
    assert (extended["after_epoch"], extended["epochs"], extended["planned_before"]) == (2, 3, 2)
    assert extended["momentum_restarted"] and record["config"]["epochs"] == 3

    # Without a run folder or a snapshot there is nothing to resume: a clear error.
    empty = Yolo11TrainConfig(data=str(tiny_data), project=str(tmp_path / "none"), name="x")
    with pytest.raises(TrainError, match="nothing to resume"):
        train_yolo11(empty, resume=True)


def _assert_no_machine_paths(snapshot, *absolute_paths):
    for absolute in absolute_paths:
        leaks = [p.name for p in snapshot.iterdir() if str(absolute).encode() in p.read_bytes()]
        assert not leaks, f"{absolute} is in {leaks}"


def test_frcnn_snapshot_resumes_on_a_new_machine_and_scores_a_curve(
    tiny_data, tmp_path, monkeypatch
):
    """A Faster R-CNN run mirrors a compact snapshot (FP16 weights, no optimizer) every epoch;
    with its run folder gone, `python -m bonefrac.train.resume` goes on from it, and the curve
    scorer exports and scores it through the evaluator."""
    import torch

    from bonefrac.train import TrainError, snapshot_config
    from bonefrac.train import resume as resume_module
    from bonefrac.train.curve import (
        frcnn_checkpoint_epoch,
        read_curve,
        score_snapshot,
        snapshot_epoch,
    )
    from bonefrac.train.frcnn import FrcnnTrainConfig, save_snapshot, train_frcnn
    from bonefrac.train.resume import family, main
    from bonefrac.train.speed import best_precision

    snapshot = tmp_path / "snapshot"
    config = FrcnnTrainConfig(
        data=str(tiny_data),
        epochs=2,
        batch=2,
        negatives=0.5,
        min_size=128,
        max_size=160,
        roi_batch=64,
        rpn_proposals=300,
        project=str(tmp_path / "runs"),
        name="tiny",
        snapshot=str(snapshot),
    )
    train_frcnn(FrcnnTrainConfig(**{**config.__dict__, "epochs": 1}), progress=False)
    state = torch.load(snapshot / "checkpoint.pth", weights_only=True)
    last = torch.load(config.run_dir / "last.pth", weights_only=True)
    assert "optimizer" not in state and "optimizer" in last and state["epoch"] == 0
    assert {v.dtype for v in state["model"].values() if v.is_floating_point()} == {torch.float16}
    assert (snapshot / "checkpoint.pth").stat().st_size < (
        config.run_dir / "last.pth"
    ).stat().st_size / 2
    assert family(snapshot) == "frcnn" and _epochs_in(snapshot / "results.csv") == [1]

    # A new machine: only the snapshot is left. The record says what to resume with; the
    # resume goes to the 2 epochs asked for here.
    shutil.rmtree(tmp_path / "runs")
    record = json.loads((snapshot / "bonefrac_train.json").read_text())
    record["config"]["epochs"] = 2
    (snapshot / "bonefrac_train.json").write_text(json.dumps(record))
    # What may differ on another machine is given on the command line; the rest is refused.
    with pytest.raises(TrainError, match="no option colour"):
        snapshot_config(FrcnnTrainConfig, snapshot, colour="red")
    args = ["--device", "cpu", "--threads", "1", "--data", str(tiny_data)]
    assert main([str(snapshot), *args, "--precision", "float32"]) == 0
    assert _epochs_in(snapshot / "results.csv") == [1, 2]
    resumed = json.loads((config.run_dir / "bonefrac_train.json").read_text())["resumes"]
    assert resumed[-1]["after_epoch"] == 1 and resumed[-1]["momentum_restarted"] is True
    assert resumed[-1]["device"] == "cpu" and resumed[-1]["cpus"] >= 1
    assert resumed[-1]["precision"] == "float32"
    # auto: bfloat16 where this CPU has bfloat16 instructions, float32 where it has not
    asked = []
    monkeypatch.setattr(resume_module, "resume", lambda folder, **kw: asked.append(kw) or folder)
    assert main([str(snapshot), *args, "--precision", "auto"]) == 0
    assert asked[0]["precision"] == best_precision("cpu") and asked[0]["threads"] == 1
    assert best_precision("cuda") == "bfloat16"
    epoch, hours = frcnn_checkpoint_epoch(snapshot)
    assert epoch == 2 and hours > 0
    assert snapshot_epoch(snapshot) == 2  # what `curve --every N` watches

    point = score_snapshot(snapshot, data=str(tiny_data))
    # the curve's hours are rounded to 3.6 s (a fast machine trains these epochs in less)
    assert point.epoch == 2 and point.train_hours == round(hours, 3)
    assert read_curve(snapshot) == [point]
    assert 0.0 <= point.ap50 <= 1.0
    assert save_snapshot(config) == snapshot  # mirroring again replaces, it does not pile up
    assert sorted(p.name for p in snapshot.iterdir()) == [
        "bonefrac_train.json",
        "checkpoint.pth",
        "curve.csv",
        "curve.png",
        "results.csv",
    ]

    _goes_on_on_a_gpu_node(snapshot, record, tiny_data, tmp_path)
    _step_cost_is_measured(snapshot, tiny_data, tmp_path)


def _goes_on_on_a_gpu_node(snapshot, record, tiny_data, tmp_path):
    """The same snapshot goes on on a GPU node (here with the CPU standing in for CUDA): the
    script packs the advanced snapshot in parts that unpack into docs/train."""
    record["config"]["epochs"] = 3
    (snapshot / "bonefrac_train.json").write_text(json.dumps(record))
    out = tmp_path / "gpu-out"
    env = {**os.environ, "RESUME": str(snapshot), "FRCNN_DEVICE": "cpu", "FRCNN_WORKERS": "0"}
    env["WORK"] = str(tmp_path / "gpu-work")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # its python3
    script = ROOT / "train" / "gpu_run.sh"
    run = subprocess.run(
        ["bash", str(script), str(tiny_data), str(out), "300"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    parts = sorted(out.glob("snapshot.tar.part-*"))
    tar = b"".join(p.read_bytes() for p in parts)
    subprocess.run(["tar", "-x", "-C", str(unpacked)], input=tar, check=True)
    assert _epochs_in(unpacked / "snapshot" / "results.csv") == [1, 2, 3]
    assert _epochs_in(snapshot / "results.csv") == [1, 2]  # the committed copy is left alone


def _step_cost_is_measured(snapshot, tiny_data, tmp_path):
    """What a step of this run costs, measured with the run's own loader and step."""
    from bonefrac.train.speed import main as speed

    out = tmp_path / "speed.json"
    variants = "group:float32,batch:float32:channels_last"
    args = ["--data", str(tiny_data), "--frcnn", str(snapshot), "--out", str(out), "--batch", "2"]
    assert speed([*args, "--rounds", "2", "--variants", variants]) == 0
    steps = json.loads(out.read_text())["steps"]
    assert list(steps) == ["frcnn groupnorm float32", "frcnn batchnorm float32 channels_last"]
    assert all(len(row["samples"]) == 2 and row["s_per_image"] > 0 for row in steps.values())


def test_frcnn_time_budget_fits_the_epochs():
    from bonefrac.train.frcnn import fit_epochs

    assert fit_epochs(100.0, [10.0]) == 10  # as many as fit at the first epoch's pace
    assert fit_epochs(100.0, [30.0, 50.0]) == 2  # never fewer than those done
    assert fit_epochs(5.0, [10.0]) == 1
    with pytest.raises(ValueError):
        fit_epochs(100.0, [])


def test_step_cost_per_allocator(tiny_data, tmp_path):
    """train.speed --allocators: each allocator measured in fresh processes that really load it
    (make train preloads tcmalloc; make test installs it)."""
    from bonefrac.train.speed import allocator_library, current_allocator
    from bonefrac.train.speed import main as speed

    assert allocator_library("tcmalloc"), "make test installs libtcmalloc-minimal4"
    assert allocator_library("nonesuch") is None
    assert current_allocator() == "glibc"  # pytest runs without a preload
    out = tmp_path / "speed.json"
    args = ["--data", str(tiny_data), "--out", str(out), "--models", "yolo11n.yaml"]
    args += ["--sizes", "64", "--dtypes", "float32", "--batch", "2", "--rounds", "2"]
    assert speed([*args, "--allocators", "glibc,tcmalloc"]) == 0
    record = json.loads(out.read_text())
    steps = record["steps"]
    assert list(steps) == ["yolo11n 64px float32 glibc", "yolo11n 64px float32 tcmalloc"]
    assert all(len(row["samples"]) == 2 and row["s_per_image"] > 0 for row in steps.values())
    assert record["machine"]["allocator"] == "glibc,tcmalloc" and record["rounds"] == 2
    with pytest.raises(SystemExit, match="unknown allocator"):
        speed([*args, "--allocators", "glibc,nonesuch"])
