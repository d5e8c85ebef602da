"""Overload: bounded queues reject at once with a clear error, and the client's retries with
backoff get every request through."""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor

import pytest

from bonefrac.client import (
    NO_RETRY,
    DetectionClient,
    InvalidInputError,
    RetryPolicy,
    ServerOverloadedError,
    ServerUnavailableError,
)
from bonefrac.client._grpc import _retry_sync


def test_retry_retries_unavailable_but_not_bad_input():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ServerUnavailableError("down")
        return "ok"

    policy = RetryPolicy(attempts=5, backoff_s=0.001)
    assert _retry_sync(policy, flaky) == "ok" and len(calls) == 3

    def bad():
        calls.append(1)
        raise InvalidInputError("not an image")

    calls.clear()
    with pytest.raises(InvalidInputError):
        _retry_sync(policy, bad)
    assert len(calls) == 1

    def down():
        calls.append(1)
        raise ServerUnavailableError("down")

    calls.clear()
    with pytest.raises(ServerUnavailableError):
        _retry_sync(RetryPolicy(attempts=3, backoff_s=0.001), down)
    assert len(calls) == 3


@pytest.mark.server
def test_full_queue_rejects_fast_and_retries_recover(repository, tmp_path, valid_images):
    from bonefrac.export.repository import write_repository
    from bonefrac.pipeline import read_repository_model
    from bonefrac.server import TritonServer

    found = read_repository_model(repository, "yolo11")
    tiny_queue = dataclasses.replace(
        found.spec,
        batching=dataclasses.replace(
            found.spec.batching, max_queue_size=1, preprocess_instances=1, max_queue_delay_us=50_000
        ),
    )
    write_repository(tiny_queue, found.onnx_path, tmp_path, replace=True)
    data = valid_images[0].read_bytes()
    server = TritonServer.ephemeral(
        tmp_path,
        startup_timeout_s=300,
        model_control="explicit",
        load_models=["yolo11"],
    )
    with server:
        plain = DetectionClient(server.grpc_url, retry=NO_RETRY, timeout_s=60)
        patient = DetectionClient(
            server.grpc_url,
            timeout_s=60,
            retry=RetryPolicy(attempts=100_000, backoff_s=0.05, max_backoff_s=0.5, deadline_s=120),
        )

        def attempt(client):
            try:
                client.detect(data)
                return "ok"
            except ServerOverloadedError as exc:
                return exc

        with ThreadPoolExecutor(max_workers=24) as pool:
            results = list(pool.map(attempt, [plain] * 48))
        rejected = [r for r in results if r != "ok"]
        assert rejected, "a queue of 1 under 24 concurrent clients must reject some requests"
        assert "queue" in str(rejected[0]) and "overloaded" in str(rejected[0])
        with ThreadPoolExecutor(max_workers=24) as pool:
            assert set(pool.map(attempt, [patient] * 48)) == {"ok"}
        assert server.is_ready()
