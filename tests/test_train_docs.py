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


def test_plateau_takes_the_last_three_evaluations_ten_percent_apart():
    """Issue #13's rule for a curve that has flattened: the last three evaluations, each after at
    least 10 % more epochs than the one before, within 0.005 AP50."""
    from bonefrac.train.curve import CurvePoint, plateau

    def curve(ap50_by_epoch):
        return [
            CurvePoint(e, e * 0.4, ap, ap / 3, ap * 2, "2026-12-07T00:00:00Z")
            for e, ap in ap50_by_epoch.items()
        ]

    flat = plateau(curve({e: 0.05 + 0.001 * (e % 3) for e in range(10, 25)}))
    assert [p.epoch for p in flat.points] == [19, 21, 24]  # 22 * 1.1 > 24; 20 * 1.1 > 21
    assert flat.flat and abs(flat.spread - 0.001) < 1e-9  # 0.051, 0.050, 0.050
    assert "flattened" in flat.sentence() and "19, 21, 24" in flat.sentence()

    rising = plateau(curve({10: 0.02, 12: 0.03, 14: 0.04, 16: 0.05}))
    assert [p.epoch for p in rising.points] == [12, 14, 16] and not rising.flat
    assert "still moving" in rising.sentence()

    short = plateau(curve({5: 0.05, 6: 0.05}))  # 6 / 5 = 1.2 but only two points
    assert not short.flat and "too few" in short.sentence()
    assert plateau([]) is None


def test_cards_say_how_far_each_model_is_from_the_published_one():
    from bonefrac.train.model_card import distance_note

    report = {"ap50": 0.0542, "sens_at_1fp": 0.13}
    ref = {"name": "Faster R-CNN", "ap50": 0.271, "sens_at_1fp": 0.471}
    text = distance_note(report, ref, DOCS / "frcnn-mnv3-512-gn")
    assert "AP50 0.0542 is 20% of its 0.271" in text
    assert "learning curve:" in text and "frcnn-mnv3-512-gn/curve.csv" in text
