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
        TritonServer.ephemeral(
            repository,
            model_control="explicit",
            load_models=["yolo11"],
            startup_timeout_s=300,
        )
        for _ in range(2)
    ]
    for s in servers:
        s.start()
    yield servers
    for s in servers:
        s.stop()


def _answered(server: TritonServer, model: str = "yolo11") -> int:
    """Requests ``model`` answered successfully on ``server``, from Triton's own statistics."""
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(server.grpc_url) as raw:
        stats = raw.get_inference_statistics(model, as_json=True)["model_stats"]
    return sum(int(s["inference_stats"]["success"].get("count", 0)) for s in stats)


def _shares(servers, run) -> list[int]:
    """How many requests each server answered while ``run()`` ran."""
    before = [_answered(s) for s in servers]
    run()
    return [_answered(s) - n for s, n in zip(servers, before)]


def test_balanced_traffic_and_failover_without_failed_requests(two_servers, valid_images):
    a, b = two_servers
    data = valid_images[0].read_bytes()
    client = connect(f"{a.grpc_url},{b.grpc_url}", model="yolo11", retry=NO_RETRY, timeout_s=60)
    assert isinstance(client, BalancedDetectionClient)
    shares = _shares(two_servers, lambda: [client.detect(data) for _ in range(10)])
    assert sum(shares) == 10 and min(shares) >= 4, shares  # round robin, counted by the servers
    assert sorted(client.requests_per_server.values()) == sorted(shares)

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
    b_at_stop = _answered(b)
    time.sleep(4.0)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    assert not failures, failures[:3]
    assert done[0] > before_stop  # requests kept succeeding ...
    assert _answered(b) > b_at_stop  # ... on the other server


def test_bench_drives_two_servers(two_servers, data_dir, tmp_path):
    a, b = two_servers
    rates, shares = {}, {}
    for label, servers in (("one", a.grpc_url), ("two", f"{a.grpc_url},{b.grpc_url}")):
        out = tmp_path / label
        before = [_answered(a), _answered(b)]
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
        shares[label] = [_answered(a) - before[0], _answered(b) - before[1]]
    print(
        f"throughput one server {rates['one']:.2f}/s, two servers {rates['two']:.2f}/s; "
        f"requests per server {shares}"
    )
    assert rates["two"] > 0 and rates["one"] > 0
    # Triton's statistics: the one-server run reached only a, the two-server run both, evenly.
    assert shares["one"][0] > 0 and shares["one"][1] == 0, shares
    assert min(shares["two"]) >= 0.3 * sum(shares["two"]) > 0, shares
