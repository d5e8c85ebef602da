"""Detection metrics: COCO AP (pycocotools), FROC, and image-level AUROC / sensitivity /
specificity. Pure numpy apart from pycocotools.

Boxes are ``(n, 4)`` xyxy pixels; class ids are protocol class ids (0-based).
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: False positives per image at which FROC sensitivity is reported.
FROC_FP_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)

FROC_CRITERION = (
    "A ground-truth box is found when a detection of the same class (any class under the "
    "'agnostic' protocol) overlaps it with IoU >= {iou}; detections are matched greedily in "
    "descending score order, each detection finding at most one box and each box found at most "
    "once; every other detection is a false positive. Sensitivity at F false positives per image "
    "is the highest sensitivity reached at a score threshold whose false positives per image do "
    "not exceed F."
)


@dataclass(frozen=True)
class ImageEval:
    """Ground truth and detections of one image, in protocol class ids.

    Attributes:
        gt_boxes: ``(n, 4)`` xyxy pixels.
        gt_classes: ``(n,)`` int.
        det_boxes: ``(m, 4)`` xyxy pixels.
        det_scores: ``(m,)`` float.
        det_classes: ``(m,)`` int.
    """

    gt_boxes: np.ndarray
    gt_classes: np.ndarray
    det_boxes: np.ndarray
    det_scores: np.ndarray
    det_classes: np.ndarray


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of ``(n, 4)`` and ``(m, 4)`` xyxy boxes -> ``(n, m)``."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def match_detections(image: ImageEval, *, iou_threshold: float = 0.5) -> np.ndarray:
    """Greedy matching in descending score order.

    Returns:
        ``(m,)`` bool, True where the detection found a ground-truth box not found before.
    """
    m = image.det_scores.shape[0]
    found = np.zeros(m, dtype=bool)
    if m == 0 or image.gt_boxes.shape[0] == 0:
        return found
    ious = iou_matrix(image.det_boxes, image.gt_boxes)
    ious[image.det_classes[:, None] != image.gt_classes[None, :]] = -1.0
    taken = np.zeros(image.gt_boxes.shape[0], dtype=bool)
    for d in np.argsort(-image.det_scores, kind="stable"):
        candidates = np.where(taken, -1.0, ious[d])
        g = int(np.argmax(candidates))
        if candidates[g] >= iou_threshold:
            taken[g] = True
            found[d] = True
    return found


@dataclass(frozen=True)
class Froc:
    """A FROC curve.

    Attributes:
        fp_per_image: ``(k,)`` false positives per image at each distinct score threshold.
        sensitivity: ``(k,)`` fraction of ground-truth boxes found at that threshold.
        thresholds: ``(k,)`` the score thresholds, descending.
        at: FP rate -> sensitivity at :data:`FROC_FP_RATES`.
        mean: mean of ``at`` (the competition performance metric).
        num_gt: ground-truth boxes.
        num_images: images.
    """

    fp_per_image: np.ndarray
    sensitivity: np.ndarray
    thresholds: np.ndarray
    at: dict[float, float]
    mean: float
    num_gt: int
    num_images: int


def threshold_at(curve: Froc, rate: float) -> float | None:
    """The lowest score threshold at which ``curve`` stays within ``rate`` false positives per
    image (the operating point of its sensitivity there); None when no threshold does."""
    ok = curve.fp_per_image <= rate + 1e-12
    if not ok.any() or not np.isfinite(curve.thresholds[ok][-1]):
        return None
    return float(curve.thresholds[ok][-1])


def froc(
    images: Sequence[ImageEval],
    *,
    iou_threshold: float = 0.5,
    fp_rates: Sequence[float] = FROC_FP_RATES,
) -> Froc:
    """FROC over a set of images (see :data:`FROC_CRITERION`)."""
    scores, hits = [], []
    num_gt = 0
    for image in images:
        num_gt += int(image.gt_boxes.shape[0])
        scores.append(np.asarray(image.det_scores, np.float64))
        hits.append(match_detections(image, iou_threshold=iou_threshold))
    n_images = max(len(images), 1)
    s = np.concatenate(scores) if scores else np.zeros(0)
    h = np.concatenate(hits) if hits else np.zeros(0, bool)
    order = np.argsort(-s, kind="stable")
    s, h = s[order], h[order]
    tp = np.cumsum(h)
    fp = np.cumsum(~h)
    # Keep the last position of each distinct score: a threshold takes all equal scores at once.
    last = np.r_[s[1:] != s[:-1], True] if s.size else np.zeros(0, bool)
    fppi = np.r_[0.0, fp[last] / n_images]
    sens = np.r_[0.0, tp[last] / num_gt if num_gt else np.zeros(int(last.sum()))]
    thresholds = np.r_[np.inf, s[last]]
    at = {}
    for rate in fp_rates:
        ok = fppi <= rate + 1e-12
        at[float(rate)] = float(sens[ok].max()) if ok.any() else 0.0
    return Froc(
        fp_per_image=fppi,
        sensitivity=sens,
        thresholds=thresholds,
        at=at,
        mean=float(np.mean(list(at.values()))) if at else 0.0,
        num_gt=num_gt,
        num_images=len(images),
    )


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties count half); NaN with one class only."""
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels, bool)
    pos, neg = s[y], s[~y]
    if pos.size == 0 or neg.size == 0:
        return math.nan
    ranks = _average_ranks(np.r_[pos, neg])
    u = ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2
    return float(u / (pos.size * neg.size))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank."""
    order = np.argsort(x, kind="mergesort")
    _, first, counts = np.unique(x[order], return_index=True, return_counts=True)
    ranks = np.empty(x.shape[0], dtype=np.float64)
    ranks[order] = np.repeat(first + (counts + 1) / 2.0, counts)
    return ranks


@dataclass(frozen=True)
class ImageLevel:
    """Image-level "fracture present" scoring from each image's top detection score."""

    auroc: float
    threshold: float
    sensitivity: float
    specificity: float
    positives: int
    negatives: int


def image_level(images: Sequence[ImageEval], *, threshold: float) -> ImageLevel:
    top = np.array([float(i.det_scores.max()) if i.det_scores.size else 0.0 for i in images])
    truth = np.array([i.gt_boxes.shape[0] > 0 for i in images])
    predicted = top >= threshold
    pos, neg = int(truth.sum()), int((~truth).sum())
    return ImageLevel(
        auroc=auroc(top, truth),
        threshold=threshold,
        sensitivity=float((predicted & truth).sum() / pos) if pos else math.nan,
        specificity=float((~predicted & ~truth).sum() / neg) if neg else math.nan,
        positives=pos,
        negatives=neg,
    )


@dataclass(frozen=True)
class CocoResult:
    """COCO box AP (pycocotools, 100 detections per image).

    Attributes:
        ap50_95, ap50, ap75: the COCO summary numbers.
        per_class_ap: class name -> AP50-95 (None when the class has no ground truth).
        per_class_ap50: class name -> AP50 (None when the class has no ground truth).
        pr_curves: class name -> ``(101,)`` precision at recall 0, 0.01, ... 1 at IoU 0.5
            (-1 where undefined).
    """

    ap50_95: float
    ap50: float
    ap75: float
    per_class_ap: dict[str, float | None]
    per_class_ap50: dict[str, float | None]
    pr_curves: dict[str, np.ndarray]


def coco_ap(gt: dict, images: Sequence[ImageEval], class_names: Sequence[str]) -> CocoResult:
    """COCO AP of detections against COCO ground truth ``gt`` (as :func:`bonefrac.dataset.to_coco`
    builds it: image ids are 1-based indices into ``images``, category ids 1-based)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    results = []
    for image_id, image in enumerate(images, start=1):
        for box, score, cls in zip(image.det_boxes, image.det_scores, image.det_classes):
            x1, y1, x2, y2 = (float(v) for v in box)
            results.append(
                {
                    "image_id": image_id,
                    "category_id": int(cls) + 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": float(score),
                }
            )
    empty = {n: None for n in class_names}
    if not results or not gt["annotations"]:
        zeros = {n: (0.0 if _has_gt(gt, i) else None) for i, n in enumerate(class_names)}
        curves = {n: np.full(101, -1.0) for n in class_names}
        return CocoResult(0.0, 0.0, 0.0, zeros or empty, dict(zeros), curves)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = {**gt, "info": {}, "licenses": []}
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(results)
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    precision = ev.eval["precision"]  # [iou, recall, class, area, maxdets]
    per_class, per_class50, curves = {}, {}, {}
    for k, name in enumerate(class_names):
        p = precision[:, :, k, 0, -1]
        per_class[name] = float(p[p > -1].mean()) if (p > -1).any() else None
        p50 = precision[0, :, k, 0, -1]
        per_class50[name] = float(p50[p50 > -1].mean()) if (p50 > -1).any() else None
        curves[name] = p50.copy()
    stats = [max(float(v), 0.0) for v in ev.stats[:3]]
    return CocoResult(stats[0], stats[1], stats[2], per_class, per_class50, curves)


def _has_gt(gt: dict, k: int) -> bool:
    return any(a["category_id"] == k + 1 for a in gt["annotations"])
