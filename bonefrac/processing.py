"""Pre- and post-processing, written once.

Pure numpy plus image decoding (OpenCV, Pillow): no Triton, torch or gRPC imports. The Triton
Python models, the client's in-process reference path, the UI, the evaluator and the benchmarks
all import this module, so what is served is what was trained on and what is measured.

Conventions:
    * Images are ``(H, W, 3)`` uint8 RGB arrays after :func:`decode_image`.
    * Detector inputs are ``(3, S, S)`` float32 RGB in ``[0, 1]`` (channels first).
    * Boxes are ``(n, 4)`` float32 ``[x1, y1, x2, y2]`` pixels.
    * An :class:`InputTransform` maps boxes between detector-input pixels and original-image
      pixels, for YOLO11's letterbox (scale and pad) and Faster R-CNN's shrink (scale only); it
      travels between Triton models as a ``(6,)`` float32 vector (the ensemble tensor
      ``letterbox``, named for the first model family that used it).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from bonefrac.detections import Detections
from bonefrac.dicom import dicom_to_array, is_dicom
from bonefrac.pixels import (
    MAX_IMAGE_PIXELS,
    MAX_IMAGE_SIDE,
    ImageDecodeError,
    check_image_size,
    window_to_uint8,
)

#: Grey used to pad letterboxed images; the value Ultralytics trains with.
PAD_VALUE = 114
#: Formats accepted (Pillow names); anything else is refused before decoding.
_FORMATS = ("JPEG", "PNG", "BMP", "TIFF", "WEBP", "GIF")
#: Ultralytics' class offset for class-aware NMS (``max_wh``).
_CLASS_OFFSET = 7680.0
#: Ultralytics' cap on boxes entering NMS.
_MAX_NMS = 30_000


@dataclass(frozen=True)
class InputTransform:
    """How an original image was placed in a detector input: scaled (YOLO11's letterbox and
    Faster R-CNN's shrink) and padded (the letterbox only; Faster R-CNN's padding is zero).

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
    def from_array(cls, values: np.ndarray) -> InputTransform:
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
                "input transform must be 6 numbers [gain_x, gain_y, pad_left, pad_top, "
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


#: The former name of :class:`InputTransform` (it also carries Faster R-CNN's shrink).
LetterboxTransform = InputTransform


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
    if is_dicom(data):  # windowed to 8 bits, size checked on its header first
        gray = dicom_to_array(data, max_pixels=max_pixels, max_side=max_side)
        return np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=2))
    fmt, width, height = _probe_header(data, max_pixels=max_pixels)
    check_image_size(width, height, kind=fmt, max_pixels=max_pixels, max_side=max_side)
    img = _decode_with_opencv(data)
    if img is None:
        img = _decode_with_pillow(data, fmt)
    if img.ndim != 3 or img.shape[2] != 3 or img.shape[0] < 1 or img.shape[1] < 1:
        raise ImageDecodeError(f"{fmt} image decoded to an unusable array of shape {img.shape}")
    return np.ascontiguousarray(img)


def _probe_header(data: bytes, *, max_pixels: int) -> tuple[str, int, int]:
    """The format, width and height from the header only, before any pixel is allocated.

    Raises:
        ImageDecodeError: not one of the accepted formats, or a corrupt header.
    """
    try:
        with warnings.catch_warnings():
            # Pillow warns (and past 2x its limit raises) on huge images; the size check says more.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=_FORMATS) as probe:
                return str(probe.format), int(probe.size[0]), int(probe.size[1])
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(
            f"image is too large to decode safely ({exc}); the limit is "
            f"{max_pixels / 1e6:g} megapixels: downscale it before sending"
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


def _decode_with_opencv(data: bytes) -> np.ndarray | None:
    """RGB uint8 via OpenCV, or None when OpenCV cannot read the bytes."""
    # ANYDEPTH keeps 16 bits, ANYCOLOR keeps grayscale as one channel; both still apply EXIF
    # orientation (IMREAD_UNCHANGED would not).
    flags = cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR
    img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    if img is None:
        return None
    if img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    code = cv2.COLOR_GRAY2RGB if img.ndim == 2 else cv2.COLOR_BGR2RGB
    return cv2.cvtColor(window_to_uint8(img), code)


def _decode_with_pillow(data: bytes, fmt: str | None) -> np.ndarray:
    """Fallback for files OpenCV cannot read (e.g. some GIF/TIFF variants)."""
    try:
        with Image.open(io.BytesIO(data), formats=_FORMATS) as im:
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = window_to_uint8(np.asarray(im))
                return np.repeat(arr[..., None], 3, axis=2)
            return np.asarray(im.convert("RGB"))
    except Exception as exc:
        raise ImageDecodeError(
            f"corrupt or truncated {fmt or 'image'} data ({_describe(data)}): {exc}"
        ) from None


# --------------------------------------------------------------------------------------------
# YOLO pre-processing: the letterbox Ultralytics trains and predicts with
# --------------------------------------------------------------------------------------------


def letterbox(
    image: np.ndarray, *, size: int | tuple[int, int] = 640
) -> tuple[np.ndarray, InputTransform]:
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
    transform = InputTransform(
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


def preprocess_yolo(data: bytes, *, size: int = 640) -> tuple[np.ndarray, InputTransform]:
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


def unletterbox_boxes(boxes: np.ndarray, transform: InputTransform) -> np.ndarray:
    """Map ``(n, 4)`` xyxy boxes from letterboxed input pixels to original-image pixels, clipped
    (Ultralytics' ``scale_boxes``)."""
    out = boxes.astype(np.float32, copy=True)
    out[:, [0, 2]] -= np.float32(transform.pad_left)
    out[:, [1, 3]] -= np.float32(transform.pad_top)
    out[:, [0, 2]] /= np.float32(transform.gain_x)
    out[:, [1, 3]] /= np.float32(transform.gain_y)
    return clip_boxes(out, height=transform.height, width=transform.width)


def letterbox_boxes(boxes: np.ndarray, transform: InputTransform) -> np.ndarray:
    """Map ``(n, 4)`` xyxy boxes from original-image pixels to letterboxed input pixels."""
    out = boxes.astype(np.float32, copy=True)
    out[:, [0, 2]] *= np.float32(transform.gain_x)
    out[:, [1, 3]] *= np.float32(transform.gain_y)
    out[:, [0, 2]] += np.float32(transform.pad_left)
    out[:, [1, 3]] += np.float32(transform.pad_top)
    return out


#: Candidate detections of one image before NMS: ``(n, 4)`` xyxy boxes in input pixels, ``(n,)``
#: scores and ``(n,)`` class ids (indices of the model's classes).
Candidates = tuple[np.ndarray, np.ndarray, np.ndarray]


def yolo_candidates(raw: np.ndarray, *, num_classes: int, conf_threshold: float) -> Candidates:
    """Raw YOLO11 output for one image -> its candidates: the best class of each anchor, kept
    when its score is above ``conf_threshold``, at most 30,000 (Ultralytics' cap before NMS).

    Args:
        raw: ``(4 + nc, anchors)`` float32: cx, cy, w, h in input pixels, then class scores.

    Raises:
        ValueError: if ``raw`` does not have ``4 + num_classes`` rows.
    """
    raw = np.asarray(raw, dtype=np.float32)
    if raw.ndim != 2 or raw.shape[0] != 4 + num_classes:
        raise ValueError(
            f"YOLO output must have shape (4 + {num_classes} classes, anchors), "
            f"got {tuple(raw.shape)}"
        )
    cls_scores = raw[4:]
    class_ids = cls_scores.argmax(axis=0)
    conf = cls_scores[class_ids, np.arange(cls_scores.shape[1])]
    keep = conf > conf_threshold
    boxes = xywh_to_xyxy(raw[:4, keep].T)
    conf, class_ids = conf[keep], class_ids[keep]
    if conf.shape[0] > _MAX_NMS:
        top = np.argsort(-conf, kind="stable")[:_MAX_NMS]
        boxes, conf, class_ids = boxes[top], conf[top], class_ids[top]
    return boxes, conf, class_ids


def frcnn_candidates(raw: np.ndarray, *, num_classes: int, conf_threshold: float) -> Candidates:
    """Faster R-CNN graph output for one image -> its candidates scoring at least
    ``conf_threshold``.

    Args:
        raw: ``(n, 6)`` float32 rows ``[x1, y1, x2, y2, score, label]`` in input pixels; labels
            count from 1 (0 is torchvision's background).

    Raises:
        ValueError: if ``raw`` is not ``(n, 6)``.
    """
    raw = np.asarray(raw, dtype=np.float32)
    if raw.ndim != 2 or raw.shape[1] != 6:
        raise ValueError(f"Faster R-CNN output must have shape (n, 6), got {tuple(raw.shape)}")
    labels = np.rint(raw[:, 5]).astype(np.int64)
    keep = (raw[:, 4] >= conf_threshold) & (labels >= 1) & (labels <= num_classes)
    return raw[keep, :4], raw[keep, 4], labels[keep] - 1


#: Each model family's reading of its raw detector output (the spec's ``family``).
CANDIDATES: dict[str, Callable[..., Candidates]] = {
    "yolo11": yolo_candidates,
    "frcnn": frcnn_candidates,
}


def postprocess(
    raw: np.ndarray,
    transform: InputTransform,
    *,
    family: str,
    names: Sequence[str],
    conf_threshold: float,
    iou_threshold: float,
    max_det: int,
) -> Detections:
    """Raw detector output for one image -> detections in original pixels.

    The family's candidates (:data:`CANDIDATES`), then class-aware NMS in input pixels (as
    Ultralytics' ``non_max_suppression``; for Faster R-CNN on top of the graph's own), at most
    ``max_det`` boxes, mapped to original pixels and clipped (Ultralytics' ``scale_boxes``).

    Args:
        raw: one image's detector output (see :func:`yolo_candidates`, :func:`frcnn_candidates`).
        transform: the input transform of this image.
        family: ``"yolo11"`` or ``"frcnn"``.
        names: the model's class names (no background).
        conf_threshold: minimum score.
        iou_threshold: NMS IoU threshold.
        max_det: most detections returned.

    Raises:
        ValueError: if ``raw`` does not have the family's shape, or the family is unknown.
    """
    if family not in CANDIDATES:
        known = ", ".join(CANDIDATES)
        raise ValueError(f"no post-processing for family {family!r}; known: {known}")
    boxes, scores, class_ids = CANDIDATES[family](
        raw, num_classes=len(names), conf_threshold=conf_threshold
    )
    if not len(scores):
        return Detections.empty(image_size=(transform.height, transform.width))
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
    transform: InputTransform,
    *,
    names: Sequence[str],
    conf_threshold: float = 0.25,
    iou_threshold: float = 0.7,
    max_det: int = 300,
) -> Detections:
    """:func:`postprocess` of a YOLO11 output with Ultralytics' defaults (``raw``: ``(4 + nc,
    anchors)``).

    Raises:
        ValueError: if ``raw`` does not have ``4 + len(names)`` rows.
    """
    return postprocess(
        raw,
        transform,
        family="yolo11",
        names=names,
        conf_threshold=conf_threshold,
        iou_threshold=iou_threshold,
        max_det=max_det,
    )


# --------------------------------------------------------------------------------------------
# Faster R-CNN: the graph resizes and normalises; we only decode and cap the size
# --------------------------------------------------------------------------------------------


def shrink_to_max_side(image: np.ndarray, *, max_side: int) -> tuple[np.ndarray, InputTransform]:
    """Shrink an image (never enlarge) so its longer side is at most ``max_side``.

    Returns:
        The image and the transform back to original pixels (no padding).
    """
    h, w = image.shape[:2]
    r = min(1.0, max_side / max(h, w))
    new_w, new_h = max(round(w * r), 1), max(round(h * r), 1)
    if (new_w, new_h) != (w, h):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)
    transform = InputTransform(
        gain_x=np.float32(new_w / w),
        gain_y=np.float32(new_h / h),
        pad_left=0,
        pad_top=0,
        height=h,
        width=w,
    )
    return image, transform


def preprocess_frcnn(data: bytes, *, max_side: int = 1333) -> tuple[np.ndarray, InputTransform]:
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
