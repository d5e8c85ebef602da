"""Pictures of the page: the model's boxes in class colours, the labelled boxes dashed in white,
images side by side, the colour legend. Pure numpy and OpenCV on ``(H, W, 3)`` uint8 RGB images."""

from __future__ import annotations

import html
from collections.abc import Sequence

import cv2
import numpy as np

from bonefrac.detections import Detections

#: Colour per class index (RGB), chosen to stay distinct on grey X-rays.
PALETTE = [
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
]
#: Labelled boxes: white dashes, with a black under-stroke so they show on bright bone too.
LABEL_COLOUR = (255, 255, 255)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def colour(class_id: int) -> tuple[int, int, int]:
    return PALETTE[int(class_id) % len(PALETTE)]


def _sizes(image: np.ndarray) -> tuple[float, int, float]:
    """(scale, line thickness, font scale) for an image: about 3 px lines per 1000 px."""
    scale = max(image.shape[:2]) / 1000.0
    return scale, max(2, int(round(3 * scale))), max(0.5, 0.7 * scale)


def _tag(
    out: np.ndarray,
    text: str,
    box: tuple[int, int, int, int],
    *,
    fill: tuple[int, int, int],
    below: bool = False,
) -> None:
    """A filled text tag at a box: above its top edge (below its bottom with ``below``), moved
    inside the image when there is no room."""
    _, thick, font = _sizes(out)
    x1, y1, _, y2 = box
    (tw, th), base = cv2.getTextSize(text, _FONT, font, max(1, thick // 2))
    ty = y2 + th + 6 if below else y1 - 4
    if ty - th - 6 < 0 or ty + base > out.shape[0]:
        ty = y1 + th + 6 if below else y2 + th + 4
        ty = min(max(ty, th + 6), out.shape[0] - base - 1)
    cv2.rectangle(out, (x1, ty - th - 4), (x1 + tw + 4, ty + base - 2), fill, -1)
    cv2.putText(
        out, text, (x1 + 2, ty - 2), _FONT, font, (0, 0, 0), max(1, thick // 2), cv2.LINE_AA
    )


def _dashed_rectangle(
    out: np.ndarray, box: tuple[int, int, int, int], colour_: tuple[int, int, int], thick: int
) -> None:
    x1, y1, x2, y2 = box
    dash = max(6, 4 * thick)
    corners = [(x1, y1), (x2, y1), (x2, y2), (x1, y2), (x1, y1)]
    for (ax, ay), (bx, by) in zip(corners, corners[1:]):
        length = max(abs(bx - ax), abs(by - ay))
        for start in range(0, length, 2 * dash):
            end = min(start + dash, length)
            p = (ax + (bx - ax) * start // max(length, 1), ay + (by - ay) * start // max(length, 1))
            q = (ax + (bx - ax) * end // max(length, 1), ay + (by - ay) * end // max(length, 1))
            cv2.line(out, p, q, colour_, thick, cv2.LINE_AA)


def draw_labels(image: np.ndarray, boxes: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """Labelled boxes (``(n, 4)`` xyxy pixels) as white dashes with a ``label: class`` tag below,
    on a copy of the image."""
    out = image.copy()
    _, thick, _ = _sizes(out)
    for box, name in zip(np.asarray(boxes).reshape(-1, 4), names):
        corners = tuple(int(round(v)) for v in box)
        cv2.rectangle(out, corners[:2], corners[2:], (0, 0, 0), thick + 2)
        _dashed_rectangle(out, corners, LABEL_COLOUR, thick)
        _tag(out, f"label: {name}", corners, fill=LABEL_COLOUR, below=True)
    return out


def draw_detections(
    image: np.ndarray,
    det: Detections,
    *,
    title: str = "",
    hits: Sequence[bool] | None = None,
) -> np.ndarray:
    """Boxes in class colours with ``class score`` tags (``HIT`` added where ``hits`` says the
    detection hit a label) on a copy of an ``(H, W, 3)`` RGB image; ``title`` in a bar above."""
    out = image.copy()
    scale, thick, font = _sizes(out)
    marks = list(hits) if hits is not None else [False] * len(det)
    # Lowest score first: where tags overlap, the higher-scored finding's tag stays readable.
    for i in np.argsort(det.scores, kind="stable"):
        corners = tuple(int(round(v)) for v in det.xyxy[i])
        fill = colour(det.class_ids[i])
        cv2.rectangle(out, corners[:2], corners[2:], fill, thick)
        tag = f"{det.class_names[i]} {det.scores[i]:.2f}{' HIT' if marks[i] else ''}"
        _tag(out, tag, corners, fill=fill)
    if title:
        bar = np.full((int(40 * max(1.0, scale)), out.shape[1], 3), 32, np.uint8)
        cv2.putText(
            bar, title, (8, bar.shape[0] - 12), _FONT, font, (255, 255, 255), max(1, thick // 2)
        )
        out = np.concatenate([bar, out], axis=0)
    return out


def side_by_side(images: Sequence[np.ndarray]) -> np.ndarray:
    """Images next to each other on one canvas (heights padded), with a gap."""
    height = max(i.shape[0] for i in images)
    gap = np.full((height, 16, 3), 255, np.uint8)
    parts = []
    for i, img in enumerate(images):
        if img.shape[0] < height:
            pad = np.full((height - img.shape[0], img.shape[1], 3), 255, np.uint8)
            img = np.concatenate([img, pad], axis=0)
        parts += [gap, img] if i else [img]
    return np.concatenate(parts, axis=1)


def _swatch(style: str, text: str) -> str:
    return (
        f'<span style="display:inline-block;margin:2px 10px 2px 0">'
        f'<span style="display:inline-block;width:14px;height:14px;{style};'
        f'vertical-align:middle;margin-right:4px"></span>{html.escape(text)}</span>'
    )


def legend_html(names: Sequence[str]) -> str:
    """The class colours, and the labelled boxes' style."""
    items = "".join(
        _swatch(f"background:rgb{colour(i)};border:1px solid #333", n) for i, n in enumerate(names)
    )
    label = _swatch("background:#666;border:2px dashed white", "label (dataset's box)")
    return f'<div class="bf-legend">{items}{label}</div>'
