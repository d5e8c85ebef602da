"""A corpus of bad and unusual inputs, generated (nothing is stored). Each entry says what the
server must do: ``"ok"`` (a valid result) or ``"error"`` (a clear per-request error)."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

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
        from tests.test_dicom import make_dicom

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
