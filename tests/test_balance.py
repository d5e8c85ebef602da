"""Two tritonserver processes on loopback behind the client's balancing: both get traffic, and
stopping one mid-run fails no request."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

from bonefrac.client import NO_RETRY, BalancedDetectionClient, connect, parse_servers
from bonefrac.server import TritonServer

pytestmark = [pytest.mark.server, pytest.mark.slow]


def test_parse_servers():
    assert parse_servers("a:1, b:2,") == ["a:1", "b:2"]
    with pytest.raises(ValueError, match="port"):
        parse_servers("a:1,b")
    with pytest.raises(ValueError, match="at least one"):
        parse_servers(" , ")


@pytest.fixture()
def two_servers(repository):
    servers = [
        TritonServer(
            repository,
            grpc_port=0,
            http_port=0,
            metrics_port=0,
            model_control="explicit",
            load_models=["yolo11"],
            startup_timeout_s=120,
        )
        for _ in range(2)
    ]
    for s in servers:
        s.start()
    yield servers
    for s in servers:
        s.stop()


def test_balanced_traffic_and_failover_without_failed_requests(two_servers, valid_images):
    a, b = two_servers
    data = valid_images[0].read_bytes()
    client = connect(f"{a.grpc_url},{b.grpc_url}", model="yolo11", retry=NO_RETRY, timeout_s=60)
    assert isinstance(client, BalancedDetectionClient)
    for _ in range(10):
        client.detect(data)
    assert all(n >= 4 for n in client.requests_per_server.values()), client.requests_per_server

    failures, done, stop = [], [0], threading.Event()

    def load():
        while not stop.is_set():
            try:
                client.detect(data)
                done[0] += 1
            except Exception as exc:  # the assertion below wants none
                failures.append(exc)

    threads = [threading.Thread(target=load, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(2.0)
    before_stop = done[0]
    a.stop()  # one server goes away mid-run
    time.sleep(4.0)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    assert not failures, failures[:3]
    assert done[0] > before_stop  # requests kept succeeding on the other server


def test_bench_drives_two_servers(two_servers, data_dir, tmp_path):
    a, b = two_servers
    rates = {}
    for label, servers in (("one", a.grpc_url), ("two", f"{a.grpc_url},{b.grpc_url}")):
        out = tmp_path / label
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "bonefrac.cli",
                "bench",
                "--server",
                servers,
                "--model",
                "yolo11",
                "--images",
                str(data_dir / "valid" / "images"),
                "--concurrency",
                "4",
                "--duration-s",
                "3",
                "--warmup-s",
                "1",
                "--max-windows",
                "2",
                "--out",
                str(out),
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        run = json.loads((out / "runs.json").read_text())["runs"][0]
        assert run["errors"] == 0
        rates[label] = run["throughput_rps"]
    print(f"throughput one server {rates['one']:.2f}/s, two servers {rates['two']:.2f}/s")
    assert rates["two"] > 0 and rates["one"] > 0
