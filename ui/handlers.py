"""What the page's events do, as plain functions of a :class:`~bonefrac.ui.backend.Backend` (tests
call them without a browser). User mistakes raise ``ValueError`` or a
:class:`~bonefrac.errors.BonefracError` with a message for the user; the layout shows it."""

from __future__ import annotations

import html
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bonefrac.client import ClientError
from bonefrac.dataset import make_protocol
from bonefrac.detections import Detections
from bonefrac.dicom import read_image_bytes
from bonefrac.processing import ImageDecodeError, decode_image
from bonefrac.spec import DATASET_CLASSES
from bonefrac.ui.backend import Backend, UiConfig
from bonefrac.ui.drawing import draw_detections, draw_labels, side_by_side
from bonefrac.ui.labels import HIT_IOU, Labels, Match, match, read_labels

BOTH = "both (side by side)"
TABLE_HEADERS = ["model", "class", "score", "x1", "y1", "x2", "y2", "hits a label"]


@dataclass(frozen=True)
class DetectionView:
    """Everything the Detect tab shows for one request.

    Attributes:
        annotated: ``(H, W, 3)`` uint8 RGB picture (models side by side with "both").
        rows: one table row per detection (:data:`TABLE_HEADERS`).
        verdict: one line per model.
        truth: the findings against the labels (Markdown), or how to get labels.
        timing: round trip and the server's per-step times (Markdown).
        results: model -> its detections (under the chosen protocol).
    """

    annotated: np.ndarray
    rows: list[list]
    verdict: str
    truth: str
    timing: str
    results: dict[str, Detections]


def choices(config: UiConfig) -> list[str]:
    """The model choices of the page: each model, and both when there are several."""
    return [*config.models, BOTH] if len(config.models) > 1 else list(config.models)


def load_upload(path: str | None, config: UiConfig) -> tuple[bytes, np.ndarray]:
    """Read an uploaded file: bytes to send (DICOM converted) and the RGB image to draw on.

    Raises:
        ValueError: with a message for the user (no file, too large, not an image).
    """
    if not path:
        raise ValueError("Upload an X-ray first (JPEG, PNG, DICOM ...), or pick an example.")
    file = Path(path)
    size_mb = file.stat().st_size / 1e6
    if size_mb > config.max_upload_mb:
        raise ValueError(f"The file is {size_mb:.0f} MB; the limit is {config.max_upload_mb} MB.")
    try:
        data = read_image_bytes(file.read_bytes())
        image = decode_image(data, max_side=config.max_side)
    except ImageDecodeError as exc:
        raise ValueError(f"{file.name} cannot be read as an X-ray: {exc}") from None
    return data, image


def apply_protocol(det: Detections, protocol: str) -> Detections:
    """Relabel detections under a class protocol (names and ids; boxes and scores unchanged).

    Raises:
        DatasetError: unknown protocol, or a class the protocol does not know.
    """
    if protocol == "7class" or not len(det):
        return det
    proto = make_protocol(protocol, DATASET_CLASSES)
    return Detections(
        xyxy=det.xyxy,
        scores=det.scores,
        class_ids=proto.map_names(det.class_names),
        class_names=tuple(proto.mapping[n] for n in det.class_names),
        image_size=det.image_size,
    )


def verdict(results: Mapping[str, Detections], *, thresholds: Mapping[str, float]) -> str:
    """One line per model: "fracture suspected" with the top finding, or none found."""
    lines = []
    for model, det in results.items():
        threshold = thresholds[model]
        if len(det) and det.scores.max() >= threshold:
            i = int(np.argmax(det.scores))
            lines.append(
                f"{model}: FRACTURE SUSPECTED - top finding {det.class_names[i]} "
                f"(score {det.scores[i]:.2f})"
            )
        else:
            lines.append(f"{model}: no fracture found at score >= {threshold:.2f}")
    return "\n".join(lines)


def _box(xyxy: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:.0f}" for v in xyxy) + "]"


def truth_line(model: str, det: Detections, labels: Labels, result: Match) -> str:
    """One Markdown line: how many findings hit a label, how many labels were found, which
    were missed."""
    missed = [
        f"{n} {_box(b)}" for b, n, f in zip(labels.xyxy, labels.class_names, result.found) if not f
    ]
    return (
        f"**{model}**: {int(result.hits.sum())} of {len(det)} findings hit a label; "
        f"{int(result.found.sum())} of {len(labels)} labels found"
        + (f"; missed: {', '.join(missed)}" if missed else "")
    )


def _timing_md(model: str, round_trip_ms: float, before: dict, after: dict) -> str:
    parts = []
    for key, (count, ns) in after.items():
        c0, n0 = before.get(key, (0, 0))
        if count > c0:
            parts.append(f"{key} {(ns - n0) / 1e6 / (count - c0):.1f} ms")
    server = "; ".join(parts) if parts else "n/a"
    return f"**{model}**: round trip {round_trip_ms:.0f} ms. Server: {server}"


def timed_detect(
    backend: Backend, model: str, data: bytes, *, conf: float, iou: float | None
) -> tuple[Detections, str]:
    """Detections of one model and a Markdown line of its times (the server's own per-step
    times when its statistics answer).

    Raises:
        ClientError: the request failed.
    """
    try:
        before = backend.phase_times_ns(model)
    except ClientError:
        before = None
    start = time.perf_counter()
    det = backend.detect(model, data, conf=conf, iou=iou)
    elapsed_ms = (time.perf_counter() - start) * 1000
    try:
        after = backend.phase_times_ns(model) if before is not None else None
    except ClientError:
        after = None
    if after is None:
        return det, f"**{model}**: round trip {elapsed_ms:.0f} ms"
    return det, _timing_md(model, elapsed_ms, before, after)


def _models(choice: str, config: UiConfig) -> list[str]:
    models = list(config.models) if choice == BOTH else [choice]
    if any(m not in config.models for m in models):
        raise ValueError(f"Unknown model {choice!r}; choose one of {', '.join(choices(config))}.")
    return models


def _labels_under(labels: Labels, protocol: str) -> Labels:
    mapping = make_protocol(protocol, DATASET_CLASSES).mapping
    return Labels(labels.xyxy, tuple(mapping[n] for n in labels.class_names))


NO_LABELS = (
    "No labels: give the image's YOLO label file (.txt) to see the labelled boxes and which "
    "findings hit them, or pick an example."
)


def detect(
    backend: Backend,
    path: str | None,
    model: str,
    *,
    confs: Mapping[str, float] | float | None = None,
    iou: float | None = None,
    protocol: str = "7class",
    labels_path: str | None = None,
) -> DetectionView:
    """Run the chosen model(s) on an uploaded image and draw, tabulate and judge the result.

    Args:
        backend: the page's connection to Triton.
        path: the uploaded image file.
        model: a model name or :data:`BOTH`.
        confs: score threshold per model (a model left out: its own operating point), or one
            threshold for every model.
        iou: NMS IoU threshold (None: each model's own).
        protocol: ``7class``, ``6class`` or ``agnostic``: the class names shown, and which
            classes count as the same when findings are compared with the labels.
        labels_path: the image's YOLO label file, if any.

    Raises:
        ValueError, BonefracError: with a message for the user.
    """
    config = backend.config
    data, image = load_upload(path, config)
    models = _models(model, config)
    if not isinstance(confs, Mapping):
        confs = dict.fromkeys(models, confs) if confs is not None else {}
    thresholds = {m: float(confs.get(m, backend.default_conf(m))) for m in models}
    labels = read_labels(labels_path, image_size=image.shape[:2]) if labels_path else None
    shown = _labels_under(labels, protocol) if labels is not None else None
    base = draw_labels(image, shown.xyxy, shown.class_names) if shown is not None else image
    results, timings, pictures, rows, truth = {}, [], [], [], []
    for m in models:
        det, timing = timed_detect(backend, m, data, conf=thresholds[m], iou=iou)
        timings.append(timing)
        hits = None
        if labels is not None:
            result = match(det, labels, protocol=protocol)
            hits = result.hits
            truth.append(truth_line(m, det, labels, result))
        det = results[m] = apply_protocol(det, protocol)
        title = f"{m} (threshold {thresholds[m]:.4f})" if len(models) > 1 else ""
        pictures.append(draw_detections(base, det, title=title, hits=hits))
        rows += _rows(m, det, hits)
    return DetectionView(
        annotated=pictures[0] if len(pictures) == 1 else side_by_side(pictures),
        rows=rows,
        verdict=verdict(results, thresholds=thresholds),
        truth=_truth_md(truth, labels, protocol),
        timing="\n\n".join(timings),
        results=results,
    )


def _rows(model: str, det: Detections, hits: np.ndarray | None) -> list[list]:
    marks = ["yes" if h else "no" for h in hits] if hits is not None else [""] * len(det)
    return [
        [model, n, round(float(s), 3), *[round(float(v), 1) for v in b], mark]
        for b, s, n, mark in zip(det.xyxy, det.scores, det.class_names, marks)
    ]


def _truth_md(lines: list[str], labels: Labels | None, protocol: str) -> str:
    if labels is None:
        return NO_LABELS
    head = (
        f"Labels (dashed white): {len(labels)}"
        + (f" ({', '.join(labels.class_names)})" if len(labels) else ", no fracture labelled")
        + f". A finding hits a label at IoU >= {HIT_IOU} with the same class under {protocol}."
    )
    return "\n\n".join([head, *lines])


def detect_api(backend: Backend, path: str | None, model: str, conf: float):
    """The public ``/detect`` endpoint: (image file, model, threshold for every model) ->
    (annotated image, table rows, verdict)."""
    view = detect(backend, path, model, confs=float(conf))
    return view.annotated, view.rows, view.verdict


def status_html(backend: Backend) -> str:
    """The status line: the server's state and models, or a red banner when it is down."""
    config = backend.config
    s = backend.status()
    if not s["up"]:
        return (
            f'<div class="bf-down">Triton server at {html.escape(config.server)} is '
            f"unavailable. Detection is paused; this page reconnects by itself when the "
            f"server is back. ({html.escape(s['error'])})</div>"
        )
    models = (
        ", ".join(f"{n} v{v} ({st.lower()})" for n, v, st in s["models"] if n in config.models)
        or "none"
    )
    state = "ready" if s["ready"] else "not ready"
    count = f" ({s['servers_up']}/{s['servers']} servers up)" if s["servers"] > 1 else ""
    return (
        f'<div class="bf-up">Triton {html.escape(config.server)}: live, {state}{count}. '
        f"Models: {html.escape(models)}</div>"
    )
