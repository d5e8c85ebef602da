"""Pre- and post-processing, written once.

Pure numpy plus image decoding (OpenCV, Pillow): no Triton, torch or gRPC imports. The Triton
Python models, the client's in-process reference path, the UI, the evaluator and the benchmarks
all import this module, so what is served is what was trained on and what is measured.

Conventions:
    * Images are ``(H, W, 3)`` uint8 RGB arrays after :func:`decode_image`.
    * Detector inputs are ``(3, S, S)`` float32 RGB in ``[0, 1]`` (channels first).
    * Boxes are ``(n, 4)`` float32 ``[x1, y1, x2, y2]`` pixels.
    * A :class:`LetterboxTransform` maps boxes between letterboxed input pixels and
      original-image pixels; it travels between Triton models as a ``(6,)`` float32 vector.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from bonefrac.detections import Detections

#: Grey used to pad letterboxed images; the value Ultralytics trains with.
PAD_VALUE = 114
#: Largest image accepted, in pixels (width x height). Larger files are refused before decoding
#: (decompression-bomb guard); 100 MP is above any radiograph (a 43 x 43 cm detector at 100 um
#: is 18.5 MP).
MAX_IMAGE_PIXELS = 100_000_000
#: Largest side accepted, in pixels.
MAX_IMAGE_SIDE = 20_000
#: Formats accepted (Pillow names); anything else is refused before decoding.
_FORMATS = ("JPEG", "PNG", "BMP", "TIFF", "WEBP", "GIF")
#: Ultralytics' class offset for class-aware NMS (``max_wh``).
_CLASS_OFFSET = 7680.0
#: Ultralytics' cap on boxes entering NMS.
_MAX_NMS = 30_000


class ImageDecodeError(ValueError):
    """The bytes are not an image bonefrac can read. The message says what is wrong."""


@dataclass(frozen=True)
class LetterboxTransform:
    """How an original image was placed in a letterboxed detector input.

    Attributes:
        gain_x: horizontal scale from original pixels to input pixels (resized width / width).
        gain_y: vertical scale from original pixels to input pixels (resized height / height).
        pad_left: columns of padding added on the left, in input pixels.
        pad_top: rows of padding added on the top, in input pixels.
        height: original image height in pixels.
        width: original image width in pixels.
    """

    gain_x: float
    gain_y: float
    pad_left: int
    pad_top: int
    height: int
    width: int

    def to_array(self) -> np.ndarray:
        """The ``(6,)`` float32 vector that travels between Triton models."""
        return np.array(
            [self.gain_x, self.gain_y, self.pad_left, self.pad_top, self.height, self.width],
            dtype=np.float32,
        )

    @classmethod
    def from_array(cls, values: np.ndarray) -> LetterboxTransform:
        """Inverse of :meth:`to_array`.

        Raises:
            ValueError: if ``values`` is not 6 numbers with positive gains and size.
        """
        v = np.asarray(values, dtype=np.float64).reshape(-1)
        if (
            v.shape[0] != 6
            or not np.isfinite(v).all()
            or min(v[0], v[1]) <= 0
            or min(v[4], v[5]) < 1
        ):
            raise ValueError(
                "letterbox transform must be 6 numbers [gain_x, gain_y, pad_left, pad_top, "
                f"height, width] with positive gains and size, got {v.tolist()}"
            )
        return cls(
            gain_x=float(v[0]),
            gain_y=float(v[1]),
            pad_left=int(v[2]),
            pad_top=int(v[3]),
            height=int(v[4]),
            width=int(v[5]),
        )


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------


def _describe(data: bytes) -> str:
    head = data[:8]
    return f"{len(data)} bytes starting with {head!r}"


def decode_image(
    data: bytes,
    *,
    max_pixels: int = MAX_IMAGE_PIXELS,
    max_side: int = MAX_IMAGE_SIDE,
) -> np.ndarray:
    """Decode encoded image bytes (JPEG, PNG, BMP, TIFF, WebP, GIF, DICOM) to RGB uint8.

    EXIF orientation is applied. Grayscale becomes three equal channels; an alpha channel is
    dropped. 16-bit images (common for radiographs) are windowed linearly from their own minimum
    to their maximum onto 0-255, the default window of a radiology viewer.

    Args:
        data: the encoded file's bytes.
        max_pixels: refuse images with more pixels than this, before decoding them.
        max_side: refuse images with a side longer than this, before decoding them.

    Returns:
        ``(H, W, 3)`` uint8 RGB array.

    Raises:
        ImageDecodeError: empty input, unknown format, corrupt data, or an image too large.
    """
    if not data:
        raise ImageDecodeError(
            "empty input: expected the bytes of a JPEG or PNG image, got 0 bytes"
        )
    if len(data) >= 132 and data[128:132] == b"DICM":  # DICOM: windowed to 8 bits first
        from bonefrac.dicom import dicom_to_array

        gray = dicom_to_array(data)
        h, w = gray.shape[:2]
        if w > max_side or h > max_side or w * h > max_pixels:
            raise ImageDecodeError(f"DICOM image is {w}x{h} pixels; over the size limit")
        return np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=2))
    # Identify the format and size from the header only, before allocating pixels.
    try:
        with warnings.catch_warnings():
            # Pillow warns (and past 2x its limit raises) on huge images; the check below says more.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=_FORMATS) as probe:
                fmt, (width, height) = probe.format, probe.size
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(
            f"image is too large to decode safely ({exc}); the limit is "
            f"{max_pixels / 1e6:.0f} megapixels: downscale it before sending"
        ) from None
    except (UnidentifiedImageError, ImportError):
        # ImportError: a third-party patch of Image.open (Ultralytics adds a HEIF fallback) may
        # look for a plugin when Pillow does not know the bytes; either way it is not our format.
        raise ImageDecodeError(
            f"not a recognised image ({_describe(data)}): send JPEG, PNG, BMP, TIFF, WebP or "
            "GIF bytes"
        ) from None
    except Exception as exc:  # Pillow raises many types on malformed headers
        raise ImageDecodeError(f"corrupt image header ({_describe(data)}): {exc}") from None
    if width < 1 or height < 1:
        raise ImageDecodeError(f"{fmt} image has an empty size {width}x{height}")
    if width > max_side or height > max_side or width * height > max_pixels:
        raise ImageDecodeError(
            f"{fmt} image is {width}x{height} pixels; the limit is {max_side} pixels a side and "
            f"{max_pixels / 1e6:.0f} megapixels: downscale it before sending"
        )

    buf = np.frombuffer(data, dtype=np.uint8)
    # ANYDEPTH keeps 16 bits, ANYCOLOR keeps grayscale as one channel; both still apply EXIF
    # orientation (IMREAD_UNCHANGED would not).
    img = cv2.imdecode(buf, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    if img is None:
        img = _decode_with_pillow(data, fmt)
    else:
        if img.ndim == 3 and img.shape[2] == 4:
            img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
        if img.ndim == 2:
            img = cv2.cvtColor(_to_uint8(img), cv2.COLOR_GRAY2RGB)
        else:
            img = cv2.cvtColor(_to_uint8(img), cv2.COLOR_BGR2RGB)
    if img.ndim != 3 or img.shape[2] != 3 or img.shape[0] < 1 or img.shape[1] < 1:
        raise ImageDecodeError(f"{fmt} image decoded to an unusable array of shape {img.shape}")
    return np.ascontiguousarray(img)


def _decode_with_pillow(data: bytes, fmt: str | None) -> np.ndarray:
    """Fallback for files OpenCV cannot read (e.g. some GIF/TIFF variants)."""
    from PIL import ImageOps

    try:
        with Image.open(io.BytesIO(data), formats=_FORMATS) as im:
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = _to_uint8(np.asarray(im))
                return np.repeat(arr[..., None], 3, axis=2)
            return np.asarray(im.convert("RGB"))
    except Exception as exc:
        raise ImageDecodeError(
            f"corrupt or truncated {fmt or 'image'} data ({_describe(data)}): {exc}"
        ) from None


def _to_uint8(img: np.ndarray) -> np.ndarray:
    """Window a 16-bit or float image linearly from its min to its max onto uint8."""
    if img.dtype == np.uint8:
        return img
    arr = img.astype(np.float64)
    lo, hi = float(arr.min()), float(arr.max())
    if hi <= lo:
        return np.zeros(img.shape, dtype=np.uint8)
    return np.clip(np.round((arr - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# YOLO pre-processing: the letterbox Ultralytics trains and predicts with
# --------------------------------------------------------------------------------------------


def letterbox(
    image: np.ndarray, *, size: int | tuple[int, int] = 640
) -> tuple[np.ndarray, LetterboxTransform]:
    """Resize keeping the aspect ratio and pad to ``size`` exactly as Ultralytics'
    ``LetterBox(auto=False, scaleup=True, center=True)`` does (bilinear resize, grey 114 border).

    Args:
        image: ``(H, W, 3)`` uint8 image.
        size: output side, or ``(height, width)``.

    Returns:
        The ``(size_h, size_w, 3)`` uint8 letterboxed image and its transform.
    """
    new_h, new_w = (size, size) if isinstance(size, int) else size
    h, w = image.shape[:2]
    r = min(new_h / h, new_w / w)
    unpad_w, unpad_h = max(round(w * r), 1), max(round(h * r), 1)
    dw, dh = (new_w - unpad_w) / 2, (new_h - unpad_h) / 2
    if (w, h) != (unpad_w, unpad_h):
        image = cv2.resize(image, (unpad_w, unpad_h), interpolation=cv2.INTER_LINEAR)
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    out = cv2.copyMakeBorder(
        image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3
    )
    transform = LetterboxTransform(
        gain_x=np.float32(unpad_w / w),
        gain_y=np.float32(unpad_h / h),
        pad_left=left,
        pad_top=top,
        height=h,
        width=w,
    )
    return out, transform


def to_input_tensor(image: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB -> ``(3, H, W)`` float32 in ``[0, 1]``."""
    return np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32) / np.float32(255.0)


def preprocess_yolo(data: bytes, *, size: int = 640) -> tuple[np.ndarray, LetterboxTransform]:
    """Encoded bytes -> ``(3, size, size)`` float32 detector input and its letterbox transform.

    Raises:
        ImageDecodeError: if the bytes are not a readable image.
    """
    boxed, transform = letterbox(decode_image(data), size=size)
    return to_input_tensor(boxed), transform


# --------------------------------------------------------------------------------------------
# Post-processing
# --------------------------------------------------------------------------------------------


def xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """``(n, 4)`` centre-x, centre-y, width, height -> ``(n, 4)`` x1, y1, x2, y2."""
    out = np.empty_like(boxes)
    half_w, half_h = boxes[:, 2] / 2, boxes[:, 3] / 2
    out[:, 0] = boxes[:, 0] - half_w
    out[:, 1] = boxes[:, 1] - half_h
    out[:, 2] = boxes[:, 0] + half_w
    out[:, 3] = boxes[:, 1] + half_h
    return out


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one ``(4,)`` xyxy box with ``(n, 4)`` xyxy boxes -> ``(n,)``."""
    ix1 = np.maximum(box[0], boxes[:, 0])
    iy1 = np.maximum(box[1], boxes[:, 1])
    ix2 = np.minimum(box[2], boxes[:, 2])
    iy2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, *, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression, as ``torchvision.ops.nms``.

    Args:
        boxes: ``(n, 4)`` xyxy boxes.
        scores: ``(n,)`` scores.
        iou_threshold: a box is dropped when its IoU with a kept, higher-scoring box is above this.

    Returns:
        ``(k,)`` int64 indices of the kept boxes, highest score first.
    """
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        if order.size == 1:
            break
        rest = order[1:]
        order = rest[box_iou(boxes[i], boxes[rest]) <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def batched_nms(
    boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, *, iou_threshold: float
) -> np.ndarray:
    """Class-aware NMS: boxes of different classes never suppress each other."""
    if boxes.shape[0] == 0:
        return np.zeros((0,), dtype=np.int64)
    offset = class_ids.astype(boxes.dtype)[:, None] * np.asarray(_CLASS_OFFSET, boxes.dtype)
    return nms(boxes + offset, scores, iou_threshold=iou_threshold)


def clip_boxes(boxes: np.ndarray, *, height: int, width: int) -> np.ndarray:
    """Clip ``(n, 4)`` xyxy boxes to an image of ``height`` x ``width`` pixels (in place)."""
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
    return boxes


def unletterbox_boxes(boxes: np.ndarray, transform: LetterboxTransform) -> np.ndarray:
    """Map ``(n, 4)`` xyxy boxes from letterboxed input pixels to original-image pixels, clipped
    (Ultralytics' ``scale_boxes``)."""
    out = boxes.astype(np.float32, copy=True)
    out[:, [0, 2]] -= np.float32(transform.pad_left)
    out[:, [1, 3]] -= np.float32(transform.pad_top)
    out[:, [0, 2]] /= np.float32(transform.gain_x)
    out[:, [1, 3]] /= np.float32(transform.gain_y)
    return clip_boxes(out, height=transform.height, width=transform.width)


def letterbox_boxes(boxes: np.ndarray, transform: LetterboxTransform) -> np.ndarray:
    """Map ``(n, 4)`` xyxy boxes from original-image pixels to letterboxed input pixels."""
    out = boxes.astype(np.float32, copy=True)
    out[:, [0, 2]] *= np.float32(transform.gain_x)
    out[:, [1, 3]] *= np.float32(transform.gain_y)
    out[:, [0, 2]] += np.float32(transform.pad_left)
    out[:, [1, 3]] += np.float32(transform.pad_top)
    return out


def _nms_in_original_pixels(
    boxes: np.ndarray,
    scores: np.ndarray,
    class_ids: np.ndarray,
    transform: LetterboxTransform,
    *,
    names: Sequence[str],
    iou_threshold: float,
    max_det: int,
) -> Detections:
    """Class-aware NMS in input pixels, then the kept boxes mapped to original pixels."""
    idx = batched_nms(boxes, scores, class_ids, iou_threshold=iou_threshold)[:max_det]
    return Detections.from_arrays(
        xyxy=unletterbox_boxes(boxes[idx], transform),
        scores=scores[idx],
        class_ids=class_ids[idx],
        names=names,
        image_size=(transform.height, transform.width),
    )


def postprocess_yolo(
    raw: np.ndarray,
    transform: LetterboxTransform,
    *,
    names: Sequence[str],
    conf_threshold: float = 0.25,
    iou_threshold: float = 0.7,
    max_det: int = 300,
) -> Detections:
    """Raw YOLO11 output for one image -> detections in original pixels.

    Follows Ultralytics' ``non_max_suppression`` (best class per anchor, class-aware NMS, at
    most ``max_det`` boxes) and ``scale_boxes``.

    Args:
        raw: ``(4 + nc, anchors)`` float32: cx, cy, w, h in input pixels, then class scores.
        transform: the letterbox transform of this image.
        names: the model's class names (``nc`` of them).
        conf_threshold: keep boxes whose best class score is above this.
        iou_threshold: NMS IoU threshold.
        max_det: most detections returned.

    Raises:
        ValueError: if ``raw`` does not have ``4 + len(names)`` rows.
    """
    raw = np.asarray(raw, dtype=np.float32)
    nc = len(names)
    if raw.ndim != 2 or raw.shape[0] != 4 + nc:
        raise ValueError(
            f"YOLO output must have shape (4 + {nc} classes, anchors), got {tuple(raw.shape)}"
        )
    size = (transform.height, transform.width)
    cls_scores = raw[4:]
    class_ids = cls_scores.argmax(axis=0)
    conf = cls_scores[class_ids, np.arange(cls_scores.shape[1])]
    keep = conf > conf_threshold
    if not keep.any():
        return Detections.empty(image_size=size)
    boxes = xywh_to_xyxy(raw[:4, keep].T)
    conf, class_ids = conf[keep], class_ids[keep]
    if conf.shape[0] > _MAX_NMS:
        top = np.argsort(-conf, kind="stable")[:_MAX_NMS]
        boxes, conf, class_ids = boxes[top], conf[top], class_ids[top]
    return _nms_in_original_pixels(
        boxes, conf, class_ids, transform, names=names, iou_threshold=iou_threshold, max_det=max_det
    )


# --------------------------------------------------------------------------------------------
# Faster R-CNN: the graph resizes and normalises; we only decode and cap the size
# --------------------------------------------------------------------------------------------


def shrink_to_max_side(
    image: np.ndarray, *, max_side: int
) -> tuple[np.ndarray, LetterboxTransform]:
    """Shrink an image (never enlarge) so its longer side is at most ``max_side``.

    Returns:
        The image and the transform back to original pixels (no padding).
    """
    h, w = image.shape[:2]
    r = min(1.0, max_side / max(h, w))
    new_w, new_h = max(round(w * r), 1), max(round(h * r), 1)
    if (new_w, new_h) != (w, h):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)
    transform = LetterboxTransform(
        gain_x=np.float32(new_w / w),
        gain_y=np.float32(new_h / h),
        pad_left=0,
        pad_top=0,
        height=h,
        width=w,
    )
    return image, transform


def preprocess_frcnn(data: bytes, *, max_side: int = 1333) -> tuple[np.ndarray, LetterboxTransform]:
    """Encoded bytes -> ``(3, H, W)`` float32 RGB in ``[0, 1]`` for a torchvision Faster R-CNN
    graph (which resizes and normalises itself), and the transform to original pixels.

    Raises:
        ImageDecodeError: if the bytes are not a readable image.
    """
    image, transform = shrink_to_max_side(decode_image(data), max_side=max_side)
    return to_input_tensor(pad_thin_image(image)), transform


def pad_thin_image(image: np.ndarray, *, min_side: int = 32, max_aspect: float = 8.0) -> np.ndarray:
    """Pad the bottom/right of tiny or very elongated images with black so that each side is at
    least ``min_side`` and at least ``1 / max_aspect`` of the longer one. Boxes keep their
    coordinates (the origin does not move); the Faster R-CNN graph cannot resize a 1-pixel-high
    sliver (its scale rounds to zero)."""
    h, w = image.shape[:2]
    need = max(min_side, int(np.ceil(max(h, w) / max_aspect)))
    if h >= need and w >= need:
        return image
    out = np.zeros((max(h, need), max(w, need), 3), dtype=image.dtype)
    out[:h, :w] = image
    return out


def postprocess_frcnn(
    raw: np.ndarray,
    transform: LetterboxTransform,
    *,
    names: Sequence[str],
    conf_threshold: float = 0.05,
    iou_threshold: float = 0.5,
    max_det: int = 100,
) -> Detections:
    """Faster R-CNN graph output for one image -> detections in original pixels.

    Args:
        raw: ``(n, 6)`` float32 rows ``[x1, y1, x2, y2, score, label]`` in input pixels; labels
            count from 1 (0 is torchvision's background).
        transform: the shrink transform of this image.
        names: the model's class names (without background).
        conf_threshold: keep detections scoring at least this.
        iou_threshold: class-aware NMS on top of the graph's own (a no-op at the graph's 0.5).
        max_det: most detections returned.

    Raises:
        ValueError: if ``raw`` is not ``(n, 6)``.
    """
    raw = np.asarray(raw, dtype=np.float32)
    if raw.ndim != 2 or raw.shape[1] != 6:
        raise ValueError(f"Faster R-CNN output must have shape (n, 6), got {tuple(raw.shape)}")
    size = (transform.height, transform.width)
    labels = np.rint(raw[:, 5]).astype(np.int64)
    keep = (raw[:, 4] >= conf_threshold) & (labels >= 1) & (labels <= len(names))
    if not keep.any():
        return Detections.empty(image_size=size)
    boxes, scores, class_ids = raw[keep, :4], raw[keep, 4], labels[keep] - 1
    return _nms_in_original_pixels(
        boxes,
        scores,
        class_ids,
        transform,
        names=names,
        iou_threshold=iou_threshold,
        max_det=max_det,
    )
