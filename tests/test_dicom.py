"""DICOM input: modality LUT, window, MONOCHROME1 inversion, and clear errors."""

from __future__ import annotations

import io

import numpy as np
import pytest

from bonefrac.benchmarks.bad_inputs import make_dicom
from bonefrac.dicom import dicom_to_array, dicom_to_png, is_dicom, read_image_bytes
from bonefrac.processing import ImageDecodeError, decode_image

RAMP = np.tile(np.linspace(0, 4000, 64).astype(np.uint16), (32, 1))


def test_monochrome2_ramp_is_windowed_to_full_range():
    data = make_dicom(RAMP)
    assert is_dicom(data)
    out = dicom_to_array(data)
    assert out.shape == (32, 64) and out.dtype == np.uint8
    assert out[0, 0] == 0 and out[0, -1] == 255 and np.all(np.diff(out[0].astype(int)) >= 0)


def test_monochrome1_is_inverted():
    out = dicom_to_array(make_dicom(RAMP, photometric="MONOCHROME1"))
    assert out[0, 0] == 255 and out[0, -1] == 0


def test_window_centre_and_width_are_applied():
    out = dicom_to_array(make_dicom(RAMP, window=(1000, 500)))
    # Values below 750 are black, above 1250 white: most of the ramp saturates.
    assert (out[0] == 0).sum() > 5 and (out[0] == 255).sum() > 30


def test_dicom_bytes_become_a_png_the_models_read():
    png = read_image_bytes(make_dicom(RAMP))
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert decode_image(png).shape == (32, 64, 3)
    assert read_image_bytes(b"plain bytes") == b"plain bytes"
    assert dicom_to_png(make_dicom(RAMP))[:4] == b"\x89PNG"


def test_dicom_without_pixel_data_fails_clearly():
    with pytest.raises(ImageDecodeError, match="no pixel data"):
        dicom_to_array(make_dicom(RAMP, with_pixels=False))


def _claiming(data: bytes, *, rows: int, columns: int) -> bytes:
    """The DICOM file with a header that claims another size (its pixel data unchanged)."""
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(data))
    ds.Rows, ds.Columns = rows, columns
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_dicom_over_the_size_limit_is_refused_from_its_header_with_the_limit_stated():
    # 30000 x 30000 claimed, 32 x 64 pixels stored: decoding would fail on the pixel data, so
    # the size error proves the header was checked first.
    huge = _claiming(make_dicom(RAMP), rows=30_000, columns=30_000)
    for read in (dicom_to_array, decode_image, read_image_bytes):
        with pytest.raises(ImageDecodeError, match="30000x30000 pixels; the limit is 20000 pixels"):
            read(huge)


def test_dicom_size_limit_given_to_decode_image_is_applied_and_stated():
    data = make_dicom(RAMP)  # 64 wide, 32 high
    assert decode_image(data, max_side=64).shape == (32, 64, 3)
    with pytest.raises(ImageDecodeError, match="64x32 pixels; the limit is 40 pixels a side"):
        decode_image(data, max_side=40)
    with pytest.raises(ImageDecodeError, match="20000 pixels a side and 0.001 megapixels"):
        dicom_to_array(data, max_pixels=1000)
