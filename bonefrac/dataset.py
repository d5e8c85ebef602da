"""YOLO-format datasets: reading labels (polygons or boxes), class protocols, COCO conversion.

Pure Python and numpy (Pillow reads image sizes from headers); used by the evaluator, the trainers
and the UI.

Label files hold one object per line, class id first, coordinates normalised to ``[0, 1]``:
``cls x1 y1 x2 y2 ... xn yn`` (a polygon, 3 or more vertices) or ``cls cx cy w h`` (a box).
An empty label file means an image without fracture.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bonefrac.errors import BonefracError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class DatasetError(BonefracError):
    """A dataset file is missing or malformed; the message names the file (and line)."""


# --------------------------------------------------------------------------------------------
# Class protocols
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Protocol:
    """How the dataset's classes are scored.

    Attributes:
        name: ``7class``, ``6class`` or ``agnostic``.
        names: the protocol's class names, in id order.
        mapping: dataset class name -> protocol class name.
    """

    name: str
    names: tuple[str, ...]
    mapping: dict[str, str] = field(hash=False)

    def map_names(self, names: Sequence[str]) -> np.ndarray:
        """Protocol class ids of class names (dataset or model names), ``(n,)`` int64.

        Raises:
            DatasetError: if a name is not known to the protocol.
        """
        ids = {n: i for i, n in enumerate(self.names)}
        try:
            return np.array([ids[self.mapping[n]] for n in names], dtype=np.int64)
        except KeyError as exc:
            raise DatasetError(
                f"class {exc.args[0]!r} is not a class of protocol '{self.name}' "
                f"(known: {sorted(self.mapping)})"
            ) from None


#: The published protocol for this data merges this class into the next.
_MERGE_6CLASS = {"humerus fracture": "humerus"}
PROTOCOLS = ("7class", "6class", "agnostic")


def make_protocol(name: str, dataset_names: Sequence[str]) -> Protocol:
    """Build a class protocol over a dataset's class names.

    * ``7class``: the classes as labelled.
    * ``6class``: ``humerus fracture`` merged into ``humerus`` (the published protocol).
    * ``agnostic``: every class is ``fracture``.

    Raises:
        DatasetError: unknown protocol, or ``6class`` on a dataset without those classes.
    """
    names = list(dataset_names)
    if name == "7class":
        return Protocol(name, tuple(names), {n: n for n in names})
    if name == "6class":
        missing = [n for pair in _MERGE_6CLASS.items() for n in pair if n not in names]
        if missing:
            raise DatasetError(f"protocol '6class' needs the classes {missing}, not in {names}")
        merged = {n: _MERGE_6CLASS.get(n, n) for n in names}
        return Protocol(name, tuple(n for n in names if n not in _MERGE_6CLASS), merged)
    if name == "agnostic":
        return Protocol(name, ("fracture",), {n: "fracture" for n in names})
    raise DatasetError(f"unknown protocol {name!r}; choose one of {', '.join(PROTOCOLS)}")


# --------------------------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------------------------


def parse_label_file(path: Path, *, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Read a YOLO label file.

    Returns:
        ``(n, 4)`` float64 normalised xyxy boxes (polygons become their bounding boxes, clipped to
        the image) and ``(n,)`` int64 class ids.

    Raises:
        DatasetError: naming the file and line of a malformed label.
    """
    boxes, classes = [], []
    text = path.read_text() if path.is_file() else ""
    for lineno, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        where = f"{path}:{lineno}"
        try:
            cls = int(parts[0])
            values = np.array([float(v) for v in parts[1:]], dtype=np.float64)
        except ValueError:
            raise DatasetError(f"{where}: expected a class id and numbers, got {line!r}") from None
        if not 0 <= cls < num_classes:
            raise DatasetError(f"{where}: class id {cls} is outside 0..{num_classes - 1}")
        if not np.isfinite(values).all():
            raise DatasetError(f"{where}: coordinates must be finite numbers")
        if values.size == 4:
            cx, cy, w, h = values
            box = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
        elif values.size >= 6 and values.size % 2 == 0:
            xs, ys = values[0::2], values[1::2]
            box = [xs.min(), ys.min(), xs.max(), ys.max()]
        else:
            raise DatasetError(
                f"{where}: expected 'cls cx cy w h' or a polygon 'cls x1 y1 ... xn yn' with 3 or "
                f"more vertices, got {values.size} coordinates"
            )
        box = np.clip(np.array(box), 0.0, 1.0)
        if box[2] <= box[0] or box[3] <= box[1]:
            raise DatasetError(f"{where}: the object has no area after clipping to the image")
        boxes.append(box)
        classes.append(cls)
    return (np.array(boxes, dtype=np.float64).reshape(-1, 4), np.array(classes, dtype=np.int64))


def image_size(path: Path) -> tuple[int, int]:
    """``(height, width)`` from the image header, after EXIF orientation."""
    from PIL import Image

    with Image.open(path) as im:
        width, height = im.size
        if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):
            width, height = height, width
    return height, width


# --------------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One labelled image.

    Attributes:
        image: the image file.
        height, width: image size in pixels.
        boxes: ``(n, 4)`` float32 xyxy boxes in pixels.
        class_ids: ``(n,)`` int64 dataset class ids.
    """

    image: Path
    height: int
    width: int
    boxes: np.ndarray
    class_ids: np.ndarray


@dataclass(frozen=True)
class YoloDataset:
    """A YOLO-format dataset described by a ``data.yaml``.

    Attributes:
        yaml_path: the ``data.yaml``.
        root: the folder split paths are relative to.
        names: class names in id order.
        splits: split name -> images folder.
    """

    yaml_path: Path
    root: Path
    names: tuple[str, ...]
    splits: dict[str, Path] = field(hash=False)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> YoloDataset:
        """Read a ``data.yaml`` (``path:`` optional; split paths absolute or relative).

        Raises:
            DatasetError: missing file, no class names, or no split.
        """
        import yaml

        path = Path(path).resolve()
        if not path.is_file():
            raise DatasetError(f"dataset file {path} does not exist")
        try:
            spec = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise DatasetError(f"{path} is not valid YAML: {exc}") from None
        names = spec.get("names")
        if isinstance(names, dict):
            names = [names[k] for k in sorted(names)]
        if not isinstance(names, list) or not names:
            raise DatasetError(f"{path} has no 'names' list of classes")
        root = Path(spec.get("path") or path.parent)
        if not root.is_absolute():
            root = (path.parent / root).resolve()
        splits = {}
        for split in ("train", "val", "valid", "test"):
            value = spec.get(split)
            if isinstance(value, str):
                folder = Path(value) if Path(value).is_absolute() else root / value
                splits["valid" if split == "val" else split] = folder
        if not splits:
            raise DatasetError(f"{path} names no split (train/val/test)")
        return cls(path, root, tuple(str(n) for n in names), splits)

    def images_dir(self, split: str) -> Path:
        """The images folder of a split (``val`` and ``valid`` are the same).

        Raises:
            DatasetError: if the split is unknown or its folder is missing.
        """
        key = "valid" if split == "val" else split
        if key not in self.splits:
            raise DatasetError(f"split {split!r} is not in {self.yaml_path} ({list(self.splits)})")
        folder = self.splits[key]
        if not folder.is_dir():
            raise DatasetError(f"images folder {folder} of split {split!r} does not exist")
        return folder

    @staticmethod
    def label_path(image: Path) -> Path:
        """The label file of an image: ``.../images/x.jpg`` -> ``.../labels/x.txt``."""
        parts = list(image.parts)
        for i in range(len(parts) - 2, -1, -1):
            if parts[i] == "images":
                parts[i] = "labels"
                break
        return Path(*parts).with_suffix(".txt")

    def image_files(self, split: str) -> list[Path]:
        folder = self.images_dir(split)
        return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)

    def samples(self, split: str) -> Iterator[Sample]:
        """The split's labelled images, in file-name order.

        Raises:
            DatasetError: naming the file and line of a malformed label.
        """
        for image in self.image_files(split):
            boxes, classes = parse_label_file(self.label_path(image), num_classes=len(self.names))
            height, width = image_size(image)
            scale = np.array([width, height, width, height], dtype=np.float64)
            yield Sample(image, height, width, (boxes * scale).astype(np.float32), classes)

    def content_hash(self, split: str) -> str:
        """SHA-256 over the split's image and label bytes (file names included)."""
        digest = hashlib.sha256()
        for image in self.image_files(split):
            digest.update(image.name.encode())
            digest.update(hashlib.sha256(image.read_bytes()).digest())
            label = self.label_path(image)
            digest.update(label.read_bytes() if label.is_file() else b"<none>")
        return digest.hexdigest()


def to_coco(samples: Sequence[Sample], protocol: Protocol, dataset_names: Sequence[str]) -> dict:
    """COCO ground truth of samples under a protocol. Image ids are 1-based sample indices;
    category ids are 1-based protocol class ids."""
    images, annotations = [], []
    for i, s in enumerate(samples, start=1):
        images.append({"id": i, "file_name": s.image.name, "width": s.width, "height": s.height})
        cats = protocol.map_names([dataset_names[c] for c in s.class_ids])
        for box, cat in zip(s.boxes, cats):
            x1, y1, x2, y2 = (float(v) for v in box)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i,
                    "category_id": int(cat) + 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(protocol.names)]
    return {"images": images, "annotations": annotations, "categories": categories}
