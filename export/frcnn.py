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
# the graph keeps everything down to this floor (at most ``max_det`` = 100 per image): the
# spec's ``score_floor``.
GRAPH_SCORE_FLOOR = FrcnnSpec.score_floor


#: Normalisation layers a Faster R-CNN can be built with: ``batch`` (torchvision's builders:
#: BatchNorm in the backbone and, for ``r50_fpn_v2``, in the FPN and box head) or ``group``
#: (GroupNorm in the backbone, the FPN and, for ``r50_fpn_v2``, the box head: the choice for
#: training from scratch at small batches, He et al., "Rethinking ImageNet Pre-training").
FRCNN_NORMS = ("batch", "group")


def group_norm(channels: int):
    """GroupNorm over ``channels`` with 32 groups, or the largest divisor of ``channels`` below
    32 when 32 does not divide it (MobileNetV3 has 72, 120, 184, ... channels)."""
    import torch

    groups = max(g for g in range(1, 33) if channels % g == 0)
    return torch.nn.GroupNorm(groups, channels)


def _group_norm_frcnn(arch: str, **kwargs):
    """torchvision's Faster R-CNN builder for ``arch`` (random weights, every backbone layer
    trainable) with :func:`group_norm` wherever it puts BatchNorm, and in the FPN too. The RPN
    head has no normalisation in either (torchvision's ``RPNHead`` takes none)."""
    from torchvision.models import mobilenet_v3_large, resnet50
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import (
        _mobilenet_extractor,
        _resnet_fpn_extractor,
    )
    from torchvision.models.detection.faster_rcnn import (
        FastRCNNConvFCHead,
        RPNHead,
        _default_anchorgen,
    )

    if arch == "mobilenet_v3_fpn":
        body = mobilenet_v3_large(weights=None, norm_layer=group_norm)
        backbone = _mobilenet_extractor(body, True, 6, norm_layer=group_norm)
        anchors = AnchorGenerator(((32, 64, 128, 256, 512),) * 3, ((0.5, 1.0, 2.0),) * 3)
        return FasterRCNN(backbone, rpn_anchor_generator=anchors, **kwargs)
    backbone = _resnet_fpn_extractor(
        resnet50(weights=None, norm_layer=group_norm), 5, norm_layer=group_norm
    )
    anchors = _default_anchorgen()
    return FasterRCNN(
        backbone,
        rpn_anchor_generator=anchors,
        rpn_head=RPNHead(
            backbone.out_channels, anchors.num_anchors_per_location()[0], conv_depth=2
        ),
        box_head=FastRCNNConvFCHead(
            (backbone.out_channels, 7, 7), [256, 256, 256, 256], [1024], norm_layer=group_norm
        ),
        **kwargs,
    )


def _read_checkpoint(weights: str | Path, norm: str | None) -> tuple[Path, dict, str]:
    """The checkpoint's path, ``state_dict`` and normalisation: its training config's ``norm``,
    or for a plain ``state_dict`` ``batch`` when it holds BatchNorm statistics, else ``group``.

    Raises:
        ExportError: missing checkpoint, or ``norm`` given and not the checkpoint's.
    """
    import torch

    path = weights_file(
        weights, hint="train with 'bonefrac train frcnn' or copy the checkpoint here"
    )
    state = torch.load(path, map_location="cpu", weights_only=True)
    config = state.get("config") if isinstance(state, dict) else None
    if isinstance(state, dict) and "model" in state:
        state = state["model"]
    if isinstance(config, dict) and config.get("norm"):
        saved = config["norm"]
    else:
        saved = "batch" if any(k.endswith(".running_mean") for k in state) else "group"
    if norm is not None and norm != saved:
        raise ExportError(
            f"{path} was trained with --norm {saved}, not {norm}: export it with its own norm "
            "(leave the norm unset to take the checkpoint's)"
        )
    return path, state, saved


def build_frcnn(
    spec: FrcnnSpec, *, weights: str | Path | None = None, seed: int = 0, norm: str | None = None
):
    """A torchvision Faster R-CNN for ``spec`` (background added to the class count): the one
    builder of both the trainer and the exporter.

    Args:
        spec: architecture, classes and sizes.
        weights: a checkpoint saved by ``bonefrac train frcnn`` or a plain ``state_dict``; loaded
            with ``weights_only=True`` (no pickled code runs). None: seeded random weights.
        seed: the random initialisation's seed.
        norm: one of :data:`FRCNN_NORMS`; None: the checkpoint's (``batch`` without weights).

    Raises:
        ExportError: unknown norm, missing or mismatching checkpoint.
    """
    import torch
    from torchvision.models import detection

    if norm is not None and norm not in FRCNN_NORMS:
        raise ExportError(f"norm must be one of {', '.join(FRCNN_NORMS)}, got {norm!r}")
    path, state, norm = (
        _read_checkpoint(weights, norm) if weights is not None else (None, None, norm or "batch")
    )
    kwargs = {
        "num_classes": spec.num_classes + 1,
        "min_size": spec.min_size,
        "max_size": spec.max_size,
        "box_score_thresh": spec.score_floor,
        "box_detections_per_img": spec.max_det,
        "rpn_pre_nms_top_n_test": spec.rpn_pre_nms_top_n,
        "rpn_post_nms_top_n_test": spec.rpn_post_nms_top_n,
    }
    builders = {
        "mobilenet_v3_fpn": detection.fasterrcnn_mobilenet_v3_large_fpn,
        "r50_fpn_v2": detection.fasterrcnn_resnet50_fpn_v2,
    }
    torch.manual_seed(seed)
    if norm == "group":
        model = _group_norm_frcnn(spec.arch, **kwargs)
    else:
        model = builders[spec.arch](weights=None, weights_backbone=None, **kwargs)
    if state is not None:
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise ExportError(
                f"{path} does not fit {spec.arch} ({norm} norm) with {spec.num_classes} classes "
                f"+ background: {str(exc).splitlines()[0]}"
            ) from None
    return model.eval()


def calibrate_batchnorm(model, images: Sequence[np.ndarray]) -> None:
    """Recompute BatchNorm statistics on a few images (random weights only): without it every
    proposal of a random model gets the same features and the same scores, and a parity check
    compares ties. A model without BatchNorm is left as it is."""
    import torch

    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    if not norms:  # a GroupNorm model normalises each image by itself: nothing to calibrate
        return
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


def _gather_merge_levels(levels, unmerged_results):
    """RoI features of every pyramid level put back into proposal order by one row gather.

    torchvision's traced ``_onnx_merge_levels`` scatters each level's ``[k, 256, 7, 7]`` result
    into a zeroed ``[n, 256, 7, 7]`` tensor, element by element (ONNX ``ScatterElements`` with an
    expanded index): it was the slowest node of the served graph (about 40 % of its time at 1000
    proposals, ``benchmarks/README.md``). Here the levels are concatenated and rows gathered with
    the inverse of the concatenation order: the same tensor, exactly.
    """
    import torch

    order = torch.cat([torch.where(levels == k)[0] for k in range(len(unmerged_results))])
    positions = torch.cumsum(torch.ones_like(order), 0) - 1  # arange, traced with a dynamic size
    inverse = torch.zeros_like(order).scatter(0, order, positions)
    return torch.cat(unmerged_results)[inverse]


@contextlib.contextmanager
def _fast_roi_merge():
    """While exporting, torchvision's multi-scale RoIAlign merges levels with
    :func:`_gather_merge_levels` instead of its scatter."""
    from torchvision.ops import poolers

    original = poolers._onnx_merge_levels
    poolers._onnx_merge_levels = _gather_merge_levels
    try:
        yield
    finally:
        poolers._onnx_merge_levels = original


def _export_onnx(graph, example: np.ndarray, path: Path, *, opset: int) -> None:
    import warnings

    import torch

    with warnings.catch_warnings(), _zero_safe_box_decoding(), _fast_roi_merge():
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
    norm: str | None = None,
    rpn_pre_nms_top_n: int = FrcnnSpec.rpn_pre_nms_top_n,
    rpn_post_nms_top_n: int = FrcnnSpec.rpn_post_nms_top_n,
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
        norm: ``batch`` or ``group`` (:data:`FRCNN_NORMS`); None: the checkpoint's (its training
            config says; ``batch`` for random weights).
        rpn_pre_nms_top_n, rpn_post_nms_top_n: serve-time proposal counts (:class:`FrcnnSpec`).

    Raises:
        ExportError: bad arguments, missing extras, or parity above tolerance.
    """
    geometry = {"arch": arch, "min_size": min_size, "max_size": max_size}
    proposals = {"rpn_pre_nms_top_n": rpn_pre_nms_top_n, "rpn_post_nms_top_n": rpn_post_nms_top_n}
    # bad arguments are refused before the extras are looked for
    spec = FrcnnSpec(class_names=tuple(class_names), name=name, **geometry, **proposals)
    require_export_extras()
    model = build_frcnn(spec, weights=weights, seed=seed, norm=norm)
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


# Graphs exported before the spec carried proposal counts used torchvision's test-time defaults.
_TORCHVISION_PROPOSALS = {"rpn_pre_nms_top_n": 1000, "rpn_post_nms_top_n": 1000}


def _onnx_arrays(graph) -> dict[str, np.ndarray]:
    """Every weight of an ONNX graph by the name its users read it under: the initializers, the
    outputs of the Casts :func:`store_weights_fp16` put in front of FP16-stored ones, and of the
    Identities by which the exporter shares equal weights (zero biases of a new model)."""
    from onnx import numpy_helper

    arrays = {i.name: numpy_helper.to_array(i).astype(np.float32) for i in graph.initializer}
    for node in graph.node:
        if node.op_type in ("Cast", "Identity") and node.input[0] in arrays:
            arrays[node.output[0]] = arrays[node.input[0]]
    return arrays


def _scope_levels(module_path: str) -> list[str]:
    """The scope names torch.onnx gives a module's calls: ``backbone.body.0.0`` ->
    ``backbone/body/body.0/body.0.0`` (a numbered child is named after its parent)."""
    names: list[str] = []
    for part in module_path.split("."):
        names.append(f"{names[-1]}.{part}" if part.isdigit() and names else part)
    return names


def _folded_convs(graph, model) -> list[tuple[str, str, str]]:
    """``(conv module path, weight name, bias name)`` of every Conv whose BatchNorm the exporter
    folded in (its weights are unnamed constants); the conv is found from the node's scope."""
    import torch

    found = []
    for node in graph.node:
        if node.op_type != "Conv" or node.input[1].startswith("inner."):
            continue
        path = _module_of(node, model, torch.nn.Conv2d)
        if path is None or len(node.input) < 3:
            raise ExportError(f"cannot tell which convolution ONNX node {node.name} is")
        found.append((path, node.input[1], node.input[2]))
    return found


def _module_of(node, model, kind) -> str | None:
    """The path of the module of type ``kind`` whose call the ONNX ``node`` belongs to, from
    the node's scope (a module list is not a scope level of its own); None if not exactly one."""
    import re

    scope = [re.sub(r"_\d+$", "", s) for s in node.name.split("/")[2:-1]]
    paths = [
        p
        for p, m in model.named_modules()
        if isinstance(m, kind) and [s for s in _scope_levels(p) if s in scope] == scope
    ]
    return paths[0] if len(paths) == 1 else None


def graph_norm(graph) -> str:
    """``group`` when an exported graph (``onnx.GraphProto``) holds GroupNorm (exported as
    InstanceNormalization), else ``batch``."""
    return "group" if any(n.op_type == "InstanceNormalization" for n in graph.node) else "batch"


def _group_norms(graph, model) -> dict[str, str]:
    """State-dict key -> graph value of every GroupNorm's weight and bias: the exporter turns
    GroupNorm into InstanceNormalization followed by a ``Mul`` (weight) and an ``Add`` (bias)
    with unnamed constants, in the module's scope."""
    import torch

    found = {}
    for node in graph.node:
        key = {"Mul": "weight", "Add": "bias"}.get(node.op_type)
        if key and (path := _module_of(node, model, torch.nn.GroupNorm)):
            found.setdefault(f"{path}.{key}", node.input[1])
    norms = [p for p, m in model.named_modules() if isinstance(m, torch.nn.GroupNorm)]
    if missing := [p for p in norms if f"{p}.weight" not in found or f"{p}.bias" not in found]:
        raise ExportError(f"the graph has no weight or bias of GroupNorm {', '.join(missing[:3])}")
    return found


def state_dict_from_onnx(onnx_path: str | Path, spec: FrcnnSpec) -> tuple[dict, str]:
    """The weights of a Faster R-CNN read back from its exported ONNX graph, and its
    normalisation (``batch`` or ``group``: :func:`graph_norm`).

    BatchNorm: the exporter folds each BatchNorm into the convolution before it, so those
    convolutions get the folded weight and the BatchNorm becomes the identity plus the folded
    bias (mean 0, variance ``1 - eps``, scale 1): the same function. GroupNorm: its weight and
    bias are the constants of the operations it was exported as (:func:`_group_norms`).
    Everything else is read by name.

    Raises:
        ExportError: a weight of the model that the graph does not hold, or a folded
            convolution that cannot be placed.
    """
    import onnx
    import torch

    graph = onnx.load(str(onnx_path)).graph
    arrays = _onnx_arrays(graph)
    norm = graph_norm(graph)
    model = build_frcnn(spec, norm=norm)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    modules = dict(model.named_modules())
    filled = set()
    for conv, weight, bias in _folded_convs(graph, model) if norm == "batch" else []:
        prefix, index = conv.rsplit(".", 1)
        norm_path = f"{prefix}.{int(index) + 1}"
        if not isinstance(modules.get(norm_path), torch.nn.BatchNorm2d):
            raise ExportError(f"convolution {conv} has no BatchNorm after it")
        eps = modules[norm_path].eps
        state[f"{conv}.weight"] = torch.from_numpy(arrays[weight])
        values = {"weight": 1.0, "bias": arrays[bias], "running_mean": 0.0, "running_var": 1 - eps}
        for key, value in values.items():
            state[f"{norm_path}.{key}"] = torch.full_like(state[f"{norm_path}.{key}"], 0.0) + (
                torch.from_numpy(value) if isinstance(value, np.ndarray) else value
            )
        filled |= {f"{conv}.weight"} | {f"{norm_path}.{k}" for k in values}
    names = {key: f"inner.{key}" for key in state}
    if norm == "group":
        names.update(_group_norms(graph, model))
    for key in state:
        if names[key] in arrays and key not in filled:
            state[key] = torch.from_numpy(arrays[names[key]]).reshape(state[key].shape)
            filled.add(key)
    missing = sorted(k for k in state if k not in filled and not k.endswith("num_batches_tracked"))
    if missing:
        raise ExportError(f"{onnx_path} holds no weights for {', '.join(missing[:5])} ...")
    return state, norm


def model_from_onnx(onnx_path: str | Path, spec: FrcnnSpec):
    """torchvision's Faster R-CNN (eval mode) with the weights of an exported graph
    (:func:`state_dict_from_onnx`)."""
    state, norm = state_dict_from_onnx(onnx_path, spec)
    model = build_frcnn(spec, norm=norm)
    model.load_state_dict(state)
    return model.eval()


def recover_checkpoint(
    onnx_path: str | Path, out: str | Path, *, parity_images: Sequence[Path] = ()
) -> ParityReport:
    """Write the weights of an exported Faster R-CNN graph as a checkpoint ``bonefrac export
    frcnn --weights`` takes, after checking that the rebuilt PyTorch model (with the graph's own
    spec and proposal counts) gives the graph's detections.

    Raises:
        ExportError: unreadable graph, or parity above the export's tolerance.
    """
    import json

    import onnx
    import torch

    from bonefrac.spec import spec_from_dict

    meta = {
        p.key: p.value for p in onnx.load(str(onnx_path), load_external_data=False).metadata_props
    }
    if "bonefrac_spec" not in meta:
        raise ExportError(f"{onnx_path} is not a bonefrac export (no bonefrac_spec metadata)")
    spec = spec_from_dict({**_TORCHVISION_PROPOSALS, **json.loads(meta["bonefrac_spec"])})
    model = model_from_onnx(onnx_path, spec)
    inputs = _parity_inputs(parity_images, spec, 0)
    parity = check_parity(_wrapper(model), Path(onnx_path), inputs)
    parity.check(box_tolerance_px=0.05, score_tolerance=1e-3)
    torch.save(model.state_dict(), str(out))
    return parity


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bonefrac.export.frcnn recover MODEL.onnx OUT.pth``: the weights of an exported
    graph, checked against it, for re-exporting with other serve-time settings."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m bonefrac.export.frcnn", description=main.__doc__
    )
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("recover", help="write an exported graph's weights as a checkpoint")
    rec.add_argument("onnx", help="an ONNX file written by 'bonefrac export frcnn'")
    rec.add_argument("out", help="checkpoint to write (.pth)")
    rec.add_argument("--parity-images", nargs="*", default=[], help="images for the check")
    args = parser.parse_args(argv)
    try:
        parity = recover_checkpoint(
            args.onnx, args.out, parity_images=[Path(p) for p in args.parity_images]
        )
    except ExportError as exc:
        parser.exit(2, f"error: {exc}\n")
    print(f"{parity}\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
