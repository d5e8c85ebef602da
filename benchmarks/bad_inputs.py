"""A corpus of bad and unusual inputs, generated (nothing is stored), and how to send it.

Each entry says what the server must do: ``"ok"`` (a valid result), ``"error"`` (a clear
per-request error) or ``"ok_or_error"``. :func:`send_corpus` sends it through a client and
records what happened; :class:`BackgroundLoad` keeps good requests going meanwhile. Used by
``tests/test_bad_input.py`` and the reliability record (``bonefrac.benchmarks.reliability``).
"""

from __future__ import annotations

import io
import struct
import threading
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image


def _pil(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _png_claiming(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body))
            + kind
            + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 99))
        + chunk(b"IEND", b"")
    )


def make_dicom(
    pixels: np.ndarray,
    *,
    photometric="MONOCHROME2",
    window=None,
    slope=1.0,
    intercept=0.0,
    with_pixels=True,
) -> bytes:
    """A digital X-ray DICOM file of ``pixels`` (2-D, 12 bits stored in 16), built with pydicom."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # digital X-ray
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    if with_pixels:
        ds.PixelData = pixels.astype(np.uint16).tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def corpus(xray: Path) -> dict[str, tuple[str, Callable[[], bytes]]]:
    """name -> (expected, bytes factory). ``xray`` is a real JPEG X-ray to damage."""
    jpeg = xray.read_bytes()
    gray = np.asarray(Image.open(io.BytesIO(jpeg)).convert("L"))
    rgb = Image.fromarray(gray).convert("RGB")
    rng = np.random.default_rng(0)

    def flipped() -> bytes:
        b = bytearray(jpeg)
        for i in rng.integers(len(b) // 3, len(b) - 10, 200):
            b[i] ^= 0xFF
        return bytes(b)

    def png16() -> bytes:
        return cv2.imencode(".png", (gray.astype(np.uint16) * 16))[1].tobytes()

    def exif_rotated() -> bytes:
        exif = Image.Exif()
        exif[0x0112] = 6
        return _pil(rgb, "JPEG", exif=exif.tobytes())

    def animated_gif() -> bytes:
        frames = [Image.fromarray(np.roll(gray, k, axis=1)).convert("P") for k in (0, 20)]
        buf = io.BytesIO()
        frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
        return buf.getvalue()

    def dicom(photometric: str, with_pixels: bool = True) -> Callable[[], bytes]:
        return lambda: make_dicom(
            gray.astype(np.uint16) * 16, photometric=photometric, with_pixels=with_pixels
        )

    return {
        "empty": ("error", lambda: b""),
        "one byte": ("error", lambda: b"\xff"),
        "random 1 KB": ("error", lambda: rng.bytes(1024)),
        "random 2 MB": ("error", lambda: rng.bytes(2 << 20)),
        "text as .jpg": ("error", lambda: b"this is a radiology report, not an image\n" * 20),
        "pdf": ("error", lambda: b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj <<>> endobj\n"),
        "svg": ("error", lambda: b'<svg xmlns="http://www.w3.org/2000/svg"><rect/></svg>'),
        "heic header": ("error", lambda: b"\x00\x00\x00\x18ftypheic" + rng.bytes(500)),
        "jpeg first 100 bytes": ("error", lambda: jpeg[:100]),
        "jpeg half": ("ok_or_error", lambda: jpeg[: len(jpeg) // 2]),
        "jpeg bytes flipped": ("ok_or_error", flipped),
        "jpeg with trailing garbage": ("ok", lambda: jpeg + rng.bytes(4096)),
        "png truncated": ("error", lambda: _pil(rgb, "PNG")[:300]),
        "png claims 20000x20000": ("error", lambda: _png_claiming(20_000, 20_000)),
        "png claims 60000x10": ("error", lambda: _png_claiming(60_000, 10)),
        "png 16-bit gray": ("ok", png16),
        "png 8-bit gray": ("ok", lambda: _pil(Image.fromarray(gray), "PNG")),
        "png rgba": ("ok", lambda: _pil(rgb.convert("RGBA"), "PNG")),
        "png gray+alpha": ("ok", lambda: _pil(Image.fromarray(gray).convert("LA"), "PNG")),
        "png palette": ("ok", lambda: _pil(rgb.convert("P"), "PNG")),
        "png 1-bit": ("ok", lambda: _pil(Image.fromarray(gray).convert("1"), "PNG")),
        "jpeg cmyk": ("ok", lambda: _pil(rgb.convert("CMYK"), "JPEG")),
        "jpeg exif-rotated": ("ok", exif_rotated),
        "gif": ("ok", lambda: _pil(rgb.convert("P"), "GIF")),
        "gif animated": ("ok", animated_gif),
        "tiff": ("ok", lambda: _pil(rgb, "TIFF")),
        "tiff 16-bit": (
            "ok",
            lambda: cv2.imencode(".tiff", gray.astype(np.uint16) * 16)[1].tobytes(),
        ),
        "webp": ("ok", lambda: _pil(rgb, "WEBP")),
        "bmp": ("ok", lambda: _pil(rgb, "BMP")),
        "1x1": ("ok", lambda: _pil(Image.new("RGB", (1, 1), (128, 128, 128)), "PNG")),
        "1x4000 sliver": ("ok", lambda: _pil(Image.new("L", (1, 4000), 90), "PNG")),
        "all black": ("ok", lambda: _pil(Image.new("L", (512, 512), 0), "PNG")),
        "dicom monochrome2": ("ok", dicom("MONOCHROME2")),
        "dicom monochrome1": ("ok", dicom("MONOCHROME1")),
        "dicom without pixels": ("error", dicom("MONOCHROME2", with_pixels=False)),
    }


@dataclass(frozen=True)
class Outcome:
    """What the server did with one corpus input.

    Attributes:
        name, expected: the corpus entry.
        outcome: ``"ok"`` (a result), ``"error"`` (``InvalidInputError``) or ``"failed"`` (any
            other error: never acceptable).
        message: the error message ("" for a result).
        image_size: ``(width, height)`` the server reported for a result.
    """

    name: str
    expected: str
    outcome: str
    message: str = ""
    image_size: tuple[int, int] | None = None

    @property
    def as_expected(self) -> bool:
        if self.expected == "ok_or_error":
            return self.outcome in ("ok", "error")
        return self.outcome == self.expected

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "image_size": list(self.image_size) if self.image_size else None}


def send_corpus(client, items: dict[str, tuple[str, Callable[[], bytes]]]) -> list[Outcome]:
    """Send every corpus entry through ``client`` (a ``DetectionClient``) once, in order."""
    from bonefrac.client import ClientError, InvalidInputError

    outcomes = []
    for name, (expected, make) in items.items():
        try:
            det = client.detect(make())
            size = (int(det.image_size[0]), int(det.image_size[1]))
            outcomes.append(Outcome(name, expected, "ok", image_size=size))
        except InvalidInputError as exc:
            outcomes.append(Outcome(name, expected, "error", str(exc)))
        except ClientError as exc:
            outcomes.append(Outcome(name, expected, "failed", f"{type(exc).__name__}: {exc}"))
    return outcomes


class BackgroundLoad:
    """Good requests in a loop on another thread, counting successes and failures.

    Use as a context manager: the loop starts on entry and stops on exit.
    """

    def __init__(self, url: str, data: bytes, model: str) -> None:
        from bonefrac.client import DetectionClient

        self.client = DetectionClient(url, model=model, timeout_s=60)
        self.data, self.ok = data, 0
        self.failures: list[Exception] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.client.detect(self.data)
                self.ok += 1
            except Exception as exc:  # recorded; callers check there are none
                self.failures.append(exc)

    def __enter__(self) -> BackgroundLoad:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=120)
