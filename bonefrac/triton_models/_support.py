"""Helpers shared by the Triton Python-backend models in ``model_repository/``.

Pure Python: the ``triton_python_backend_utils`` module exists only inside the backend stub, so the
models pass it in where it is needed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


def model_parameters(model_config: dict[str, Any]) -> dict[str, str]:
    """The ``parameters { key: ... value { string_value: ... } }`` of a model config, as a dict."""
    return {
        key: value.get("string_value", "")
        for key, value in (model_config.get("parameters") or {}).items()
    }


def required_parameter(params: dict[str, str], key: str, *, model: str) -> str:
    """A config parameter that must be present.

    Raises:
        ValueError: naming the model and the missing key.
    """
    value = params.get(key, "")
    if not value:
        raise ValueError(f"model '{model}': config.pbtxt lacks the parameter '{key}'")
    return value


def class_names(params: dict[str, str], *, model: str) -> list[str]:
    """The ``class_names`` parameter: a JSON list of strings."""
    names = json.loads(required_parameter(params, "class_names", model=model))
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names) or not names:
        raise ValueError(f"model '{model}': parameter 'class_names' must be a JSON list of strings")
    return names


def error_response(pb_utils: Any, exc: BaseException, *, model: str) -> Any:
    """An inference response that carries ``exc`` as a per-request error.

    Bad input (``ValueError``, which includes image decode errors) is reported as INVALID_ARG
    with its own message; anything else as INTERNAL with the exception type.
    """
    if isinstance(exc, ValueError):
        code, message = "INVALID_ARG", f"{model}: {exc}"
    else:
        code, message = "INTERNAL", f"{model}: internal error: {type(exc).__name__}: {exc}"
    error_type = pb_utils.TritonError
    code_value = getattr(error_type, code, None)
    error = error_type(message) if code_value is None else error_type(message, code_value)
    return pb_utils.InferenceResponse(output_tensors=[], error=error)


def optional_per_item(
    pb_utils: Any,
    request: Any,
    name: str,
    *,
    batch: int,
    default: float,
    valid: Callable[[float], bool],
) -> list[float]:
    """A per-image scalar input that may be absent (e.g. ``conf_threshold``), one per batch row.

    Raises:
        ValueError: if present with a row count other than ``batch`` or 1, or a value outside
            the range ``valid`` accepts.
    """
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return [default] * batch
    values = tensor.as_numpy().reshape(-1).astype(np.float64)
    if values.size == 1:
        values = np.repeat(values, batch)
    if values.size != batch or not all(np.isfinite(v) and valid(float(v)) for v in values):
        raise ValueError(
            f"input '{name}' must be one number in range per image, got {values.tolist()}"
        )
    return [float(v) for v in values]


def pad_stack(
    arrays: Sequence[np.ndarray], *, tail_shape: tuple[int, ...], dtype: Any, fill: Any = 0
) -> np.ndarray:
    """Stack arrays of different lengths along a new batch axis, padding with ``fill``."""
    longest = max((a.shape[0] for a in arrays), default=0)
    out = np.full((len(arrays), longest, *tail_shape), fill, dtype=dtype)
    for i, a in enumerate(arrays):
        out[i, : a.shape[0]] = a
    return out
