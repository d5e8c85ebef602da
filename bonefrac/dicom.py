"""DICOM X-rays -> 8-bit grayscale PNG bytes that every bonefrac model accepts.

Applies the modality LUT (rescale slope/intercept), then the VOI LUT or the window centre/width
stored in the file (or the full range when there is none), and inverts MONOCHROME1 so bone is
bright, as a radiology viewer shows it.
"""

from __future__ import annotations

import io

import numpy as np

from bonefrac.processing import ImageDecodeError


def is_dicom(data: bytes) -> bool:
    """Whether the bytes are a DICOM Part 10 file (``DICM`` after the 128-byte preamble)."""
    return len(data) >= 132 and data[128:132] == b"DICM"


def dicom_to_array(data: bytes) -> np.ndarray:
    """A DICOM file's first frame as a ``(H, W)`` uint8 display image.

    Raises:
        ImageDecodeError: not DICOM, no pixel data, or a compression pydicom cannot decode here.
    """
    try:
        import pydicom
    except ImportError:  # pragma: no cover - pydicom is a base dependency
        raise ImageDecodeError("DICOM input needs pydicom: pip install pydicom") from None
    try:
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError:  # pydicom 2
        from pydicom.pixel_data_handlers.util import apply_modality_lut, apply_voi_lut

    try:
        ds = pydicom.dcmread(io.BytesIO(data))
    except Exception as exc:
        raise ImageDecodeError(f"not a readable DICOM file: {exc}") from None
    if "PixelData" not in ds:
        raise ImageDecodeError("the DICOM file has no pixel data (PixelData is missing)")
    try:
        pixels = ds.pixel_array
    except Exception as exc:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "unknown")
        raise ImageDecodeError(
            f"cannot decode the DICOM pixel data (transfer syntax {syntax}): {exc}; export the "
            "image uncompressed or as PNG"
        ) from None
    if pixels.ndim == 4 or (pixels.ndim == 3 and ds.get("SamplesPerPixel", 1) == 1):
        pixels = pixels[0]  # first frame
    if pixels.ndim == 3:  # colour (rare for X-rays): use luminance
        pixels = pixels[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    values = apply_modality_lut(pixels, ds)
    has_window = "WindowCenter" in ds and "WindowWidth" in ds
    if has_window or "VOILUTSequence" in ds:
        values = apply_voi_lut(values, ds, index=0)
    values = np.asarray(values, dtype=np.float64)
    lo, hi = float(values.min()), float(values.max())
    out = (
        np.zeros(values.shape, np.uint8)
        if hi <= lo
        else np.round((values - lo) * (255.0 / (hi - lo))).astype(np.uint8)
    )
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        out = 255 - out
    return out


def dicom_to_png(data: bytes) -> bytes:
    """DICOM bytes -> 8-bit grayscale PNG bytes (see :func:`dicom_to_array`)."""
    import cv2

    ok, encoded = cv2.imencode(".png", dicom_to_array(data))
    if not ok:  # pragma: no cover - cv2 encodes any uint8 image
        raise ImageDecodeError("could not encode the DICOM image as PNG")
    return encoded.tobytes()


def read_image_bytes(data: bytes) -> bytes:
    """Image bytes ready for a bonefrac model: DICOM becomes PNG; anything else is unchanged."""
    return dicom_to_png(data) if is_dicom(data) else data
