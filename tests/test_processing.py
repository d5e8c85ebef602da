"""Unit tests of the shared processing module, checked against Ultralytics itself where it
defines the behaviour (letterbox, NMS, box scaling)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from bonefrac.benchmarks.bad_inputs import _pil, _png_claiming
from bonefrac.detections import Detections
from bonefrac.processing import (
    ImageDecodeError,
    InputTransform,
    LetterboxTransform,
    batched_nms,
    decode_image,
    letterbox,
    letterbox_boxes,
    nms,
    postprocess_yolo,
    preprocess_yolo,
    unletterbox_boxes,
)

# -- decoding --------------------------------------------------------------------------------


def test_decode_jpeg_matches_ultralytics_imread(valid_images):
    from ultralytics.utils.patches import imread

    path = valid_images[0]
    ours = decode_image(path.read_bytes())
    theirs = imread(str(path))[..., ::-1]  # BGR -> RGB
    assert ours.dtype == np.uint8 and ours.shape == theirs.shape
    assert np.array_equal(ours, theirs)


def test_decode_grayscale_png_gives_three_equal_channels():
    gray = np.tile(np.arange(64, dtype=np.uint8), (32, 1))
    out = decode_image(_pil(Image.fromarray(gray, "L"), "PNG"))
    assert out.shape == (32, 64, 3)
    assert np.array_equal(out[..., 0], gray) and np.array_equal(out[..., 2], gray)


def test_decode_16bit_png_is_windowed_to_full_range():
    img16 = np.tile(np.linspace(1000, 4000, 50).astype(np.uint16), (20, 1))  # a 12-bit X-ray
    ok, encoded = cv2.imencode(".png", img16)
    assert ok
    out = decode_image(encoded.tobytes())
    assert out.shape == (20, 50, 3)
    assert out.min() == 0 and out.max() == 255
    assert np.all(np.diff(out[0, :, 0].astype(int)) >= 0)  # monotone, not clipped


def test_decode_rgba_png_drops_alpha():
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 0
    out = decode_image(_pil(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert out.shape == (8, 8, 3) and np.all(out[..., 0] == 200)


def test_decode_applies_exif_orientation():
    img = Image.fromarray(np.zeros((10, 30, 3), np.uint8))  # 30 wide, 10 high
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    out = decode_image(_pil(img, "JPEG", exif=exif.tobytes()))
    assert out.shape[:2] == (30, 10)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty input"),
        (b"\x00\x01garbage bytes that are no image", "not a recognised image"),
        (b"%PDF-1.4 a pdf is not an x-ray", "not a recognised image"),
    ],
)
def test_decode_refuses_non_images_with_a_clear_message(data, message):
    with pytest.raises(ImageDecodeError, match=message):
        decode_image(data)


def test_decode_refuses_truncated_png():
    full = _pil(Image.fromarray(np.full((64, 64, 3), 7, np.uint8)), "PNG")
    with pytest.raises(ImageDecodeError):
        decode_image(full[: len(full) // 2])


def test_decode_refuses_huge_images_before_decoding():
    with pytest.raises(ImageDecodeError, match="20000x20000|limit"):
        decode_image(_png_claiming(20_000, 20_000))
    with pytest.raises(ImageDecodeError, match="limit"):
        decode_image(_png_claiming(30_000, 10))


# -- letterbox ---------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(406, 512), (512, 406), (1355, 1409), (37, 1000), (640, 640)])
def test_letterbox_matches_ultralytics(shape):
    from ultralytics.data.augment import LetterBox

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    ours, _ = letterbox(img, size=640)
    theirs = LetterBox(new_shape=(640, 640), auto=False, scaleup=True, center=True)(image=img)
    assert ours.shape == (640, 640, 3)
    assert np.array_equal(ours, theirs)


def test_letterbox_on_real_images_matches_ultralytics(valid_images):
    from ultralytics.data.augment import LetterBox

    for path in valid_images[:4]:
        img = decode_image(path.read_bytes())
        ours, _ = letterbox(img, size=640)
        assert np.array_equal(ours, LetterBox(new_shape=(640, 640), auto=False)(image=img))


def test_preprocess_output_is_rgb_chw_unit_range(valid_images):
    tensor, transform = preprocess_yolo(valid_images[0].read_bytes(), size=320)
    assert tensor.shape == (3, 320, 320) and tensor.dtype == np.float32
    assert tensor.min() >= 0.0 and tensor.max() <= 1.0
    assert transform.height > 0 and transform.width > 0


def test_unletterbox_matches_ultralytics_scale_boxes():
    import torch
    from ultralytics.utils.ops import scale_boxes

    rng = np.random.default_rng(1)
    for shape in [(406, 512), (1355, 1409), (37, 1000)]:
        _, transform = letterbox(np.zeros((*shape, 3), np.uint8), size=640)
        xy = rng.uniform(0, 640, (50, 2)).astype(np.float32)
        boxes = np.concatenate([xy, xy + rng.uniform(1, 200, (50, 2)).astype(np.float32)], 1)
        theirs = scale_boxes((640, 640), torch.from_numpy(boxes.copy()), shape).numpy()
        ours = unletterbox_boxes(boxes, transform)
        np.testing.assert_allclose(ours, theirs, atol=1e-3)


def test_letterbox_boxes_round_trip():
    _, transform = letterbox(np.zeros((406, 512, 3), np.uint8), size=640)
    boxes = np.array([[10, 20, 300, 400], [0, 0, 512, 406]], np.float32)
    back = unletterbox_boxes(letterbox_boxes(boxes, transform), transform)
    np.testing.assert_allclose(back, boxes, atol=1e-3)


def test_transform_vector_round_trip_and_validation():
    t = InputTransform(gain_x=1.25, gain_y=1.25, pad_left=0, pad_top=66, height=406, width=512)
    assert InputTransform.from_array(t.to_array()) == t
    with pytest.raises(ValueError, match="6 numbers"):
        InputTransform.from_array(np.zeros(5))
    with pytest.raises(ValueError, match="positive"):
        InputTransform.from_array(np.zeros(6))
    assert LetterboxTransform is InputTransform  # the former name keeps working


# -- NMS and post-processing --------------------------------------------------------------------


def test_nms_matches_torchvision():
    import torch
    import torchvision

    rng = np.random.default_rng(2)
    xy = rng.uniform(0, 500, (300, 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + rng.uniform(5, 120, (300, 2)).astype(np.float32)], 1)
    scores = rng.random(300).astype(np.float32)
    for thr in (0.3, 0.5, 0.7):
        theirs = torchvision.ops.nms(torch.from_numpy(boxes), torch.from_numpy(scores), thr).numpy()
        assert np.array_equal(nms(boxes, scores, iou_threshold=thr), theirs)


def test_batched_nms_keeps_overlapping_boxes_of_other_classes():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]], np.float32)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    keep = batched_nms(boxes, scores, np.array([0, 0, 1]), iou_threshold=0.5)
    assert keep.tolist() == [0, 2]


def _synthetic_raw(rng, nc: int, anchors: int = 2000) -> np.ndarray:
    cxcy = rng.uniform(0, 640, (2, anchors))
    wh = rng.uniform(4, 200, (2, anchors))
    scores = rng.random((nc, anchors)) ** 6  # mostly low, some high
    return np.concatenate([cxcy, wh, scores]).astype(np.float32)


def test_postprocess_matches_ultralytics_nms_and_scaling():
    import torch
    from ultralytics.utils.nms import non_max_suppression
    from ultralytics.utils.ops import scale_boxes

    rng = np.random.default_rng(3)
    names = [f"c{i}" for i in range(7)]
    shape = (406, 512)
    _, transform = letterbox(np.zeros((*shape, 3), np.uint8), size=640)
    for conf, iou in [(0.25, 0.7), (0.05, 0.45), (0.5, 0.5)]:
        raw = _synthetic_raw(rng, nc=7)
        ours = postprocess_yolo(raw, transform, names=names, conf_threshold=conf, iou_threshold=iou)
        det = non_max_suppression(torch.from_numpy(raw[None]), conf, iou, max_det=300, nc=7)[0]
        det[:, :4] = scale_boxes((640, 640), det[:, :4], shape)
        det = det.numpy()
        assert len(ours) == len(det) > 0
        np.testing.assert_allclose(ours.xyxy, det[:, :4], atol=1e-3)
        np.testing.assert_allclose(ours.scores, det[:, 4], atol=1e-6)
        assert ours.class_ids.tolist() == det[:, 5].astype(int).tolist()
        assert ours.class_names == tuple(names[i] for i in ours.class_ids)


def test_postprocess_caps_detections_and_sorts_by_score():
    rng = np.random.default_rng(4)
    _, transform = letterbox(np.zeros((640, 640, 3), np.uint8), size=640)
    out = postprocess_yolo(
        _synthetic_raw(rng, nc=2),
        transform,
        names=["a", "b"],
        conf_threshold=0.0,
        iou_threshold=0.99,
        max_det=10,
    )
    assert len(out) == 10
    assert np.all(np.diff(out.scores) <= 0)


def test_postprocess_refuses_wrong_class_count():
    _, transform = letterbox(np.zeros((64, 64, 3), np.uint8), size=64)
    with pytest.raises(ValueError, match="4 \\+ 3 classes"):
        postprocess_yolo(np.zeros((11, 84), np.float32), transform, names=["a", "b", "c"])


def test_postprocess_boxes_lie_inside_the_image():
    rng = np.random.default_rng(5)
    _, transform = letterbox(np.zeros((300, 200, 3), np.uint8), size=640)
    out = postprocess_yolo(_synthetic_raw(rng, nc=1), transform, names=["x"], conf_threshold=0.1)
    assert len(out) > 0
    assert out.xyxy[:, [0, 2]].min() >= 0 and out.xyxy[:, [0, 2]].max() <= 200
    assert out.xyxy[:, [1, 3]].min() >= 0 and out.xyxy[:, [1, 3]].max() <= 300


# -- Detections --------------------------------------------------------------------------------


def test_detections_validate_shapes():
    with pytest.raises(ValueError, match="same length"):
        Detections(xyxy=np.zeros((2, 4)), scores=np.zeros(3), class_ids=np.zeros(2))
    with pytest.raises(ValueError, match="outside"):
        Detections.from_arrays(
            xyxy=np.zeros((1, 4)), scores=[0.5], class_ids=[3], names=["a"], image_size=(1, 1)
        )


def test_detections_records_and_filter():
    d = Detections.from_arrays(
        xyxy=[[1, 2, 3, 4], [5, 6, 7, 8]],
        scores=[0.9, 0.2],
        class_ids=[1, 0],
        names=["a", "b"],
        image_size=(10, 20),
    )
    assert d.filter(min_score=0.5).class_names == ("b",)
    rec = d.to_records()[0]
    assert rec == {"box": [1.0, 2.0, 3.0, 4.0], "score": 0.9, "class_id": 1, "class_name": "b"}
