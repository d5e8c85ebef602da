"""The evaluator through a real tritonserver: served and in-process scores agree, the CLI writes
its JSON and plots, and the cache is reused and invalidated by content."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys

import pytest

from bonefrac.client.evaluate import evaluate, in_process_model, served_model

pytestmark = pytest.mark.server

KEYS = {
    "ap50_95",
    "ap50",
    "ap75",
    "per_class_ap",
    "froc",
    "sens_at_1fp",
    "image_auroc",
    "model",
    "data",
    "protocol",
}


@pytest.fixture(scope="module")
def small_data(data_dir, tmp_path_factory):
    """A 24-image copy of the valid split (half with fractures), so a full split is quick."""
    root = tmp_path_factory.mktemp("small")
    images = sorted((data_dir / "valid" / "images").glob("*.jpg"))
    with_labels = [
        p for p in images if (data_dir / "valid" / "labels" / f"{p.stem}.txt").stat().st_size
    ]
    without = [p for p in images if p not in with_labels]
    for sub in ("images", "labels"):
        (root / "valid" / sub).mkdir(parents=True)
    for p in with_labels[::10][:12] + without[::10][:12]:
        shutil.copy(p, root / "valid" / "images" / p.name)
        shutil.copy(data_dir / "valid" / "labels" / f"{p.stem}.txt", root / "valid" / "labels")
    (root / "data.yaml").write_text((data_dir / "data.yaml").read_text())
    return root / "data.yaml"


def test_served_and_in_process_scores_agree(triton, repository, small_data, tmp_path):
    served = evaluate(
        served_model(triton.grpc_url, "yolo11"),
        data=small_data,
        protocol="6class",
        cache_dir=None,
        progress=False,
    )
    local = evaluate(
        in_process_model(repository, "yolo11"),
        data=small_data,
        protocol="6class",
        cache_dir=None,
        progress=False,
    )
    assert set(served) >= KEYS
    assert served["counts"] == local["counts"] and served["counts"]["images"] == 24
    assert served["counts"]["detections"] > 0
    for key in ("ap50_95", "ap50", "ap75"):
        assert abs(served[key] - local[key]) <= 0.002
    assert served["froc"] == pytest.approx(local["froc"], abs=1e-9)
    assert served["model"]["sha256"] == local["model"]["sha256"] != ""
    assert set(served["froc"]) == {"0.125", "0.25", "0.5", "1", "2", "4", "8"}


def test_cache_is_reused_and_invalidated(triton, small_data, tmp_path):
    model = served_model(triton.grpc_url, "yolo11")
    first = evaluate(model, data=small_data, cache_dir=tmp_path, progress=False)
    again = evaluate(model, data=small_data, cache_dir=tmp_path, progress=False)
    assert not first["cache"]["hit"] and again["cache"]["hit"]
    assert again["ap50"] == first["ap50"]
    changed = dataclasses.replace(model, content_sha256="0" * 64)
    assert not evaluate(changed, data=small_data, cache_dir=tmp_path, progress=False)["cache"][
        "hit"
    ]
    other_protocol = evaluate(
        model, data=small_data, protocol="agnostic", cache_dir=tmp_path, progress=False
    )
    assert not other_protocol["cache"]["hit"]
    # A changed dataset (one label edited) is a different entry too.
    label = next((small_data.parent / "valid" / "labels").glob("*.txt"))
    label.write_text(label.read_text() + "0 0.5 0.5 0.1 0.1\n")
    assert not evaluate(model, data=small_data, cache_dir=tmp_path, progress=False)["cache"]["hit"]


def test_cache_key_is_the_iou_the_model_applies(triton, repository, small_data, tmp_path):
    """The evaluator sends no IoU, so the model's own default applies: two repositories with the
    same ONNX file and different default IoUs give different reports and cache entries."""
    from bonefrac.export.repository import write_repository
    from bonefrac.pipeline import read_repository_model

    found = read_repository_model(repository, "yolo11")
    assert served_model(triton.grpc_url, "yolo11").iou_threshold == found.spec.iou_threshold
    same, tighter = tmp_path / "same", tmp_path / "tighter"
    write_repository(found.spec, found.onnx_path, same)
    write_repository(dataclasses.replace(found.spec, iou_threshold=0.3), found.onnx_path, tighter)
    cache = tmp_path / "cache"
    first = evaluate(
        in_process_model(same, "yolo11"), data=small_data, cache_dir=cache, progress=False
    )
    other = evaluate(
        in_process_model(tighter, "yolo11"), data=small_data, cache_dir=cache, progress=False
    )
    assert first["model"]["sha256"] == other["model"]["sha256"]
    assert not other["cache"]["hit"] and other["cache"]["key"] != first["cache"]["key"]
    assert 0 < other["counts"]["detections"] < first["counts"]["detections"]


def test_eval_cli_writes_json_and_plots(triton, small_data, tmp_path):
    out = tmp_path / "report.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bonefrac.cli",
            "eval",
            "--data",
            str(small_data),
            "--server",
            triton.grpc_url,
            "--model",
            "yolo11",
            "--protocol",
            "6class",
            "--json",
            str(out),
            "--plots",
            str(tmp_path / "plots"),
            "--no-cache",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "AP50-95" in result.stdout and "FROC" in result.stdout
    report = json.loads(out.read_text())
    assert set(report) >= KEYS
    for png in ("froc.png", "pr.png"):
        assert (tmp_path / "plots" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_model_card_is_generated_from_the_report(repository, small_data, tmp_path):
    from bonefrac.train.model_card import card

    report = evaluate(
        in_process_model(repository, "yolo11"),
        data=small_data,
        protocol="6class",
        cache_dir=None,
        progress=False,
    )
    onnx = repository / "yolo11_detector" / "1" / "model.onnx"
    text = card(
        title="YOLO11n",
        model="yolo11",
        architecture="YOLO11n",
        training={
            "config": {"imgsz": 320, "epochs": 30, "batch": 16, "seed": 0},
            "epochs_done": 3,
            "class_names": ["a"],
        },
        report=report,
        artifact=onnx,
        notes=["small"],
    )
    assert f"{report['ap50_95']:.4f}" in text and f"{report['ap50']:.4f}" in text
    assert "Research use only" in text and "CC BY 4.0" in text and "3 of 30" in text
    for name in report["per_class_ap"]:
        assert f"| {name} |" in text


def test_committed_models_doc_is_what_the_generator_writes(monkeypatch):
    """docs/MODELS.md comes from the committed eval report, training records and notes: no
    number in it is typed by hand (regenerate: python -m bonefrac.train.model_card
    --models-doc docs/MODELS.md)."""
    from bonefrac.train.model_card import models_doc

    from .conftest import ROOT

    monkeypatch.chdir(ROOT)
    expected = models_doc(ROOT / "docs" / "train" / "cards.json")
    assert (ROOT / "docs" / "MODELS.md").read_text() == expected


def test_readme_model_numbers_are_what_the_generator_writes(monkeypatch):
    """README.md's paragraph on the bundled models comes from the same records as the cards
    (regenerate: python -m bonefrac.train.model_card --readme README.md)."""
    import json

    from bonefrac.train.model_card import readme_models, with_readme_models

    from .conftest import ROOT

    monkeypatch.chdir(ROOT)
    cards = ROOT / "docs" / "train" / "cards.json"
    report = json.loads((ROOT / "docs" / "eval" / "valid_6class.json").read_text())
    paragraph = readme_models(cards)
    assert all(f"AP50 {r['ap50']:.3f}" in paragraph for r in report)  # numbers from the record
    readme = (ROOT / "README.md").read_text()
    assert paragraph in readme
    assert readme == with_readme_models(readme, cards)
