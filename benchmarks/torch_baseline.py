"""What a user would run without bonefrac for Faster R-CNN: torchvision's model in PyTorch, with
the served model's own weights.

The training checkpoint is not kept; the served ONNX graph is. :func:`frcnn_from_onnx` builds
the model with the project's builder from the spec stored beside the graph and reads its weights
back from the graph with the exporter's :func:`bonefrac.export.frcnn.state_dict_from_onnx` (every
weight accounted for, or refused). :func:`check_frcnn_parity` compares the result with ONNX
Runtime on real images (the tests do, on valid X-rays).

Needs torch, torchvision and onnx (the export extras): never imported by the serving path.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def frcnn_from_onnx(repository: str | os.PathLike[str], model: str = "frcnn") -> Any:
    """torchvision's Faster R-CNN in PyTorch (eval mode) with the weights of the served
    ``model``'s ONNX graph in ``repository``, read back by the exporter's own
    :func:`bonefrac.export.frcnn.model_from_onnx`.

    Raises:
        ExportError: the graph's weights do not fit the model its spec builds, or some weight
            of the model is not in the graph.
        ModelRepositoryError: the model or its ONNX file is missing.
    """
    from bonefrac.export.frcnn import model_from_onnx
    from bonefrac.pipeline import read_repository_model

    found = read_repository_model(repository, model)
    return model_from_onnx(found.onnx_path, found.spec)


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
