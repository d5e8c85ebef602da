"""The two layouts of the cpu profile against real tritonservers: the one-model layout answers
like the ensemble and like the in-process reference, a bad request in one of its dynamic batches
fails alone with the ensemble's message, and its per-step times appear on the metrics port."""

from __future__ import annotations

import asyncio
import json
import re

import numpy as np
import pytest

from bonefrac.benchmarks.suite import tuning_repository
from bonefrac.client import DetectionClient
from bonefrac.server import TritonServer, step_times

pytestmark = pytest.mark.server

CONF = 0.001  # the bundled models are weak: a low threshold gives many boxes to compare


def _yolo11_server(repo, *, log_path) -> TritonServer:
    """A started tritonserver serving ``repo``'s yolo11 alone."""
    return TritonServer.ephemeral(
        repo,
        model_control="explicit",
        load_models=["yolo11"],
        startup_timeout_s=300,
        log_path=log_path,
    ).start()


@pytest.fixture(scope="module")
def servers(repository, tmp_path_factory):
    """One server per layout, each serving yolo11 alone, built from the committed repository."""
    started = {}
    try:
        for layout in ("ensemble", "single"):
            out = tmp_path_factory.mktemp(layout)
            repo = tuning_repository(repository, "yolo11", out / "repo", cpu_layout=layout)
            started[layout] = _yolo11_server(repo, log_path=out / "tritonserver.log")
        yield started
    finally:
        for server in started.values():
            server.stop()


def test_the_layouts_are_what_they_say(servers):
    import tritonclient.grpc as grpcclient

    for layout, server in servers.items():
        raw = grpcclient.InferenceServerClient(server.grpc_url)
        config = raw.get_model_config("yolo11", as_json=True)["config"]
        kind = config.get("platform") or config.get("backend")
        assert kind == {"ensemble": "ensemble", "single": "python"}[layout]
        assert raw.is_model_ready("yolo11_preprocess") == (layout == "ensemble")


def test_single_model_answers_like_the_ensemble_and_the_reference(servers, reference, valid_images):
    clients = {
        k: DetectionClient(s.grpc_url, model="yolo11", timeout_s=60) for k, s in servers.items()
    }
    for path in valid_images:
        data = path.read_bytes()
        expected = reference.detect(data, conf_threshold=CONF)
        for client in clients.values():
            served = client.detect(data, conf_threshold=CONF)
            assert served.image_size == expected.image_size
            assert len(served) == len(expected) > 0
            np.testing.assert_allclose(served.xyxy, expected.xyxy, atol=0.01, rtol=0)
            np.testing.assert_allclose(served.scores, expected.scores, atol=1e-4, rtol=0)
            assert served.class_names == expected.class_names
    # the parameters clients read are the same in both layouts (the spec names the layout)
    params = {k: c.model_parameters() for k, c in clients.items()}
    for client in clients.values():
        client.close()
    for key in ("pipeline", "class_names", "model_sha256", "profile"):
        assert params["single"][key] == params["ensemble"][key] != "", key
    specs = {k: json.loads(p["spec"]) for k, p in params.items()}
    assert specs["single"]["batching"].pop("cpu_layout") == "single"
    assert specs["ensemble"]["batching"].pop("cpu_layout") == "ensemble"
    assert specs["single"] == specs["ensemble"]


async def _mixed_batch(url: str, good: list[bytes]) -> list:
    """Good images, corrupt ones and bad thresholds sent at once with plain tritonclient (the
    bonefrac client refuses a bad threshold itself), so they share dynamic batches; each
    ``(num_detections, boxes)`` or exception in the order sent."""
    import tritonclient.grpc as grpcclient
    import tritonclient.grpc.aio as grpcaio
    from tritonclient.utils import InferenceServerException

    client = grpcaio.InferenceServerClient(url)

    async def one(data: bytes, conf: float):
        image = grpcclient.InferInput("image", [1, 1], "BYTES")
        image.set_data_from_numpy(np.array([[data]], dtype=object))
        threshold = grpcclient.InferInput("conf_threshold", [1, 1], "FP32")
        threshold.set_data_from_numpy(np.array([[conf]], np.float32))
        try:
            result = await client.infer("yolo11", [image, threshold])
        except InferenceServerException as exc:
            return exc
        return int(result.as_numpy("num_detections")[0, 0]), result.as_numpy("boxes")[0]

    items = []
    for data in good:
        items += [(data, CONF), (b"not an image at all", CONF), (data, 7.0)]
    try:
        return await asyncio.gather(*(one(d, c) for d, c in items))
    finally:
        await client.close()


def test_bad_requests_in_a_dynamic_batch_fail_alone_with_the_ensembles_messages(
    servers, reference, valid_images
):
    from tritonclient.utils import InferenceServerException

    good = [p.read_bytes() for p in valid_images[:6]]
    messages = {}
    for layout, server in servers.items():
        results = asyncio.run(_mixed_batch(server.grpc_url, good))
        for i, data in enumerate(good):
            found, corrupt, threshold = results[3 * i : 3 * i + 3]
            expected = reference.detect(data, conf_threshold=CONF)
            assert not isinstance(found, Exception), found
            assert found[0] == len(expected) > 0
            np.testing.assert_allclose(found[1][: found[0]], expected.xyxy, atol=0.01, rtol=0)
            for refused, needle in ((corrupt, "not a recognised image"), (threshold, "conf_thr")):
                assert isinstance(refused, InferenceServerException), refused
                assert "INVALID_ARGUMENT" in str(refused.status()), refused
                assert needle in refused.message(), refused
            assert "yolo11_preprocess" in corrupt.message()
        # Triton prefixes an ensemble's errors with "in ensemble 'yolo11', "
        messages[layout] = [re.sub(r"^in ensemble '\w+', ", "", r.message()) for r in results[1:3]]
        assert server.is_ready()
    assert messages["single"] == messages["ensemble"]


def test_per_step_metrics_appear_and_grow(servers, valid_images):
    server = servers["single"]
    before = step_times(server.metrics_url, "yolo11")
    with DetectionClient(server.grpc_url, model="yolo11", timeout_s=60) as client:
        for path in valid_images[:4]:
            client.detect(path.read_bytes())
    after = step_times(server.metrics_url, "yolo11")
    steps = ["preprocess", "detector", "postprocess"]
    assert set(after) == set(steps)
    for key in steps:
        count, ns = after[key]
        count0, ns0 = before.get(key, (0, 0))
        assert count - count0 == 4, key
        assert ns > ns0, key
    # the ensemble has its step models' statistics instead, and no such metrics
    assert step_times(servers["ensemble"].metrics_url, "yolo11") == {}


def test_a_lone_request_runs_on_every_core_and_concurrent_ones_on_their_own(
    repository, reference, valid_images, tmp_path
):
    """``detector_solo_threads``: 2 instances x 1 thread, 2 threads for a run that is alone."""
    from bonefrac.server import detector_runs

    repo = tuning_repository(
        repository,
        "yolo11",
        tmp_path / "repo",
        cpu_layout="single",
        detector_instances=2,
        detector_threads=1,
        detector_solo_threads=2,
    )
    server = _yolo11_server(repo, log_path=tmp_path / "tritonserver.log")
    try:
        images = [p.read_bytes() for p in valid_images[:6]]
        with DetectionClient(server.grpc_url, model="yolo11", timeout_s=60) as client:
            for data in images:  # one at a time: each run is alone
                served = client.detect(data, conf_threshold=CONF)
                expected = reference.detect(data, conf_threshold=CONF)
                assert len(served) == len(expected) > 0
                np.testing.assert_allclose(served.xyxy, expected.xyxy, atol=0.01, rtol=0)
        assert detector_runs(server.metrics_url, "yolo11") == {1: 0, 2: len(images)}

        async def concurrently():
            from bonefrac.client import AsyncDetectionClient

            async with AsyncDetectionClient(server.grpc_url, model="yolo11") as client:
                return await client.detect_many(images * 8, conf_threshold=CONF)

        answers = asyncio.run(concurrently())
        assert [len(a) for a in answers] == [len(a) for a in answers[:6]] * 8  # none failed
        assert len(answers[0]) > 0
        runs = detector_runs(server.metrics_url, "yolo11")
        assert runs[1] > 0, runs  # runs that overlapped another kept to one thread
        assert server.is_ready()
    finally:
        server.stop()
