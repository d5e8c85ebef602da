"""Property-based tests of the processing module (hypothesis)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from bonefrac.processing import (
    batched_nms,
    box_iou,
    clip_boxes,
    letterbox,
    letterbox_boxes,
    nms,
    unletterbox_boxes,
)

sizes = st.tuples(st.integers(1, 3000), st.integers(1, 3000))
targets = st.sampled_from([64, 320, 640, 1024])


@st.composite
def boxes_in(draw, height: int, width: int, n_max: int = 30):
    n = draw(st.integers(0, n_max))
    x = np.sort(
        np.array(
            draw(st.lists(st.floats(0, width), min_size=2 * n, max_size=2 * n)), np.float32
        ).reshape(n, 2),
        axis=1,
    )
    y = np.sort(
        np.array(
            draw(st.lists(st.floats(0, height), min_size=2 * n, max_size=2 * n)), np.float32
        ).reshape(n, 2),
        axis=1,
    )
    return np.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], axis=1).reshape(-1, 4)


@settings(max_examples=60, deadline=None)
@given(size=sizes, target=targets, data=st.data())
def test_letterbox_round_trip(size, target, data):
    h, w = size
    _, t = letterbox(np.zeros((h, w, 3), np.uint8), size=target)
    assert 0 <= t.pad_left <= target and 0 <= t.pad_top <= target
    assert abs(w * t.gain_x + 2 * t.pad_left - target) <= 1.01
    assert abs(h * t.gain_y + 2 * t.pad_top - target) <= 1.01
    boxes = data.draw(boxes_in(h, w))
    back = unletterbox_boxes(letterbox_boxes(boxes, t), t)
    tol = 1e-3 * max(h, w) + 1e-3
    np.testing.assert_allclose(back, boxes, atol=tol)


@settings(max_examples=60, deadline=None)
@given(size=sizes, data=st.data())
def test_unletterbox_always_lands_inside_the_image(size, data):
    h, w = size
    _, t = letterbox(np.zeros((h, w, 3), np.uint8), size=640)
    wild = data.draw(boxes_in(2000, 2000)) - 500  # boxes beyond the input on every side
    out = unletterbox_boxes(wild, t)
    assert np.all(out[:, [0, 2]] >= 0) and np.all(out[:, [0, 2]] <= w)
    assert np.all(out[:, [1, 3]] >= 0) and np.all(out[:, [1, 3]] <= h)
    clipped = clip_boxes(out.copy(), height=h, width=w)
    np.testing.assert_array_equal(clipped, out)


@settings(max_examples=80, deadline=None)
@given(data=st.data(), iou=st.floats(0.05, 0.95))
def test_nms_invariants(data, iou):
    boxes = data.draw(boxes_in(500, 500, n_max=40))
    n = len(boxes)
    scores = np.array(data.draw(st.lists(st.floats(0, 1), min_size=n, max_size=n)), np.float32)
    keep = nms(boxes, scores, iou_threshold=iou)
    assert len(set(keep.tolist())) == len(keep) <= n
    if n:
        assert keep[0] == int(np.argmax(scores))  # the best box is always kept
    assert np.all(np.diff(scores[keep]) <= 0)  # highest score first
    for i, a in enumerate(keep):  # no two kept boxes overlap above the threshold
        if i + 1 < len(keep):
            assert np.all(box_iou(boxes[a], boxes[keep[i + 1 :]]) <= iou + 1e-6)
    # Every dropped box overlaps some kept box of higher or equal score above the threshold.
    for d in sorted(set(range(n)) - set(keep.tolist())):
        ious = box_iou(boxes[d], boxes[keep])
        assert np.any((ious > iou) & (scores[keep] >= scores[d]))


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_batched_nms_never_mixes_classes(data):
    # On a 1/256 px grid, so that float32 holds the class offset added to a box exactly (as in
    # Ultralytics and torchvision, it moves coordinates by up to 0.002 px otherwise, which can
    # tip an IoU that sits on the threshold).
    boxes = np.round(data.draw(boxes_in(300, 300, n_max=30)) * 256) / 256
    n = len(boxes)
    scores = np.array(data.draw(st.lists(st.floats(0, 1), min_size=n, max_size=n)), np.float32)
    classes = np.array(data.draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)), np.int64)
    keep = set(batched_nms(boxes, scores, classes, iou_threshold=0.5).tolist())
    for c in range(4):
        idx = np.flatnonzero(classes == c)
        alone = set(idx[nms(boxes[idx], scores[idx], iou_threshold=0.5)].tolist())
        assert alone == keep & set(idx.tolist())
