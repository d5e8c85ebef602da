"""Dataset reading: polygon and box labels, errors that name the file and line, protocols."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from bonefrac.dataset import DatasetError, YoloDataset, make_protocol, parse_label_file


def _dataset(tmp_path, labels: dict[str, str], *, yaml_text: str | None = None):
    for split in ("train", "valid"):
        (tmp_path / split / "images").mkdir(parents=True)
        (tmp_path / split / "labels").mkdir(parents=True)
    for name, text in labels.items():
        Image.new("RGB", (200, 100)).save(tmp_path / "valid" / "images" / f"{name}.jpg")
        (tmp_path / "valid" / "labels" / f"{name}.txt").write_text(text)
    yaml_text = yaml_text or "train: train/images\nval: valid/images\nnames: ['a', 'b']\n"
    (tmp_path / "data.yaml").write_text(yaml_text)
    return YoloDataset.from_yaml(tmp_path / "data.yaml")


def test_polygon_and_box_labels_become_pixel_boxes(tmp_path):
    ds = _dataset(
        tmp_path,
        {
            "poly": "1 0.1 0.2 0.3 0.2 0.2 0.6\n",
            "box": "0 0.5 0.5 0.2 0.4\n",
            "empty": "",
        },
    )
    samples = {s.image.stem: s for s in ds.samples("valid")}
    np.testing.assert_allclose(samples["poly"].boxes, [[20, 20, 60, 60]], atol=1e-4)
    assert samples["poly"].class_ids.tolist() == [1]
    np.testing.assert_allclose(samples["box"].boxes, [[80, 30, 120, 70]], atol=1e-4)
    assert len(samples["empty"].boxes) == 0
    assert (samples["box"].height, samples["box"].width) == (100, 200)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("7 0.5 0.5 0.1 0.1", "class id 7"),
        ("x 0.5 0.5 0.1 0.1", "expected a class id"),
        ("0 0.5 0.5 0.1", "3 or more vertices"),
        ("0 0.5 0.5 0.0 0.0", "no area"),
        ("0 nan 0.5 0.1 0.1", "finite"),
    ],
)
def test_malformed_labels_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "img.txt"
    path.write_text("0 0.5 0.5 0.1 0.1\n" + line + "\n")
    with pytest.raises(DatasetError, match=f"img.txt:2: .*{message}"):
        parse_label_file(path, num_classes=2)


def test_absolute_and_path_key_yaml(tmp_path):
    ds = _dataset(tmp_path / "d", {"x": ""})
    other = tmp_path / "elsewhere.yaml"
    other.write_text(f"path: {tmp_path / 'd'}\nval: valid/images\nnames: {{0: a, 1: b}}\n")
    assert YoloDataset.from_yaml(other).images_dir("valid") == ds.images_dir("valid")
    absolute = tmp_path / "abs.yaml"
    absolute.write_text(f"val: {tmp_path / 'd' / 'valid' / 'images'}\nnames: [a, b]\n")
    assert len(list(YoloDataset.from_yaml(absolute).samples("val"))) == 1
    with pytest.raises(DatasetError, match="split 'test'"):
        ds.images_dir("test")


def test_protocols():
    names = ["elbow positive", "humerus fracture", "humerus"]
    six = make_protocol("6class", names)
    assert six.names == ("elbow positive", "humerus")
    assert six.map_names(["humerus fracture", "humerus", "elbow positive"]).tolist() == [1, 1, 0]
    assert make_protocol("agnostic", names).map_names(names).tolist() == [0, 0, 0]
    assert make_protocol("7class", names).map_names(names).tolist() == [0, 1, 2]
    with pytest.raises(DatasetError, match="unknown protocol"):
        make_protocol("5class", names)
    with pytest.raises(DatasetError, match="needs the classes"):
        make_protocol("6class", ["a", "b"])


def test_bundled_dataset_counts(data_dir):
    ds = YoloDataset.from_yaml(data_dir / "data.yaml")
    valid = list(ds.samples("valid"))
    assert len(valid) == 348
    assert sum(len(s.boxes) == 0 for s in valid) == 175
    assert sum(len(s.boxes) for s in valid) == 204
    assert len(ds.content_hash("valid")) == 64
