"""What image decoding (:mod:`bonefrac.processing`) and DICOM reading (:mod:`bonefrac.dicom`)
share: the decode error, the size limits and the windowing of deep images to 8 bits.

Numpy only. Both modules import this one and neither imports the other's internals, so there is
no import cycle between them.
"""

from __future__ import annotations

import numpy as np

#: Largest image accepted, in pixels (width x height). Larger files are refused before decoding
#: (decompression-bomb guard); 100 MP is above any radiograph (a 43 x 43 cm detector at 100 um
#: is 18.5 MP).
MAX_IMAGE_PIXELS = 100_000_000
#: Largest side accepted, in pixels.
MAX_IMAGE_SIDE = 20_000


class ImageDecodeError(ValueError):
    """The bytes are not an image bonefrac can read. The message says what is wrong."""


def check_image_size(width: int, height: int, *, kind: str, max_pixels: int, max_side: int) -> None:
    """Refuse an image by the size its header states, before its pixels are decoded.

    Args:
        width, height: the size in pixels.
        kind: what the image is, for the message (``"PNG"``, ``"DICOM"``).
        max_pixels: most pixels (width x height) accepted.
        max_side: longest side accepted, in pixels.

    Raises:
        ImageDecodeError: an empty size, or one over a limit (the message states the limits).
    """
    if width < 1 or height < 1:
        raise ImageDecodeError(f"{kind} image has an empty size {width}x{height}")
    if width > max_side or height > max_side or width * height > max_pixels:
        raise ImageDecodeError(
            f"{kind} image is {width}x{height} pixels; the limit is {max_side} pixels a side and "
            f"{max_pixels / 1e6:g} megapixels: downscale it before sending"
        )


def window_to_uint8(values: np.ndarray) -> np.ndarray:
    """Window an image linearly from its minimum to its maximum onto 0-255, the default window of
    a radiology viewer. uint8 input is returned unchanged; a flat image becomes black.

    Args:
        values: an array of any shape, any numeric dtype (16-bit, float, ...).

    Returns:
        A uint8 array of the same shape.
    """
    if values.dtype == np.uint8:
        return values
    arr = values.astype(np.float64)
    lo, hi = float(arr.min()), float(arr.max())
    if hi <= lo:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.clip(np.round((arr - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)
