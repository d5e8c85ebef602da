"""Score a detector on a labelled dataset: through a served ensemble, or in-process.

Every image of the split goes through the same pipeline users get (encoded bytes in, detections
in original pixels out). Results are cached by model content, dataset content, protocol and
thresholds, so reports and the UI can reuse them at once.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bonefrac.dataset import Protocol, Sample, YoloDataset, make_protocol, to_coco
from bonefrac.detections import Detections
from bonefrac.errors import BonefracError
from bonefrac.metrics import (
    FROC_CRITERION,
    ImageEval,
    coco_ap,
    froc,
    image_level,
    threshold_at,
)

#: Scores below this are not needed for AP; the COCO convention for evaluation.
EVAL_CONF_THRESHOLD = 0.001

DetectFn = Callable[[bytes], Detections]


class EvaluationError(BonefracError):
    """An image of the dataset could not be scored; the message names it."""


@dataclass(frozen=True)
class ModelUnderTest:
    """A detector to score.

    Attributes:
        name: the model's name (the ensemble's name when served).
        detect: encoded bytes -> detections, at the evaluation threshold.
        content_sha256: SHA-256 of the model's ONNX file ("" when unknown: nothing is cached).
        source: where it ran, e.g. ``"triton grpc://127.0.0.1:8001"`` or ``"in-process"``.
        iou_threshold: the NMS IoU its detections come with (the model spec's default, which
            ``detect`` does not override); part of the cache key. None when unknown.
    """

    name: str
    detect: DetectFn
    content_sha256: str
    source: str
    iou_threshold: float | None = None


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "bonefrac" / "eval"


#: Bumped when the report gains or changes fields, so older cached reports are not reused.
REPORT_VERSION = 2


def cache_key(
    *,
    model_sha256: str,
    data_sha256: str,
    split: str,
    protocol: str,
    conf: float,
    iou: float | None,
    operating_threshold: float,
) -> str:
    text = json.dumps(
        [REPORT_VERSION, model_sha256, data_sha256, split, protocol, conf, iou, operating_threshold]
    )
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def run_detections(
    samples: Sequence[Sample],
    detect: DetectFn,
    *,
    concurrency: int = 4,
    progress: bool = True,
    desc: str = "eval",
) -> list[Detections]:
    """Detect on every sample's image, ``concurrency`` at a time, with a progress bar.

    Raises:
        EvaluationError: for the first image that fails, naming it.
    """
    from tqdm import tqdm

    def one(sample: Sample) -> Detections:
        try:
            return detect(sample.image.read_bytes())
        except Exception as exc:
            raise EvaluationError(f"{sample.image}: {exc}") from exc

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        results = list(
            tqdm(
                pool.map(one, samples),
                total=len(samples),
                desc=desc,
                unit="img",
                disable=not progress,
            )
        )
    return results


def to_image_evals(
    samples: Sequence[Sample],
    detections: Sequence[Detections],
    protocol: Protocol,
    dataset_names: Sequence[str],
) -> list[ImageEval]:
    """Ground truth and detections of each image, both in protocol class ids (detections are
    mapped by class name, so a model may order its classes differently from the dataset)."""
    out = []
    for sample, det in zip(samples, detections):
        gt_classes = protocol.map_names([dataset_names[c] for c in sample.class_ids])
        names = det.class_names or tuple(dataset_names[c] for c in det.class_ids)
        out.append(
            ImageEval(
                gt_boxes=sample.boxes.astype(np.float64),
                gt_classes=gt_classes,
                det_boxes=det.xyxy.astype(np.float64),
                det_scores=det.scores.astype(np.float64),
                det_classes=protocol.map_names(names),
            )
        )
    return out


def score(
    samples: Sequence[Sample],
    detections: Sequence[Detections],
    *,
    protocol: Protocol,
    dataset_names: Sequence[str],
    operating_threshold: float,
    iou_match: float = 0.5,
) -> dict[str, Any]:
    """All metrics of a set of detections (JSON-ready)."""
    images = to_image_evals(samples, detections, protocol, dataset_names)
    coco = coco_ap(to_coco(samples, protocol, dataset_names), images, protocol.names)
    curve = froc(images, iou_threshold=iou_match)
    level = image_level(images, threshold=operating_threshold)
    return {
        "ap50_95": coco.ap50_95,
        "ap50": coco.ap50,
        "ap75": coco.ap75,
        "per_class_ap": coco.per_class_ap,
        "per_class_ap50": coco.per_class_ap50,
        "froc": {_rate_key(k): v for k, v in curve.at.items()},
        "froc_mean": curve.mean,
        "sens_at_1fp": curve.at[1.0],
        "froc_thresholds": {_rate_key(k): threshold_at(curve, k) for k in curve.at},
        "image_auroc": _finite(level.auroc),
        "image_sensitivity": _finite(level.sensitivity),
        "image_specificity": _finite(level.specificity),
        "operating_threshold": operating_threshold,
        "froc_criterion": FROC_CRITERION.format(iou=iou_match),
        "counts": {
            "images": len(samples),
            "images_with_fracture": level.positives,
            "images_without_fracture": level.negatives,
            "objects": curve.num_gt,
            "detections": int(sum(len(d) for d in detections)),
        },
        "curves": {
            "froc": {
                "fp_per_image": _rounded(curve.fp_per_image),
                "sensitivity": _rounded(curve.sensitivity),
            },
            "pr50": {name: _rounded(p) for name, p in coco.pr_curves.items()},
        },
    }


def _rate_key(rate: float) -> str:
    return f"{rate:g}"


def _finite(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def _rounded(values: np.ndarray, *, limit: int = 2000) -> list[float]:
    values = np.asarray(values, dtype=np.float64)
    if values.size > limit:  # keep the JSON small; the curve's shape survives
        values = values[np.linspace(0, values.size - 1, limit).astype(int)]
    return [round(float(v), 5) for v in values]


def evaluate(
    model: ModelUnderTest,
    *,
    data: str | os.PathLike[str],
    split: str = "valid",
    protocol: str = "6class",
    operating_threshold: float = 0.25,
    conf_threshold: float = EVAL_CONF_THRESHOLD,
    concurrency: int = 4,
    cache_dir: Path | None = None,
    progress: bool = True,
    limit: int | None = None,
) -> dict[str, Any]:
    """Evaluate one model; returns the JSON-ready report (from the cache when it is there).

    Args:
        model: the detector.
        data: the dataset's ``data.yaml``.
        split: the split to score (``valid``).
        protocol: ``7class``, ``6class`` or ``agnostic``.
        operating_threshold: score at which an image counts as "fracture suspected".
        conf_threshold: score floor of the detections collected for AP and FROC.
        concurrency: requests in flight.
        cache_dir: where cached reports live (None: no cache).
        progress: show a progress bar.
        limit: score only the first N images (for smoke runs; never cached).

    Raises:
        DatasetError: dataset problems, naming the file.
        EvaluationError: an image failed, naming it.
    """
    dataset = YoloDataset.from_yaml(data)
    proto = make_protocol(protocol, dataset.names)
    data_sha = dataset.content_hash(split)
    key = cache_key(
        model_sha256=model.content_sha256,
        data_sha256=data_sha,
        split=split,
        protocol=protocol,
        conf=conf_threshold,
        iou=model.iou_threshold,
        operating_threshold=operating_threshold,
    )
    cacheable = bool(model.content_sha256) and cache_dir is not None and limit is None
    cached = Path(cache_dir) / f"{key}.json" if cacheable else None
    if cached is not None and cached.is_file():
        report = json.loads(cached.read_text())
        report["cache"] = {"hit": True, "key": key, "path": _home_relative(cached)}
        return report

    samples = list(dataset.samples(split))[:limit]
    started = time.perf_counter()
    detections = run_detections(
        samples, model.detect, concurrency=concurrency, progress=progress, desc=f"eval {model.name}"
    )
    run = {"elapsed_s": time.perf_counter() - started, "concurrency": concurrency}
    report = {
        "model": {"name": model.name, "sha256": model.content_sha256, "source": model.source},
        "data": {
            "yaml": str(data),
            "split": split,
            "sha256": data_sha,
            "images": len(samples),
            "limit": limit,
        },
        "protocol": {"name": proto.name, "classes": list(proto.names)},
        "conf_threshold": conf_threshold,
        **score(
            samples,
            detections,
            protocol=proto,
            dataset_names=dataset.names,
            operating_threshold=operating_threshold,
        ),
        "run": _run_record(len(samples), **run),
    }
    if cached is not None:
        _write_atomically(cached, report)
    report["cache"] = {"hit": False, "key": key, "path": _home_relative(cached)}
    return report


def _run_record(images: int, *, elapsed_s: float, concurrency: int) -> dict[str, Any]:
    return {
        "elapsed_s": round(elapsed_s, 2),
        "images_per_s": round(images / elapsed_s, 2),
        "concurrency": concurrency,
        "machine": platform.platform(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _home_relative(path: Path | None) -> str | None:
    """The cache file as ``~/...``: reports are committed, this machine's home is not."""
    if path is None:
        return None
    home = Path.home()
    path = Path(path)
    return f"~/{path.relative_to(home)}" if path.is_relative_to(home) else str(path)


def _write_atomically(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=1) + "\n")
    tmp.replace(path)


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


def served_model(
    server: str, name: str, *, conf_threshold: float = EVAL_CONF_THRESHOLD, timeout_s: float = 120.0
) -> ModelUnderTest:
    """A model served by Triton; its content hash comes from the ensemble's config."""
    from bonefrac.client import connect
    from bonefrac.spec import spec_from_json

    client = connect(server, model=name, timeout_s=timeout_s)
    parameters = client.model_parameters()
    spec = spec_from_json(parameters["spec"]) if "spec" in parameters else None
    return ModelUnderTest(
        name=name,
        content_sha256=parameters.get("model_sha256", ""),
        source=f"triton grpc://{server}",
        iou_threshold=spec.iou_threshold if spec is not None else None,
        detect=lambda data: client.detect(data, conf_threshold=conf_threshold),
    )


def in_process_model(
    repository: str | os.PathLike[str], name: str, *, conf_threshold: float = EVAL_CONF_THRESHOLD
) -> ModelUnderTest:
    """The same pipeline in this process; its content hash is the ONNX file's."""
    from bonefrac.pipeline import InProcessPipeline
    from bonefrac.runtime import file_sha256

    pipeline = InProcessPipeline(repository, name)
    return ModelUnderTest(
        name=name,
        content_sha256=file_sha256(pipeline.onnx_path),
        source="in-process",
        iou_threshold=pipeline.spec.iou_threshold,
        detect=lambda data: pipeline.detect(data, conf_threshold=conf_threshold),
    )


# --------------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------------


def plot_froc(reports: Sequence[dict[str, Any]], path: str | os.PathLike[str]) -> Path:
    """FROC curves of several models on one log-x axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5), dpi=120)
    for r in reports:
        c = r["curves"]["froc"]
        fppi, sens = np.array(c["fp_per_image"]), np.array(c["sensitivity"])
        keep = fppi > 0
        label = f"{r['model']['name']} (mean {r['froc_mean']:.3f}, 1 FP/img {r['sens_at_1fp']:.3f})"
        ax.step(fppi[keep], sens[keep], where="post", label=label)
        pts = sorted((float(k), v) for k, v in r["froc"].items())
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o", color=ax.lines[-1].get_color())
    ax.set_xscale("log", base=2)
    ax.set_xlim(1 / 16, 16)
    ax.set_ylim(0, 1)
    ax.set_xlabel("false positives per image")
    ax.set_ylabel("sensitivity (fraction of fractures found)")
    first = reports[0]
    ax.set_title(f"FROC, {first['data']['split']} split, protocol {first['protocol']['name']}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out)
    plt.close(fig)
    return out


def plot_pr(reports: Sequence[dict[str, Any]], path: str | os.PathLike[str]) -> Path:
    """Precision-recall at IoU 0.5 per class, one panel per class, models side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = reports[0]["protocol"]["classes"]
    cols = min(4, len(classes))
    rows = math.ceil(len(classes) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows), dpi=110, squeeze=False)
    recall = np.linspace(0, 1, 101)
    for ax, name in zip(axes.flat, classes):
        for r in reports:
            p = np.array(r["curves"]["pr50"].get(name, []), dtype=float)
            ap = r["per_class_ap50"].get(name)
            if p.size and ap is not None:
                ax.plot(recall[p > -1], p[p > -1], label=f"{r['model']['name']} AP50 {ap:.3f}")
            else:
                ax.text(0.5, 0.5, "no ground truth", ha="center", transform=ax.transAxes)
        ax.set_title(name, fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("recall", fontsize=8)
        ax.set_ylabel("precision", fontsize=8)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=6, loc="upper right")
    for ax in list(axes.flat)[len(classes) :]:
        ax.axis("off")
    fig.suptitle(f"Precision-recall at IoU 0.5, protocol {reports[0]['protocol']['name']}")
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out)
    plt.close(fig)
    return out
