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
