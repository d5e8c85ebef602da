"""docs/train/README.md is what its generator writes from the committed training records."""

from __future__ import annotations

from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs" / "train"


def test_training_readme_matches_its_records():
    from bonefrac.train.report import render

    text = render(DOCS)
    assert "| yolo11n-320 |" in text  # a run was read from its records
    assert (DOCS / "README.md").read_text() == text, (
        "docs/train/README.md is stale: run python -m bonefrac.train.report --docs docs/train"
    )


def test_equal_time_budget_uses_the_whole_run_time_across_resumes():
    from bonefrac.train.curve import cumulative_seconds
    from bonefrac.train.report import map50_by

    # a run resumed after its second epoch: Ultralytics' clock restarts at 0
    hours = [s / 3600 for s in cumulative_seconds([1800.0, 3600.0, 1800.0, 3600.0])]
    assert hours == [0.5, 1.0, 1.5, 2.0]
    run = {"hours": hours, "map50": [0.01, 0.03, 0.02, 0.05]}
    assert map50_by(run, 1.0) == 0.03 and map50_by(run, 2.0) == 0.05
    assert map50_by(run, 4.0) is None
    assert map50_by(run, 0.25) is None  # no epoch had ended yet


def test_a_card_pinned_to_an_epoch_leaves_out_what_came_after(tmp_path):
    """A model shipped from the middle of a run that went on: its card counts the epochs, time
    and resumes up to that epoch only, and says which device ran which epochs."""
    import json

    from bonefrac.train.model_card import training_record

    record = {
        "config": {"arch": "mobilenet_v3_fpn", "epochs": 24, "device": "cpu"},
        "machine": {"platform": "Linux", "cpus": 2, "device": "cpu"},
        "resumes": [
            {"after_epoch": 4, "epochs": 24, "planned_before": 24, "device": "cuda: H200"},
            {"after_epoch": 12, "epochs": 24, "planned_before": 24, "device": "cpu"},
            {
                "after_epoch": 17,
                "epochs": 24,
                "planned_before": 24,
                "device": "cpu",
                "precision": "bfloat16",  # a resume on a CPU that runs bfloat16 fast
            },
        ],
    }
    (tmp_path / "bonefrac_train.json").write_text(json.dumps(record))
    rows = ["epoch,epoch_s"] + [f"{e},{1800 if e <= 12 else 3600}" for e in range(1, 20)]
    (tmp_path / "results.csv").write_text("\n".join(rows) + "\n")
    pinned = training_record(tmp_path, epoch=17)
    assert pinned["epochs_done"] == 17
    assert pinned["wall_time"].startswith("11.00 h for 17 epochs")  # 12 x 0.5 h + 5 x 1 h
    assert (
        "after epoch 17" in pinned["wall_time"]
        and "resumed after epoch 17" not in (pinned["wall_time"])
    )
    by = "epochs 1-4: 2-core CPU; 5-12: cuda: H200; 13-17: 2-core CPU"
    assert by in pinned["machine"]
    whole = training_record(tmp_path)
    assert whole["epochs_done"] == 19
    assert "13-17: 2-core CPU; 18-19: 2-core CPU, bfloat16" in whole["machine"]
