"""What a user would run without bonefrac for Faster R-CNN: torchvision's model in PyTorch, with
the served model's own weights.

The training checkpoint is not kept; the served ONNX graph is. :func:`frcnn_from_onnx` builds
the model with the project's builder (:func:`bonefrac.export.frcnn.build_frcnn`, from the spec
stored beside the graph) and takes its weights back from the graph: the exporter folded every
BatchNorm into the convolution before it (``W' = W * g / sqrt(v + eps)``, ``b' = beta - m * g /
sqrt(v + eps)``), so the convolution gets ``W'`` and its BatchNorm becomes ``x + b'`` (weight 1,
mean 0, variance ``1 - eps``); convolutions are matched in the order the model calls them, which
is the graph's node order, and linear layers by shape. FP16-stored weights are widened back to
FP32 exactly as the graph does. :func:`check_frcnn_parity` compares the result with ONNX Runtime
on real images (the tests do, on valid X-rays).

Needs torch and torchvision (the export extras): never imported by the serving path.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


class WeightRecoveryError(RuntimeError):
    """The ONNX graph's weights do not fit the model the spec builds."""


def graph_constants(graph: Any) -> dict[str, np.ndarray]:
    """Every constant tensor of an ONNX graph by name: initializers, ``Constant`` outputs and
    the FP32 ``Cast`` of an FP16-stored initializer (as the graph widens it)."""
    from onnx import numpy_helper

    values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        elif node.op_type == "Cast" and node.input[0] in values:
            values[node.output[0]] = values[node.input[0]].astype(np.float32)
    return values


def _graph_convs(graph: Any, values: dict) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """(weight, bias or None) of each distinct convolution, in node order (a convolution
    applied to several feature maps, as the RPN head's, appears once)."""
    seen, convs = set(), []
    for node in graph.node:
        if node.op_type != "Conv" or node.input[1] in seen:
            continue
        seen.add(node.input[1])
        if node.input[1] not in values:
            raise WeightRecoveryError(f"convolution {node.name}'s weight is not a constant")
        bias = values.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        convs.append((values[node.input[1]], bias))
    return convs


def _graph_linears(graph: Any, values: dict) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """(weight as ``[out, in]``, bias or None) of each ``Gemm`` / ``MatMul`` with a constant
    weight (a ``MatMul``'s bias is the constant of the ``Add`` after it)."""
    adds = {
        n.input[0]: n.input[1] for n in graph.node if n.op_type == "Add" and n.input[1] in values
    }
    out = []
    for node in graph.node:
        if node.op_type not in ("Gemm", "MatMul") or node.input[1] not in values:
            continue
        weight = values[node.input[1]]
        if node.op_type == "Gemm":
            attrs = {a.name: a.i for a in node.attribute}
            weight = weight if attrs.get("transB", 0) else weight.T
            bias = values.get(node.input[2]) if len(node.input) > 2 else None
        else:
            weight, bias = weight.T, values.get(adds.get(node.output[0], ""))
        out.append((weight, bias))
    return out


def _call_order(model: Any, kind: type, image_hw: tuple[int, int] = (480, 400)) -> list:
    """The modules of ``kind`` in the order one forward pass first calls them."""
    import torch

    order: list = []
    hooks = [
        m.register_forward_hook(lambda mod, *_: order.append(mod) if mod not in order else None)
        for m in model.modules()
        if isinstance(m, kind)
    ]
    try:
        with torch.no_grad():
            model([torch.rand(3, *image_hw, generator=torch.Generator().manual_seed(0))])
    finally:
        for h in hooks:
            h.remove()
    return order


def _norm_after(model: Any) -> dict[Any, Any]:
    """Each convolution -> the BatchNorm right after it in the same block."""
    import torch

    pairs = {}
    for block in model.modules():
        children = list(block.children())
        for a, b in zip(children, children[1:]):
            if isinstance(a, torch.nn.Conv2d) and isinstance(b, torch.nn.BatchNorm2d):
                pairs[a] = b
    return pairs


def _set(param: Any, value: np.ndarray, what: str) -> None:
    import torch

    if tuple(param.shape) != value.shape:
        raise WeightRecoveryError(
            f"{what}: the graph has shape {value.shape}, the model {tuple(param.shape)}"
        )
    with torch.no_grad():
        param.copy_(torch.from_numpy(np.array(value, dtype=np.float32)))


def load_convolutions(model: Any, convs: Sequence[tuple[np.ndarray, np.ndarray | None]]) -> None:
    """Put the graph's (folded) convolutions into ``model``'s, its BatchNorms made ``x + b``."""
    import torch

    order = _call_order(model, torch.nn.Conv2d)
    if len(order) != len(convs):
        raise WeightRecoveryError(
            f"the graph has {len(convs)} convolutions, the model calls {len(order)}"
        )
    norms = _norm_after(model)
    for i, (conv, (weight, bias)) in enumerate(zip(order, convs)):
        _set(conv.weight, weight, f"convolution {i}")
        bias = np.zeros(weight.shape[0], np.float32) if bias is None else bias
        if conv in norms:
            bn = norms[conv]
            _set(bn.bias, bias, f"convolution {i}'s folded bias")
            with torch.no_grad():
                bn.weight.fill_(1.0)
                bn.running_mean.zero_()
                bn.running_var.fill_(1.0 - bn.eps)
        elif conv.bias is not None:
            _set(conv.bias, bias, f"convolution {i}'s bias")
        elif np.any(bias):
            raise WeightRecoveryError(f"convolution {i} has a bias in the graph, none in the model")


def load_linears(model: Any, linears: Sequence[tuple[np.ndarray, np.ndarray | None]]) -> None:
    """Put the graph's matrix products into ``model``'s linear layers, matched by shape."""
    import torch

    layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    shapes = [tuple(m.weight.shape) for m in layers]
    if len(set(shapes)) != len(shapes) or len(linears) != len(layers):
        raise WeightRecoveryError(
            f"cannot match {len(linears)} graph matrices to linear layers of shapes {shapes}"
        )
    by_shape = {w.shape: (w, b) for w, b in linears}
    for layer, shape in zip(layers, shapes):
        if shape not in by_shape:
            raise WeightRecoveryError(f"no graph matrix of shape {shape}")
        weight, bias = by_shape[shape]
        _set(layer.weight, weight, f"linear {shape}")
        if bias is not None:
            _set(layer.bias, bias, f"linear {shape}'s bias")


def frcnn_from_onnx(repository: str | os.PathLike[str], model: str = "frcnn") -> Any:
    """torchvision's Faster R-CNN in PyTorch (eval mode) with the weights of the served
    ``model``'s ONNX graph in ``repository``.

    Raises:
        WeightRecoveryError: the graph's weights do not fit the model its spec builds (a
            GroupNorm model, whose norms the exporter does not fold, is refused here).
        ModelRepositoryError: the model or its ONNX file is missing.
    """
    import onnx

    from bonefrac.export.frcnn import build_frcnn
    from bonefrac.pipeline import read_repository_model

    found = read_repository_model(repository, model)
    graph = onnx.load(str(found.onnx_path)).graph
    if any(n.op_type in ("InstanceNormalization", "GroupNormalization") for n in graph.node):
        raise WeightRecoveryError(
            f"{found.onnx_path} normalises by groups: only BatchNorm models are recovered"
        )
    values = graph_constants(graph)
    torch_model = build_frcnn(found.spec, norm="batch")
    load_convolutions(torch_model, _graph_convs(graph, values))
    load_linears(torch_model, _graph_linears(graph, values))
    return torch_model.eval()


def check_frcnn_parity(
    repository: str | os.PathLike[str],
    images: Sequence[Path],
    model: str = "frcnn",
    *,
    torch_model: Any = None,
) -> Any:
    """The recovered PyTorch model (``torch_model``, or recovered now) vs ONNX Runtime on
    ``images`` (the exporter's own check: :func:`bonefrac.export.frcnn.check_parity`, boxes
    within 0.05 px); returns its ``ParityReport``."""
    from bonefrac.export.frcnn import _parity_inputs, _wrapper, check_parity
    from bonefrac.pipeline import read_repository_model

    found = read_repository_model(repository, model)
    if torch_model is None:
        torch_model = frcnn_from_onnx(repository, model)
    graph = _wrapper(torch_model)
    inputs = _parity_inputs(images, found.spec, seed=0)
    return check_parity(graph, found.onnx_path, inputs, box_tolerance_px=0.05)


def torchvision_target(
    repository: str, model: str = "frcnn", *, threads: int = 1, torch_model: Any = None
) -> Any:
    """A load-generator target: the recovered model (``torch_model``, or recovered now) called
    as a user of torchvision would (decode, RGB float tensor in [0, 1], ``model([image])``) on
    ``threads`` threads sharing it, PyTorch's intra-op threads split between them (the cores
    over ``threads``). It answers one image before it is returned (PyTorch's first call is
    slow, not something to measure)."""
    import torch

    from bonefrac.benchmarks.loadgen import blank_jpeg, pooled_target
    from bonefrac.processing import decode_image

    if torch_model is None:
        torch_model = frcnn_from_onnx(repository, model)
    intra = max(1, (os.cpu_count() or 1) // max(1, threads))

    def run(net: Any, payload: bytes) -> None:
        torch.set_num_threads(intra)
        image = torch.from_numpy(decode_image(payload)).permute(2, 0, 1).float().div_(255.0)
        with torch.inference_mode():
            net([image])

    run(torch_model, blank_jpeg())
    return pooled_target([torch_model] * max(1, threads), run)
