"""Metric code against known cases: perfect and empty predictions, a hand-worked FROC, AUROC by
brute force, and the COCO numbers against pycocotools run directly on exported files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bonefrac.dataset import Sample, make_protocol, to_coco
from bonefrac.detections import Detections
from bonefrac.metrics import ImageEval, auroc, coco_ap, froc, image_level, match_detections

NAMES = ("a", "b")


def _img(gt, gtc, det=(), scores=(), detc=()):
    return ImageEval(
        gt_boxes=np.array(gt, float).reshape(-1, 4),
        gt_classes=np.array(gtc, int),
        det_boxes=np.array(det, float).reshape(-1, 4),
        det_scores=np.array(scores, float),
        det_classes=np.array(detc, int),
    )


A, B, C = [0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 10, 10]
B_SHIFTED = [21, 21, 31, 31]  # IoU with B = 81 / 119 = 0.68


def _worked_example():
    img1 = _img(
        [A, B], [0, 0], [A, [50, 50, 60, 60], B, B_SHIFTED], [0.9, 0.8, 0.4, 0.3], [0, 0, 1, 0]
    )
    img2 = _img([C], [1], [C, C], [0.7, 0.6], [1, 1])
    return [img1, img2]


def test_froc_hand_worked_example():
    # Score order: .9 TP(A), .8 FP, .7 TP(C), .6 FP (C again), .4 FP (wrong class), .3 TP (B).
    # Two images, three boxes: (FP/img, sensitivity) = (0, 1/3) (.5, 1/3) (.5, 2/3) (1, 2/3)
    # (1.5, 2/3) (1.5, 1).
    result = froc(_worked_example())
    expected = {0.125: 1 / 3, 0.25: 1 / 3, 0.5: 2 / 3, 1.0: 2 / 3, 2.0: 1.0, 4.0: 1.0, 8.0: 1.0}
    assert result.at == pytest.approx(expected)
    assert result.mean == pytest.approx(5 / 7)
    assert result.num_gt == 3 and result.num_images == 2


def test_froc_agnostic_lets_any_class_find_a_box():
    images = [
        _img(
            i.gt_boxes,
            np.zeros_like(i.gt_classes),
            i.det_boxes,
            i.det_scores,
            np.zeros_like(i.det_classes),
        )
        for i in _worked_example()
    ]
    # Now .4 finds B and .3 is the duplicate: three found at 2 FP over 2 images.
    assert froc(images).at[1.0] == pytest.approx(1.0)


def test_each_detection_finds_at_most_one_box_and_each_box_once():
    image = _img([A, [1, 1, 11, 11]], [0, 0], [A, A], [0.9, 0.8], [0, 0])
    assert match_detections(image).tolist() == [True, True]  # second A finds the other box
    image = _img([A], [0], [A, A], [0.9, 0.8], [0, 0])
    assert match_detections(image).tolist() == [True, False]


def _coco_gt(images) -> dict:
    samples = [
        Sample(
            image=Path(f"{k}.jpg"),
            height=100,
            width=100,
            boxes=i.gt_boxes.astype(np.float32),
            class_ids=i.gt_classes,
        )
        for k, i in enumerate(images)
    ]
    return to_coco(samples, make_protocol("7class", NAMES), NAMES)


def test_perfect_predictions():
    images = [
        _img([A], [0], [A], [1.0], [0]),
        _img([B, C], [1, 0], [B, C], [0.9, 0.8], [1, 0]),
        _img([], []),
    ]
    coco = coco_ap(_coco_gt(images), images, NAMES)
    assert coco.ap50_95 == pytest.approx(1.0) and coco.ap50 == pytest.approx(1.0)
    assert coco.per_class_ap == {"a": pytest.approx(1.0), "b": pytest.approx(1.0)}
    assert froc(images).mean == pytest.approx(1.0)
    level = image_level(images, threshold=0.5)
    assert level.auroc == 1.0 and level.sensitivity == 1.0 and level.specificity == 1.0


def test_empty_predictions():
    images = [_img([A], [0]), _img([B], [1]), _img([], [])]
    coco = coco_ap(_coco_gt(images), images, NAMES)
    assert coco.ap50_95 == 0.0 and coco.ap50 == 0.0
    assert froc(images).mean == 0.0
    assert image_level(images, threshold=0.5).sensitivity == 0.0


def test_auroc_matches_brute_force_and_ties():
    assert auroc([0.9, 0.8, 0.3, 0.1], [1, 0, 1, 0]) == pytest.approx(0.75)
    assert auroc([0.5, 0.5], [1, 0]) == pytest.approx(0.5)
    rng = np.random.default_rng(0)
    s = np.round(rng.random(200), 1)  # many ties
    y = rng.random(200) < 0.4
    pairs = [(1.0 if p > n else 0.5 if p == n else 0.0) for p in s[y] for n in s[~y]]
    assert auroc(s, y) == pytest.approx(np.mean(pairs))
    assert np.isnan(auroc([0.1, 0.2], [1, 1]))


def test_coco_numbers_equal_pycocotools_on_exported_files(tmp_path, data_dir):
    """Our conversion + evaluation vs pycocotools fed the COCO files directly."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from bonefrac.client.evaluate import score
    from bonefrac.dataset import YoloDataset

    dataset = YoloDataset.from_yaml(data_dir / "data.yaml")
    samples = list(dataset.samples("valid"))[:80]
    protocol = make_protocol("6class", dataset.names)
    rng = np.random.default_rng(1)
    detections = []
    for s in samples:  # noisy copies of the truth plus random boxes: AP strictly between 0 and 1
        boxes = s.boxes + rng.normal(0, 6, s.boxes.shape).astype(np.float32)
        extra = rng.uniform(0, 300, (3, 2))
        boxes = np.concatenate([boxes, np.c_[extra, extra + 60]]).astype(np.float32)
        cls = np.r_[s.class_ids, rng.integers(0, 7, 3)]
        detections.append(
            Detections.from_arrays(
                xyxy=boxes,
                scores=rng.random(len(boxes)),
                class_ids=cls,
                names=dataset.names,
                image_size=(s.height, s.width),
            )
        )
    ours = score(
        samples, detections, protocol=protocol, dataset_names=dataset.names, operating_threshold=0.5
    )

    gt_path, dt_path = tmp_path / "gt.json", tmp_path / "dt.json"
    gt_path.write_text(json.dumps(to_coco(samples, protocol, dataset.names)))
    mapped = [protocol.map_names(d.class_names) for d in detections]
    dt_path.write_text(
        json.dumps(
            [
                {
                    "image_id": i + 1,
                    "category_id": int(c) + 1,
                    "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])],
                    "score": float(s),
                }
                for i, (d, cats) in enumerate(zip(detections, mapped))
                for b, s, c in zip(d.xyxy, d.scores, cats)
            ]
        )
    )
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
        ev = COCOeval(gt, gt.loadRes(str(dt_path)), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert 0.05 < ours["ap50"] < 0.99
    assert ours["ap50_95"] == pytest.approx(ev.stats[0], abs=1e-9)
    assert ours["ap50"] == pytest.approx(ev.stats[1], abs=1e-9)
    assert ours["ap75"] == pytest.approx(ev.stats[2], abs=1e-9)
