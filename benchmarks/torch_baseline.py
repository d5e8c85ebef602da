"""What a user would run without bonefrac for Faster R-CNN: torchvision's model in PyTorch, with
the served model's own weights.

The training checkpoint is not kept; the served ONNX graph is. :func:`frcnn_from_onnx` builds
the model with the project's builder (:func:`bonefrac.export.frcnn.build_frcnn`, from the spec
stored beside the graph) and takes its weights back from the graph. Weights the exporter kept
under their names (``inner.<state_dict key>``, FP16-stored ones widened back to FP32 as the graph
does) are loaded by name. The exporter folded each BatchNorm into the convolution before it
(``W' = W * g / sqrt(v + eps)``, ``b' = beta - m * g / sqrt(v + eps)``) under a generated name:
those convolutions are matched in the order the model calls them (the graph's node order), each
gets ``W'`` and its BatchNorm becomes ``x + b'`` (weight 1, mean 0, variance ``1 - eps``). Every
weight of the model must be accounted for, or the recovery is refused.
:func:`check_frcnn_parity` compares the result with ONNX Runtime on real images (the tests do,
on valid X-rays).

Needs torch, torchvision and onnx (the export extras): never imported by the serving path.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: Prefix of the parameter names in the exported graph (the exporter's wrapper holds the
#: torchvision model as ``inner``).
GRAPH_PREFIX = "inner."


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


def folded_convolutions(graph: Any, values: dict) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """(weight, bias or None) of each distinct convolution whose weight has no parameter name
    (folded with its BatchNorm), in node order; a convolution applied to several feature maps
    appears once."""
    seen, convs = set(), []
    for node in graph.node:
        name = node.input[1] if node.op_type == "Conv" else None
        if name is None or name in seen or name.startswith(GRAPH_PREFIX):
            continue
        seen.add(name)
        if name not in values:
            raise WeightRecoveryError(f"convolution {node.name}'s weight is not a constant")
        bias = values.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        convs.append((values[name], bias))
    return convs


def _set(tensor: Any, value: np.ndarray, what: str) -> None:
    import torch

    if tuple(tensor.shape) != value.shape:
        raise WeightRecoveryError(
            f"{what}: the graph has shape {value.shape}, the model {tuple(tensor.shape)}"
        )
    with torch.no_grad():
        tensor.copy_(torch.from_numpy(np.array(value, dtype=np.float32)))


def load_named(model: Any, values: dict[str, np.ndarray]) -> set[str]:
    """Load every graph constant named ``inner.<key>`` into ``model``'s ``key``; returns the
    keys loaded."""
    state = model.state_dict()
    loaded = set()
    for name, value in values.items():
        key = name[len(GRAPH_PREFIX) :] if name.startswith(GRAPH_PREFIX) else None
        if key in state:
            _set(state[key], value, key)
            loaded.add(key)
    return loaded


def _call_order(model: Any, image_hw: tuple[int, int] = (480, 400)) -> list[str]:
    """The names of the model's convolutions in the order one forward pass first calls them."""
    import torch

    order: list[str] = []
    names = {m: n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}

    def seen(module: Any, *_: Any) -> None:
        if names[module] not in order:
            order.append(names[module])

    hooks = [m.register_forward_hook(seen) for m in names]
    try:
        with torch.no_grad():
            model([torch.rand(3, *image_hw, generator=torch.Generator().manual_seed(0))])
    finally:
        for h in hooks:
            h.remove()
    return order


def _norm_after(model: Any) -> dict[str, str]:
    """Each convolution's name -> the name of the BatchNorm right after it in its block."""
    import torch

    pairs = {}
    for prefix, block in model.named_modules():
        children = list(block.named_children())
        for (a, conv), (b, norm) in zip(children, children[1:]):
            if isinstance(conv, torch.nn.Conv2d) and isinstance(norm, torch.nn.BatchNorm2d):
                dot = f"{prefix}." if prefix else ""
                pairs[f"{dot}{a}"] = f"{dot}{b}"
    return pairs


def load_folded(
    model: Any, convs: Sequence[tuple[np.ndarray, np.ndarray | None]], loaded: set[str]
) -> set[str]:
    """Put the graph's folded convolutions into ``model``'s convolutions not ``loaded`` by name
    (in call order), each BatchNorm after one made ``x + b'``; returns the keys set."""
    state = model.state_dict()
    order = [c for c in _call_order(model) if f"{c}.weight" not in loaded]
    if len(order) != len(convs):
        raise WeightRecoveryError(
            f"the graph has {len(convs)} folded convolutions, the model {len(order)} unnamed"
        )
    norms, done = _norm_after(model), set()
    for conv, (weight, bias) in zip(order, convs):
        _set(state[f"{conv}.weight"], weight, f"{conv}.weight")
        bias = np.zeros(weight.shape[0], np.float32) if bias is None else bias
        target = f"{norms[conv]}.bias" if conv in norms else f"{conv}.bias"
        if target not in state:
            raise WeightRecoveryError(f"{conv} has a bias in the graph, none in the model")
        _set(state[target], bias, target)
        done |= {f"{conv}.weight", target}
        if conv in norms:
            bn = norms[conv]
            eps = model.get_submodule(bn).eps
            state[f"{bn}.weight"].fill_(1.0)
            state[f"{bn}.running_mean"].zero_()
            state[f"{bn}.running_var"].fill_(1.0 - eps)
            done |= {f"{bn}.weight", f"{bn}.running_mean", f"{bn}.running_var"}
    return done


def frcnn_from_onnx(repository: str | os.PathLike[str], model: str = "frcnn") -> Any:
    """torchvision's Faster R-CNN in PyTorch (eval mode) with the weights of the served
    ``model``'s ONNX graph in ``repository``.

    Raises:
        WeightRecoveryError: the graph's weights do not fit the model its spec builds, or some
            weight of the model is not in the graph.
        ModelRepositoryError: the model or its ONNX file is missing.
    """
    import onnx

    from bonefrac.export.frcnn import build_frcnn
    from bonefrac.pipeline import read_repository_model

    found = read_repository_model(repository, model)
    graph = onnx.load(str(found.onnx_path)).graph
    values = graph_constants(graph)
    norm = "group" if any(n.op_type == "InstanceNormalization" for n in graph.node) else "batch"
    torch_model = build_frcnn(found.spec, norm=norm)
    loaded = load_named(torch_model, values)
    loaded |= load_folded(torch_model, folded_convolutions(graph, values), loaded)
    missing = [
        k for k in torch_model.state_dict() if k not in loaded and "num_batches_tracked" not in k
    ]
    if missing:
        raise WeightRecoveryError(
            f"{len(missing)} weights of the model are not in {found.onnx_path}: {missing[:5]}"
        )
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
