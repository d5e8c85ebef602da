"""DICOM X-rays -> 8-bit grayscale PNG bytes that every bonefrac model accepts.

Applies the modality LUT (rescale slope/intercept), then the VOI LUT or the window centre/width
stored in the file (or the full range when there is none), and inverts MONOCHROME1 so bone is
bright, as a radiology viewer shows it. The image size stated in the header is checked before
any pixel is decoded.
"""

from __future__ import annotations

import io

import numpy as np

from bonefrac.pixels import (
    MAX_IMAGE_PIXELS,
    MAX_IMAGE_SIDE,
    ImageDecodeError,
    check_image_size,
    window_to_uint8,
)


def is_dicom(data: bytes) -> bool:
    """Whether the bytes are a DICOM Part 10 file (``DICM`` after the 128-byte preamble)."""
    return len(data) >= 132 and data[128:132] == b"DICM"


def _read_dataset(data: bytes):
    """Parse a DICOM file (the pixel data stays encoded).

    Raises:
        ImageDecodeError: not readable as DICOM, or without pixel data.
    """
    try:
        import pydicom
    except ImportError:  # pragma: no cover - pydicom is a base dependency
        raise ImageDecodeError("DICOM input needs pydicom: pip install pydicom") from None
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
    except Exception as exc:
        raise ImageDecodeError(f"not a readable DICOM file: {exc}") from None
    if "PixelData" not in ds:
        raise ImageDecodeError("the DICOM file has no pixel data (PixelData is missing)")
    return ds


def _first_frame(ds) -> np.ndarray:
    """Decode the first frame only (pydicom 3; pydicom 2 decodes all and the first is kept).

    Raises:
        ImageDecodeError: a compression pydicom cannot decode here.
    """
    if hasattr(ds, "pixel_array_options"):
        ds.pixel_array_options(index=0)
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
    return pixels


def _display_values(pixels: np.ndarray, ds) -> np.ndarray:
    """The modality LUT (rescale slope/intercept), then the VOI LUT or window when the file has
    one."""
    try:
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError:  # pydicom 2
        from pydicom.pixel_data_handlers.util import apply_modality_lut, apply_voi_lut

    values = apply_modality_lut(pixels, ds)
    if ("WindowCenter" in ds and "WindowWidth" in ds) or "VOILUTSequence" in ds:
        values = apply_voi_lut(values, ds, index=0)
    return values


def dicom_to_array(
    data: bytes, *, max_pixels: int = MAX_IMAGE_PIXELS, max_side: int = MAX_IMAGE_SIDE
) -> np.ndarray:
    """A DICOM file's first frame as a ``(H, W)`` uint8 display image.

    Args:
        data: the DICOM file's bytes.
        max_pixels: refuse images with more pixels than this, before decoding them.
        max_side: refuse images with a side longer than this, before decoding them.

    Raises:
        ImageDecodeError: not DICOM, no pixel data, an image over the size limits (checked on
            the header's Rows and Columns, before decoding), or a compression pydicom cannot
            decode here.
    """
    ds = _read_dataset(data)
    check_image_size(
        int(ds.get("Columns", 0) or 0),
        int(ds.get("Rows", 0) or 0),
        kind="DICOM",
        max_pixels=max_pixels,
        max_side=max_side,
    )
    values = _display_values(_first_frame(ds), ds)
    out = window_to_uint8(np.asarray(values, dtype=np.float64))
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
