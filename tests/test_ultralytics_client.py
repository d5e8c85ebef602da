"""A user of Ultralytics' own Triton client gets bonefrac's detections from bonefrac's detector."""

from __future__ import annotations

import numpy as np
import pytest

from bonefrac.client import DetectionClient

pytestmark = [pytest.mark.server, pytest.mark.export]


def test_ultralytics_triton_client_matches_bonefrac_client(triton, valid_images):
    from ultralytics import YOLO

    model = YOLO(f"grpc://{triton.grpc_url}/yolo11_detector", task="detect")
    with DetectionClient(triton.grpc_url, model="yolo11") as ours:
        for path in valid_images[:3]:
            theirs = model.predict(str(path), conf=0.001, iou=0.7, verbose=False)[0].boxes
            mine = ours.detect(path.read_bytes(), conf_threshold=0.001, iou_threshold=0.7)
            assert len(mine) == len(theirs) > 0
            a = np.c_[mine.xyxy, mine.scores, mine.class_ids]
            b = np.c_[theirs.xyxy.numpy(), theirs.conf.numpy(), theirs.cls.numpy()]
            # Each detection has a twin on the other side: same class, box and score within
            # 0.02 (paired by nearness, not by sort order: near-equal scores and coordinates
            # may order differently on the two sides).
            for x, y in ((a, b), (b, a)):
                for row in x:
                    twins = y[y[:, 5] == row[5]]
                    gap = np.abs(twins[:, :5] - row[:5]).max(axis=1).min() if len(twins) else 1e9
                    assert gap <= 0.02, f"{path.name}: {row} has no twin (nearest {gap:.4f})"
