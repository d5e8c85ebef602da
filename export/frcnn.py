"""Export a torchvision Faster R-CNN (trained checkpoint, or seeded random weights) to ONNX, check
ONNX Runtime against PyTorch, and write it into a Triton model repository.

The graph takes one image ``images`` of shape ``[1, 3, H, W]`` (RGB in [0, 1], any size) and
returns ``detections`` ``[1, n, 6]``: ``x1, y1, x2, y2, score, label`` in input pixels, labels
counting from 1. Resizing and normalisation happen inside the graph.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bonefrac.export._common import (
    ExportError,
    ExportResult,
    ParityReport,
    finish_export,
    require_export_extras,
    store_weights_fp16,
    weights_file,
)
from bonefrac.spec import FrcnnSpec

# torchvision drops detections scoring below 0.05 inside the graph by default. The served
# threshold (the spec's ``conf_threshold``, set per request or by ``bonefrac export threshold``)
# is applied after the graph, and the evaluator needs the low-scoring tail for FROC and AP, so
# the graph keeps everything down to this floor (at most ``max_det`` = 100 per image).
GRAPH_SCORE_FLOOR = 0.001


def build_frcnn(spec: FrcnnSpec, *, weights: str | Path | None = None, seed: int = 0):
    """A torchvision Faster R-CNN for ``spec`` (background added to the class count).

    Args:
        spec: architecture, classes and sizes.
        weights: a checkpoint saved by ``bonefrac train frcnn`` or a plain ``state_dict``; loaded
            with ``weights_only=True`` (no pickled code runs). None: seeded random weights.
        seed: the random initialisation's seed.

    Raises:
        ExportError: missing or mismatching checkpoint.
    """
    import torch
    from torchvision.models import detection

    builders = {
        "mobilenet_v3_fpn": detection.fasterrcnn_mobilenet_v3_large_fpn,
        "r50_fpn_v2": detection.fasterrcnn_resnet50_fpn_v2,
    }
    torch.manual_seed(seed)
    model = builders[spec.arch](
        weights=None,
        weights_backbone=None,
        num_classes=spec.num_classes + 1,
        min_size=spec.min_size,
        max_size=spec.max_size,
        box_score_thresh=GRAPH_SCORE_FLOOR,
    )
    if weights is not None:
        path = weights_file(
            weights, hint="train with 'bonefrac train frcnn' or copy the checkpoint here"
        )
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "model" in state:
            state = state["model"]
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise ExportError(
                f"{path} does not fit {spec.arch} with {spec.num_classes} classes + background: "
                f"{str(exc).splitlines()[0]}"
            ) from None
    return model.eval()


def calibrate_batchnorm(model, images: Sequence[np.ndarray]) -> None:
    """Recompute BatchNorm statistics on a few images (random weights only): without it every
    proposal of a random model gets the same features and the same scores, and a parity check
    compares ties."""
    import torch

    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        for x in images:
            batch, _ = model.transform([torch.from_numpy(x)])
            model.backbone(batch.tensors)
    model.eval()


def _wrapper(model):
    import torch

    class FasterRcnnGraph(torch.nn.Module):
        """``[1, 3, H, W]`` -> ``[1, n, 6]``: one tensor in, one tensor out, for Triton."""

        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            out = self.inner([images[0]])[0]
            labels = out["labels"].to(torch.float32)[:, None]
            return torch.cat([out["boxes"], out["scores"][:, None], labels], dim=1)[None]

    return FasterRcnnGraph(model).eval()


@contextlib.contextmanager
def _zero_safe_box_decoding():
    """While exporting, torchvision's ``BoxCoder.decode`` reshapes with explicit sizes.

    The stock code traces ``reshape(n_boxes, -1)``; ONNX Runtime cannot infer ``-1`` when
    ``n_boxes`` is 0, so an image whose region proposals are all filtered out (an all-black
    image, for one) failed the whole graph instead of giving no detections. Same results for
    ``n_boxes > 0``.
    """
    import torch
    from torchvision.models.detection._utils import BoxCoder

    original = BoxCoder.decode

    def decode(coder, rel_codes, boxes):
        box_sum = sum(b.size(0) for b in boxes)
        width = rel_codes.shape[-1]
        rel_codes = rel_codes.reshape(box_sum, width)
        pred = coder.decode_single(rel_codes, torch.cat(boxes, dim=0))
        return pred.reshape(box_sum, width // 4, 4)

    BoxCoder.decode = decode
    try:
        yield
    finally:
        BoxCoder.decode = original


def _export_onnx(graph, example: np.ndarray, path: Path, *, opset: int) -> None:
    import warnings

    import torch

    with warnings.catch_warnings(), _zero_safe_box_decoding():
        warnings.simplefilter("ignore")  # tracer warnings about shape arithmetic are expected
        torch.onnx.export(
            graph,
            (torch.from_numpy(example[None]),),
            str(path),
            opset_version=opset,
            dynamo=False,  # the dynamo exporter fails inside batched_nms
            input_names=["images"],
            output_names=["detections"],
            dynamic_axes={"images": {2: "height", 3: "width"}, "detections": {1: "detections"}},
        )


def check_parity(
    graph, onnx_path: Path, inputs: Sequence[np.ndarray], *, box_tolerance_px: float = 0.05
) -> ParityReport:
    """PyTorch vs ONNX Runtime: every PyTorch detection is matched to the closest ONNX Runtime
    detection of the same label; the report holds the largest differences.

    Detections whose score ties another's (within 1e-5: common in barely trained models) may
    legitimately swap places in NMS or at the top-k cut between the two runtimes; such a
    detection with no counterpart within ``box_tolerance_px`` is counted as tie-ambiguous and
    left out of the box difference, unless ties explain more than a tenth of the detections.
    """
    import torch

    from bonefrac.runtime import OnnxDetector

    detector = OnnxDetector(onnx_path, threads=0)
    box_diff = score_diff = 0.0
    unmatched = count_diff = ambiguous = total = 0
    for x in inputs:
        with torch.no_grad():
            ref = graph(torch.from_numpy(x[None])).numpy()[0]
        got = detector.run(x[None])[0]
        count_diff = max(count_diff, abs(len(ref) - len(got)))
        total += len(ref)
        for row in ref:
            same = got[got[:, 5] == row[5]]
            if not len(same):
                unmatched += 1
                continue
            diff = np.abs(same[:, :5] - row[:5])
            best = int(np.argmin(diff.max(axis=1)))
            boxes = float(diff[best, :4].max())
            tied = np.sum(np.abs(ref[:, 4] - row[4]) <= 1e-5) > 1
            if boxes > box_tolerance_px and tied:
                ambiguous += 1
                continue
            box_diff = max(box_diff, boxes)
            score_diff = max(score_diff, float(diff[best, 4]))
    note = (
        f"{unmatched} unmatched, detection counts differ by up to {count_diff}, "
        f"{ambiguous} tie-ambiguous of {total}"
    )
    if unmatched or count_diff or ambiguous > 0.1 * max(1, total):
        box_diff = max(box_diff, float("inf"))
    return ParityReport(
        images=len(inputs), max_abs_diff_boxes=box_diff, max_abs_diff_scores=score_diff, note=note
    )


def _parity_inputs(images: Sequence[Path], spec: FrcnnSpec, seed: int) -> list[np.ndarray]:
    from bonefrac.processing import preprocess_frcnn

    if images:
        return [
            preprocess_frcnn(Path(p).read_bytes(), max_side=spec.max_input_side)[0] for p in images
        ]
    rng = np.random.default_rng(seed)
    return [
        rng.random((3, 480, 400), dtype=np.float32),
        rng.random((3, 300, 520), dtype=np.float32),
    ]


def export_frcnn(
    *,
    out: str | Path,
    class_names: Sequence[str],
    arch: str = "mobilenet_v3_fpn",
    weights: str | Path | None = None,
    min_size: int = 512,
    max_size: int = 640,
    name: str = "frcnn",
    opset: int = 17,
    seed: int = 0,
    parity_images: Sequence[Path] = (),
    fp16_weights: bool = True,
    box_tolerance_px: float = 0.05,
    score_tolerance: float = 1e-3,
    profile: str = "cpu",
    replace: bool = False,
) -> ExportResult:
    """Export Faster R-CNN to ONNX, check parity and write a Triton model repository.

    Args:
        class_names: the classes (without background).
        arch: ``mobilenet_v3_fpn`` (CPU speed) or ``r50_fpn_v2`` (accuracy).
        weights: a checkpoint; None exports seeded random weights (BatchNorm calibrated on the
            parity images so the outputs are not degenerate).
        min_size, max_size: the graph's resize (shorter side, cap on the longer side).
        name: the ensemble's name.
        opset: ONNX opset.
        seed: seed of the random weights and inputs.
        parity_images: image files for the parity check (and calibration).
        fp16_weights: store large weights as FP16 (half the file; the model still computes in
            FP32). The parity check runs on the FP32 graph; the FP16 file is checked too.
        box_tolerance_px, score_tolerance: parity tolerances.
        out, profile, replace: as :func:`bonefrac.export.yolo11.export_yolo11`.

    Raises:
        ExportError: bad arguments, missing extras, or parity above tolerance.
    """
    spec = FrcnnSpec(  # bad arguments are refused before the extras are looked for
        class_names=tuple(class_names), name=name, arch=arch, min_size=min_size, max_size=max_size
    )
    require_export_extras()
    model = build_frcnn(spec, weights=weights, seed=seed)
    inputs = _parity_inputs(parity_images, spec, seed)
    if weights is None:
        calibrate_batchnorm(model, inputs)
    graph = _wrapper(model)
    with tempfile.TemporaryDirectory(prefix="bonefrac-export-") as tmp:
        onnx_path = Path(tmp) / "model.onnx"
        _export_onnx(graph, inputs[0], onnx_path, opset=opset)
        parity = check_parity(graph, onnx_path, inputs, box_tolerance_px=box_tolerance_px)
        parity.check(box_tolerance_px=box_tolerance_px, score_tolerance=score_tolerance)
        if fp16_weights:
            before, after = store_weights_fp16(onnx_path)
            half = check_parity(graph, onnx_path, inputs, box_tolerance_px=box_tolerance_px)
            parity = ParityReport(
                images=parity.images,
                max_abs_diff_boxes=parity.max_abs_diff_boxes,
                max_abs_diff_scores=parity.max_abs_diff_scores,
                note=f"{parity.note}; FP16-stored weights ({before / 1e6:.0f} MB -> "
                f"{after / 1e6:.0f} MB): boxes {half.max_abs_diff_boxes:.2e} px, scores "
                f"{half.max_abs_diff_scores:.2e}, {half.note}",
            )
        note = "RGB float32 [1, 3, H, W] in [0, 1]; the graph resizes and normalises"
        return finish_export(
            spec, onnx_path, parity, note, out=out, profile=profile, replace=replace
        )
