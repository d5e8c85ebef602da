"""Call a bonefrac ensemble with plain tritonclient: no bonefrac import, only numpy and
``tritonclient[grpc]``. tests/test_raw_grpc_example.py runs this file against a real server.

    python docs/examples/plain_tritonclient.py wrist.jpg --server 127.0.0.1:8001 --model yolo11

Prints one JSON object: ``{"image_size": [height, width], "detections": [{"box": [x1, y1, x2,
y2], "score", "class_id", "class_name"}]}``, boxes in pixels of the original image.

The ensemble batches requests (``max_batch_size`` > 0), so every tensor has the batch dimension
first: one image is an input of shape ``[1, 1]`` (a batch of one, one encoded file), not ``[1]``
(Triton refuses that with INVALID_ARGUMENT "expected [-1,1]").
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import tritonclient.grpc as grpcclient


def _scalar(name: str, value: float) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, [1, 1], "FP32")
    tensor.set_data_from_numpy(np.array([[value]], dtype=np.float32))
    return tensor


def detect(
    client: grpcclient.InferenceServerClient,
    model: str,
    data: bytes,
    *,
    conf_threshold: float | None = None,
    iou_threshold: float | None = None,
) -> dict:
    """One encoded image (JPEG, PNG or DICOM bytes) -> its detections, as a JSON-ready dict.

    Without ``conf_threshold`` / ``iou_threshold`` the model's defaults apply.
    """
    image = grpcclient.InferInput("image", [1, 1], "BYTES")  # [batch, 1]
    image.set_data_from_numpy(np.array([[data]], dtype=np.object_))
    inputs = [image]
    if conf_threshold is not None:
        inputs.append(_scalar("conf_threshold", conf_threshold))
    if iou_threshold is not None:
        inputs.append(_scalar("iou_threshold", iou_threshold))
    result = client.infer(model, inputs)
    # Outputs are padded to the longest answer of the batch: keep the first num_detections rows.
    n = int(result.as_numpy("num_detections")[0, 0])
    boxes = result.as_numpy("boxes")[0, :n]  # (n, 4) float32 x1, y1, x2, y2
    scores = result.as_numpy("scores")[0, :n]  # (n,) float32
    class_ids = result.as_numpy("class_ids")[0, :n]  # (n,) int32
    class_names = result.as_numpy("class_names")[0, :n]  # (n,) bytes
    height, width = result.as_numpy("image_size")[0].tolist()
    return {
        "image_size": [height, width],
        "detections": [
            {
                "box": [round(float(v), 2) for v in box],
                "score": round(float(score), 5),
                "class_id": int(class_id),
                "class_name": name.decode(),
            }
            for box, score, class_id, name in zip(boxes, scores, class_ids, class_names)
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("image", help="an X-ray file (JPEG, PNG or DICOM)")
    parser.add_argument("--server", default="127.0.0.1:8001", help="Triton's gRPC HOST:PORT")
    parser.add_argument("--model", default="yolo11", help="the ensemble (yolo11, frcnn, ...)")
    parser.add_argument("--conf", type=float, help="score threshold (default: the model's)")
    parser.add_argument("--iou", type=float, help="NMS IoU threshold (default: the model's)")
    args = parser.parse_args(argv)
    with open(args.image, "rb") as f:
        data = f.read()
    client = grpcclient.InferenceServerClient(args.server)
    try:
        answer = detect(client, args.model, data, conf_threshold=args.conf, iou_threshold=args.iou)
    except grpcclient.InferenceServerException as exc:
        print(f"{args.image}: {exc.message()}", file=sys.stderr)
        return 1
    finally:
        client.close()
    print(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
