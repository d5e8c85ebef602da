"""Faults: the server killed under load, a Python stub killed, a new model version loaded while
serving, start-up faults, and gRPC over TLS. Each test runs its own tritonserver."""

from __future__ import annotations

import glob
import os
import re
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest

from bonefrac.benchmarks.reliability import (
    last_python_step,
    reload_model,
    self_signed_certificate,
    stub_pid,
)
from bonefrac.client import (
    NO_RETRY,
    DetectionClient,
    RetryPolicy,
    ServerUnavailableError,
)
from bonefrac.errors import ServerError
from bonefrac.server import GrpcTls, TritonServer, free_port, group_stubs

pytestmark = [pytest.mark.server, pytest.mark.slow]


def _yolo_only(repository: Path, tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    for name in ("yolo11", "yolo11_preprocess", "yolo11_detector", "yolo11_postprocess"):
        shutil.copytree(repository / name, repo / name)
    return repo


def _server(repo: Path, **kw) -> TritonServer:
    kw.setdefault("startup_timeout_s", 300)
    return TritonServer.ephemeral(repo, **kw)


def test_kill_under_load_then_clients_recover(repository, tmp_path, valid_images):
    repo = _yolo_only(repository, tmp_path)
    data = valid_images[0].read_bytes()
    port = free_port()
    server = _server(repo, grpc_port=port)
    server.start()
    shm_before = set(glob.glob("/dev/shm/triton_python_backend_shm_region_*"))
    client = DetectionClient(server.grpc_url, retry=NO_RETRY, timeout_s=10)
    assert len(client.detect(data, conf_threshold=0.001)) > 0
    errors, stop = [], threading.Event()

    def load():
        while not stop.is_set():
            try:
                client.detect(data)
            except ServerUnavailableError as exc:
                errors.append(exc)
            except Exception as exc:  # anything else is a wrong kind of error
                errors.append(exc)

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    time.sleep(1.0)  # let the load run before the fault
    group = server.pid
    assert group_stubs(group)  # the stubs of yolo11's pre- and post-processing
    os.kill(server.pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while not errors and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    thread.join(timeout=30)
    server.stop()  # reaps it, stops the stubs it left running and removes their shared memory
    assert group_stubs(group) == []
    assert errors and all(isinstance(e, ServerUnavailableError) for e in errors), errors[:3]
    assert "unavailable" in str(errors[0])
    leaked = set(glob.glob("/dev/shm/triton_python_backend_shm_region_*")) - shm_before
    assert not leaked, leaked

    restarted = _server(repo, grpc_port=port)
    with restarted:
        patient = DetectionClient(
            restarted.grpc_url,
            timeout_s=30,
            retry=RetryPolicy(attempts=20, backoff_s=0.1, deadline_s=60),
        )
        assert len(patient.detect(data, conf_threshold=0.001)) > 0  # retries ride it out
        # The client object from before the crash reconnects by itself (gRPC backs off first).
        deadline = time.monotonic() + 60
        while True:
            try:
                assert len(client.detect(data, conf_threshold=0.001)) > 0
                break
            except ServerUnavailableError:
                assert time.monotonic() < deadline, "the old client never reconnected"
                time.sleep(0.5)


def test_killed_python_stub(repository, tmp_path, valid_images):
    """Measure what Triton does when a Python stub dies, and how the model comes back: the
    stub is not restarted by itself (requests fail with "Stub process ... is not healthy");
    unloading and loading the model through explicit model control brings it back."""
    repo = _yolo_only(repository, tmp_path)
    data = valid_images[0].read_bytes()
    server = _server(repo, model_control="explicit", load_models=["yolo11"])
    shm_before = set(glob.glob("/dev/shm/triton_python_backend_shm_region_*"))
    with server:
        client = DetectionClient(server.grpc_url, retry=NO_RETRY, timeout_s=30)
        client.detect(data)
        victim = last_python_step(repo)  # yolo11_postprocess, or yolo11 in one model
        os.kill(stub_pid(server, victim), signal.SIGKILL)
        killed = time.monotonic()
        failures, recovered_s, message = 0, None, ""
        while time.monotonic() - killed < 10:
            try:
                client.detect(data)
                recovered_s = time.monotonic() - killed
                break
            except Exception as exc:
                failures += 1
                message = str(exc)
                time.sleep(0.2)
        if recovered_s is None:
            assert "not healthy" in message or "unavailable" in message.lower(), message
            start = time.monotonic()
            reload_model(server.grpc_url, victim)  # a plain load is a no-op
            client.detect(data)
            recovered_s = time.monotonic() - killed
            print(
                f"stub killed: {failures} failed requests in 10 s, no self-recovery; "
                f"reloading the model took {time.monotonic() - start:.1f} s"
            )
        else:
            print(
                f"stub killed: {failures} failed requests, recovered by itself after "
                f"{recovered_s:.1f} s"
            )
        assert server.is_ready()
        group = server.pid
    # Triton leaves the dead stub's shared memory behind, and a stub the reload left over
    # outlives the server for a moment; stopping the server removes both.
    assert group_stubs(group) == []
    leaked = set(glob.glob("/dev/shm/triton_python_backend_shm_region_*")) - shm_before
    assert not leaked, leaked


def test_new_version_loads_while_serving_without_failures(repository, tmp_path, valid_images):
    import tritonclient.grpc as grpcclient

    repo = _yolo_only(repository, tmp_path)
    data = valid_images[0].read_bytes()
    server = _server(repo, model_control="explicit", load_models=["yolo11"])
    with server:
        client = DetectionClient(server.grpc_url, retry=NO_RETRY, timeout_s=60)
        failures, done, stop = [], [0], threading.Event()

        def load():
            while not stop.is_set():
                try:
                    client.detect(data)
                    done[0] += 1
                except Exception as exc:
                    failures.append(exc)

        thread = threading.Thread(target=load, daemon=True)
        thread.start()
        time.sleep(0.5)
        shutil.copytree(repo / "yolo11_detector" / "1", repo / "yolo11_detector" / "2")
        raw = grpcclient.InferenceServerClient(server.grpc_url)
        raw.load_model("yolo11_detector")
        time.sleep(1.0)
        stop.set()
        thread.join(timeout=60)
        assert not failures, failures[:3]
        assert done[0] > 0
        ready = raw.get_model_metadata("yolo11_detector").versions
        assert "2" in list(ready)


def test_bad_config_fails_fast_with_diagnosis(repository, tmp_path):
    repo = _yolo_only(repository, tmp_path)
    config = repo / "yolo11_postprocess" / "config.pbtxt"
    text, n = re.subn(r"max_batch_size: \d+", "max_batch_size: eight", config.read_text())
    assert n == 1
    config.write_text(text)
    start = time.monotonic()
    with pytest.raises(ServerError, match="Diagnosis"):
        _server(repo, startup_timeout_s=300).start()
    assert time.monotonic() - start < 120  # the server exits: no wait for the start-up timeout


def test_wrong_python_stub_is_a_timeout_with_diagnosis_not_a_hang(
    repository, tmp_path, monkeypatch
):
    import sys

    from bonefrac import server as server_module

    install = server_module.TritonInstall.find()
    others = [
        p
        for p in install.stub.parent.parent.iterdir()
        if p.name != f"{sys.version_info.major}.{sys.version_info.minor}"
    ]
    wrong = install.__class__(
        binary=install.binary,
        python_backend=install.python_backend,
        stub=others[0] / "triton_python_backend_stub",
        libs=install.libs,
    )
    monkeypatch.setattr(server_module.TritonInstall, "find", classmethod(lambda cls: wrong))
    repo = _yolo_only(repository, tmp_path)
    start = time.monotonic()
    with pytest.raises(ServerError) as info:
        _server(repo, startup_timeout_s=20).start()
    assert time.monotonic() - start < 90  # the 20 s timeout and the stop, not a hang
    assert "Diagnosis" in str(info.value)


def test_grpc_over_tls_with_a_self_signed_certificate(repository, tmp_path, valid_images):
    cert, key = self_signed_certificate(tmp_path)
    repo = _yolo_only(repository, tmp_path)
    with _server(repo, tls=GrpcTls(cert=cert, key=key)) as server:
        secure = DetectionClient(
            server.grpc_url, ssl=True, root_certificates=str(cert), retry=NO_RETRY, timeout_s=30
        )
        assert len(secure.detect(valid_images[0].read_bytes(), conf_threshold=0.001)) > 0
        plain = DetectionClient(server.grpc_url, retry=NO_RETRY, timeout_s=5)
        with pytest.raises(ServerUnavailableError):
            plain.detect(valid_images[0].read_bytes())
