"""The reliability record: bad input, overload, soak and faults measured against a real
tritonserver on the shipped model repository, written as JSON and rendered as Markdown.

    python -m bonefrac.benchmarks.reliability --images DIR     # measure, write both files
    python -m bonefrac.benchmarks.reliability --render-only    # Markdown from the record

Every number of ``docs/RELIABILITY.md`` comes from the record this command writes
(``docs/reliability/record.json``); ``tests/test_reliability_doc.py`` checks that the committed
Markdown is what :func:`render` makes of the committed record.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

RECORD = Path("docs/reliability/record.json")
DOC = Path("docs/RELIABILITY.md")
ENSEMBLES = ("yolo11", "frcnn")
STEPS = (
    "bad_input",
    "overload",
    "soak",
    "server_kill",
    "version_load",
    "stub_kill",
    "tls",
    "two_servers",
)
_T0 = time.monotonic()


def progress(message: str) -> None:
    """One progress line on stderr, with the seconds since the command started."""
    print(f"[{time.monotonic() - _T0:7.1f} s] {message}", file=sys.stderr, flush=True)


# -- the machine and what ran beside the measurements ------------------------------------------
def machine() -> dict[str, Any]:
    """OS, CPU, cores, memory and Python of this machine."""
    import psutil

    os_name = platform.platform()
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"')
    cpu = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "os": os_name,
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 1e9, 1),
        "python": platform.python_version(),
    }


def beside(*, sample_s: float = 2.0, top: int = 6) -> dict[str, Any]:
    """Load average, and the busiest processes other than this one over ``sample_s`` (names
    only, CPU percent of one core, summed by name)."""
    import psutil

    mine = {os.getpid(), *(p.pid for p in psutil.Process().children(recursive=True))}
    procs = [p for p in psutil.process_iter(["name"]) if p.pid not in mine]
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.cpu_percent(None)
    time.sleep(sample_s)
    busy: Counter[str] = Counter()
    for p in procs:
        with contextlib.suppress(psutil.Error):
            busy[p.info["name"] or "?"] += p.cpu_percent(None)
    return {
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "busiest_processes": [
            {"name": name, "cpu_pct": round(pct)} for name, pct in busy.most_common(top) if pct >= 5
        ],
    }


def versions(url: str) -> dict[str, str]:
    """The server's own version and those of the packages that serve and call it."""
    from importlib.metadata import PackageNotFoundError, version

    import tritonclient.grpc as grpcclient

    out = {"tritonserver": grpcclient.InferenceServerClient(url).get_server_metadata().version}
    for package in ("bonefrac", "nvidia-pytriton", "onnxruntime", "tritonclient", "numpy"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "not installed"
    return out


def models(repository: Path) -> dict[str, Any]:
    """What the spec in each shipped ensemble's config says: batching, queue, thresholds."""
    from bonefrac.pipeline import read_repository_model

    out = {}
    for name in ENSEMBLES:
        found = read_repository_model(repository, name)
        spec = found.spec
        out[name] = {
            "detector_version": int(found.onnx_path.parent.name),
            "model_sha256": spec.model_sha256[:12],
            "max_batch_size": spec.batching.max_batch_size,
            "max_queue_size": spec.batching.max_queue_size,
            "conf_threshold": spec.conf_threshold,
            "iou_threshold": spec.iou_threshold,
        }
    return out


# -- helpers shared by the measurements -------------------------------------------------------
def _server(repository: Path, **kwargs: Any):
    from bonefrac.server import TritonServer

    kwargs.setdefault("startup_timeout_s", 300)
    return TritonServer.ephemeral(repository, **kwargs)


def ensemble_copy(repository: Path, model: str, dest: Path) -> Path:
    """Copy one ensemble and its three steps into a fresh repository ``dest``."""
    from bonefrac.pipeline import read_repository_model

    spec = read_repository_model(repository, model).spec
    for name in (spec.name, spec.preprocess, spec.detector, spec.postprocess):
        shutil.copytree(repository / name, dest / name)
    return dest


class Loop:
    """Requests in a loop on ``threads`` threads while a fault happens; counts results and
    errors by type (the first message of each type kept)."""

    def __init__(self, call: Callable[[], object], *, threads: int = 1) -> None:
        self.call, self.ok = call, 0
        self.errors: Counter[str] = Counter()
        self.messages: dict[str, str] = {}
        self.lock, self.stop = threading.Lock(), threading.Event()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(threads)]

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.call()
                with self.lock:
                    self.ok += 1
            except Exception as exc:  # counted by type: the record says which kinds came back
                with self.lock:
                    self.errors[type(exc).__name__] += 1
                    self.messages.setdefault(type(exc).__name__, str(exc))

    def __enter__(self) -> Loop:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=120)

    def summary(self) -> dict[str, Any]:
        return {"ok": self.ok, "errors": dict(self.errors), "messages": dict(self.messages)}


def _until_ok(call: Callable[[], object], *, timeout_s: float) -> float | None:
    """Seconds until ``call`` first succeeds (retrying every 0.2 s), None after ``timeout_s``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        with contextlib.suppress(Exception):
            call()
            return round(time.monotonic() - start, 2)
        time.sleep(0.2)
    return None


def _timed(call: Callable[[], object]) -> dict[str, Any]:
    """One call: how long it took and whether it succeeded."""
    start = time.monotonic()
    try:
        call()
        error = ""
    except Exception as exc:  # recorded
        error = f"{type(exc).__name__}: {exc}"
    return {"ok": not error, "s": round(time.monotonic() - start, 2), "error": error}


def shm_regions(server) -> set[str]:
    """The shared-memory files of this server's Python stubs (named on their command lines;
    never another server's)."""
    import psutil

    found = set()
    for child in psutil.Process(server.pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            found |= {
                f"/dev/shm/{part.lstrip('/')}"
                for part in child.cmdline()
                if "triton_python_backend_shm_region" in part
            }
    return found


def left_behind(regions: set[str]) -> int:
    """How many of ``regions`` still exist."""
    return sum(Path(r).exists() for r in regions)


# -- the measurements -------------------------------------------------------------------------
def measure_bad_input(
    url: str,
    xray: Path,
    background: bytes,
    *,
    models: tuple[str, ...] = ENSEMBLES,
    names: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """The bad-input corpus (:mod:`bonefrac.benchmarks.bad_inputs`), made from ``xray``, sent
    to each ensemble while :class:`BackgroundLoad` sends ``background`` to the same model.
    ``names`` limits the corpus to those entries."""
    from bonefrac.benchmarks.bad_inputs import BackgroundLoad, corpus, send_corpus
    from bonefrac.client import DetectionClient

    items = corpus(xray)
    if names is not None:
        items = {k: v for k, v in items.items() if k in names}
    out = {}
    for model in models:
        progress(f"bad input: {len(items)} inputs to {model} under background load")
        start = time.monotonic()
        with (
            BackgroundLoad(url, background, model) as load,
            DetectionClient(url, model=model, timeout_s=120) as client,
        ):
            outcomes = send_corpus(client, items)
        out[model] = {
            "items": [o.to_dict() for o in outcomes],
            "as_expected": sum(o.as_expected for o in outcomes),
            "background_ok": load.ok,
            "background_failures": len(load.failures),
            "background_failure_samples": [str(e) for e in load.failures[:3]],
            "seconds": round(time.monotonic() - start, 1),
            "ready_after": DetectionClient(url, model=model).status().ready,
        }
    return out


def measure_soak(
    server, images: list[bytes], *, warmup_s: float, duration_s: float, concurrency: int
) -> dict[str, Any]:
    """:func:`bonefrac.benchmarks.soak.soak` against ``yolo11`` on the running server."""
    from bonefrac.benchmarks.soak import soak

    progress(f"soak: {concurrency} clients, {warmup_s:.0f} s warm-up + {duration_s:.0f} s")
    result = soak(
        url=server.grpc_url,
        model="yolo11",
        images=images,
        server_pid=server.pid,
        duration_s=duration_s,
        warmup_s=warmup_s,
        concurrency=concurrency,
    )
    return {**result.to_dict(), "warmup_s": warmup_s, "model": "yolo11"}


def measure_overload(repository: Path, data: bytes, workdir: Path) -> dict[str, Any]:
    """The yolo11 ensemble rewritten with a queue of 1 (one pre-processing instance, 50 ms
    batching delay), 24 concurrent clients: 48 requests without retries, then 48 with them."""
    from bonefrac.client import NO_RETRY, DetectionClient, RetryPolicy, ServerOverloadedError
    from bonefrac.export.repository import write_repository
    from bonefrac.pipeline import read_repository_model

    found = read_repository_model(repository, "yolo11")
    batching = dataclasses.replace(
        found.spec.batching, max_queue_size=1, preprocess_instances=1, max_queue_delay_us=50_000
    )
    repo = workdir / "overload"
    write_repository(dataclasses.replace(found.spec, batching=batching), found.onnx_path, repo)
    patient_policy = RetryPolicy(attempts=50, backoff_s=0.05, max_backoff_s=0.5, deadline_s=120)
    progress("overload: yolo11 with a queue of 1, 24 clients")
    with _server(repo, model_control="explicit", load_models=["yolo11"]) as server:

        def attempt(client) -> tuple[str, float, str]:
            start = time.monotonic()
            try:
                client.detect(data)
                return "ok", time.monotonic() - start, ""
            except ServerOverloadedError as exc:
                return "rejected", time.monotonic() - start, str(exc)
            except Exception as exc:  # recorded as another kind of failure
                return "failed", time.monotonic() - start, f"{type(exc).__name__}: {exc}"

        rounds = {}
        for label, policy in (("no_retry", NO_RETRY), ("with_retry", patient_policy)):
            client = DetectionClient(server.grpc_url, retry=policy, timeout_s=60)
            with ThreadPoolExecutor(max_workers=24) as pool:
                results = list(pool.map(attempt, [client] * 48))
            kinds = Counter(kind for kind, _, _ in results)
            rejected = [(s, m) for kind, s, m in results if kind == "rejected"]
            rounds[label] = {
                "requests": len(results),
                **{k: kinds.get(k, 0) for k in ("ok", "rejected", "failed")},
                "rejected_median_ms": round(1e3 * statistics.median(s for s, _ in rejected), 1)
                if rejected
                else None,
                "message": rejected[0][1] if rejected else "",
            }
        ready = server.is_ready()
    return {
        "queue": dataclasses.asdict(batching),
        "clients": 24,
        "ready_after": ready,
        "retry_policy": dataclasses.asdict(patient_policy),
        **rounds,
    }


def measure_server_kill(repository: Path, data: bytes, workdir: Path) -> dict[str, Any]:
    """tritonserver SIGKILLed while a client without retries sends requests; then a restart on
    the same port, a client with the default retries, and the old client object again."""
    from bonefrac.client import NO_RETRY, DetectionClient, RetryPolicy
    from bonefrac.server import free_port

    repo = ensemble_copy(repository, "yolo11", workdir / "server_kill")
    port = free_port()
    progress("server kill: SIGKILL under load, then a restart on the same port")
    server = _server(repo, grpc_port=port).start()
    regions = shm_regions(server)
    client = DetectionClient(server.grpc_url, retry=NO_RETRY, timeout_s=10)
    client.detect(data)
    with Loop(lambda: client.detect(data)) as loop:
        time.sleep(1.0)
        ok_before = loop.ok
        os.kill(server.pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while not loop.errors and time.monotonic() < deadline:
            time.sleep(0.05)
    server.stop()  # reaps it and removes the shared memory it left
    leaked = left_behind(regions)
    start = time.monotonic()
    with _server(repo, grpc_port=port) as restarted:
        restart_s = round(time.monotonic() - start, 1)
        patient = DetectionClient(restarted.grpc_url, timeout_s=30, retry=RetryPolicy())
        first_call = _timed(lambda: patient.detect(data))
        new_client_s = _until_ok(lambda: patient.detect(data), timeout_s=60)
        old_client_s = _until_ok(lambda: client.detect(data), timeout_s=60)
    return {
        "ok_before_kill": ok_before,
        "during_kill": loop.summary(),
        "shm_files_left_after_stop": leaked,
        "restart_to_ready_s": restart_s,
        "shm_files_of_the_server": len(regions),
        "new_client_first_call": first_call,
        "new_client_ok_after_s": new_client_s,
        "old_client_reconnect_s": old_client_s,
    }


def measure_version_load(server, repo: Path, data: bytes) -> dict[str, Any]:
    """A new version of ``yolo11_detector`` added and loaded (explicit model control) while
    four clients without retries send requests."""
    import tritonclient.grpc as grpcclient

    from bonefrac.client import NO_RETRY, DetectionClient
    from bonefrac.pipeline import latest_version

    progress("version load: a new yolo11_detector version loaded under load")
    detector = repo / "yolo11_detector"
    current = latest_version(detector)
    new = detector / str(int(current.name) + 1)
    shutil.copytree(current, new)
    client = DetectionClient(server.grpc_url, retry=NO_RETRY, timeout_s=60)
    raw = grpcclient.InferenceServerClient(server.grpc_url)
    with Loop(lambda: client.detect(data), threads=4) as loop:
        time.sleep(1.0)
        start = time.monotonic()
        raw.load_model("yolo11_detector")
        load_s = round(time.monotonic() - start, 2)
        time.sleep(1.0)
    return {
        "new_version": int(new.name),
        "load_s": load_s,
        "during_load": loop.summary(),
        "versions_ready": sorted(raw.get_model_metadata("yolo11_detector").versions),
    }


def stub_pid(server, model: str) -> int:
    """The PID of this server's Python stub for ``model`` (never another server's)."""
    import psutil

    for child in psutil.Process(server.pid).children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            if any(model in part for part in child.cmdline()):
                return child.pid
    raise RuntimeError(f"no stub process for {model} under tritonserver {server.pid}")


def last_python_step(repository: Path, model: str = "yolo11") -> str:
    """The Python-backend model that answers last for ``model``: its post-processing step in
    the ensemble layout, the model itself in the one-model layout (``cpu_layout="single"``)."""
    from bonefrac.pipeline import read_repository_model

    spec = read_repository_model(repository, model).spec
    return spec.name if spec.batching.cpu_layout == "single" else spec.postprocess


def reload_model(url: str, model: str, *, timeout_s: float = 60.0) -> None:
    """Unload ``model`` and load it again (explicit model control). A plain load of an
    unchanged model is a no-op: a model whose Python stub died comes back only this way."""
    import tritonclient.grpc as grpcclient

    raw = grpcclient.InferenceServerClient(url)
    raw.unload_model(model)
    deadline = time.monotonic() + timeout_s
    while raw.is_model_ready(model) and time.monotonic() < deadline:
        time.sleep(0.2)
    raw.load_model(model)


def measure_stub_kill(server, data: bytes, *, window_s: float = 10.0) -> dict[str, Any]:
    """The Python stub of ``yolo11_postprocess`` (of ``yolo11`` in the one-model layout)
    SIGKILLed: requests for ``window_s``, then
    the model unloaded and loaded again if it did not come back by itself."""
    from bonefrac.client import NO_RETRY, DetectionClient

    victim = last_python_step(server.model_repository)
    progress(f"stub kill: SIGKILL to the {victim} stub")
    client = DetectionClient(server.grpc_url, retry=NO_RETRY, timeout_s=30)
    client.detect(data)
    os.kill(stub_pid(server, victim), signal.SIGKILL)
    killed = time.monotonic()
    failures, message, self_recovered_s = 0, "", None
    while time.monotonic() - killed < window_s:
        try:
            client.detect(data)
            self_recovered_s = round(time.monotonic() - killed, 2)
            break
        except Exception as exc:  # counted: the record says what came back
            failures, message = failures + 1, str(exc)
            time.sleep(0.2)
    reload_s = None
    if self_recovered_s is None:
        start = time.monotonic()
        reload_model(server.grpc_url, victim)
        client.detect(data)
        reload_s = round(time.monotonic() - start, 2)
    return {
        "victim": victim,
        "window_s": window_s,
        "failures_in_window": failures,
        "message": message,
        "self_recovered_s": self_recovered_s,
        "reload_s": reload_s,
        "server_ready": server.is_ready(),
    }


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1 made with ``openssl`` (valid one
    day): ``(cert, key)`` PEM files in ``folder``."""
    import subprocess

    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def measure_tls(repository: Path, data: bytes, workdir: Path) -> dict[str, Any]:
    """gRPC over TLS with a self-signed certificate: a TLS client and a plain-text one."""
    from bonefrac.client import NO_RETRY, DetectionClient
    from bonefrac.server import GrpcTls

    progress("TLS: a server with a self-signed certificate, a TLS and a plain-text client")
    folder = workdir / "tls"
    repo = ensemble_copy(repository, "yolo11", folder / "repo")
    cert, key = self_signed_certificate(folder)
    with _server(repo, tls=GrpcTls(cert=cert, key=key)) as server:
        secure = DetectionClient(
            server.grpc_url, ssl=True, root_certificates=str(cert), retry=NO_RETRY, timeout_s=30
        )
        plain = DetectionClient(server.grpc_url, retry=NO_RETRY, timeout_s=5)
        return {
            "tls_client": _timed(lambda: secure.detect(data)),
            "plain_client": _timed(lambda: plain.detect(data)),
        }


def measure_two_servers(repository: Path, data: bytes, *, threads: int = 4) -> dict[str, Any]:
    """Two servers behind the client's balancing (``connect("a,b")``, no retries): how the
    first requests spread, then one server stopped while ``threads`` clients send requests."""
    from bonefrac.client import NO_RETRY, connect

    progress("two servers: balanced traffic, then one stopped mid-run")
    with (
        _server(repository, model_control="explicit", load_models=["yolo11"]) as a,
        _server(repository, model_control="explicit", load_models=["yolo11"]) as b,
    ):
        client = connect(f"{a.grpc_url},{b.grpc_url}", model="yolo11", retry=NO_RETRY)
        for _ in range(10):
            client.detect(data)
        spread = sorted(client.requests_per_server.values())
        with Loop(lambda: client.detect(data), threads=threads) as loop:
            time.sleep(2.0)
            before = loop.ok
            a.stop()
            time.sleep(4.0)
        return {
            "first_10_per_server": spread,
            "threads": threads,
            "ok_before_stop": before,
            "ok_after_stop": loop.ok - before,
            "during": loop.summary(),
        }


# -- the Markdown ---------------------------------------------------------------------------
# What `make test` covers, by test file: the doc names these, tests/test_reliability_doc.py
# checks that each exists.
TESTED_BY = {
    "bad_input": "tests/test_bad_input.py",
    "overload": "tests/test_overload.py",
    "soak": "tests/test_soak.py",
    "server_kill": "tests/test_faults.py",
    "version_load": "tests/test_faults.py",
    "stub_kill": "tests/test_faults.py",
    "tls": "tests/test_faults.py",
    "two_servers": "tests/test_balance.py",
}
TITLES = {
    "bad_input": "bad-input corpus to both ensembles under background load",
    "overload": "overload: a queue of 1, 24 concurrent clients",
    "soak": "soak at saturation",
    "server_kill": "tritonserver SIGKILLed under load, restart, clients recover",
    "version_load": "new detector version loaded while serving",
    "stub_kill": "one Python stub SIGKILLed, model reloaded",
    "tls": "gRPC over TLS with a self-signed certificate",
    "two_servers": "two servers behind the client's balancing, one stopped mid-run",
}
TESTS_ONLY = (
    (
        "wrong tensors sent to each model directly (a 4-channel, a 3-D and a NaN-filled input "
        "to the YOLO11 detector, FP16 to the Faster R-CNN detector, INT32 to the pre-processing "
        "model, a 9-image batch to the ensemble, a zero transform to the post-processing model): a "
        "per-request error each, the server stays ready",
        "tests/test_bad_input.py",
    ),
    (
        'a 100 MB message of noise: refused as "not a recognised image", server ready after',
        "tests/test_bad_input.py",
    ),
    (
        "file names that are not valid UTF-8, through `bonefrac infer` on a folder: processed",
        "tests/test_bad_input.py",
    ),
    (
        "letterbox/unletterbox round trips, boxes inside the image, NMS invariants, for generated "
        "sizes and boxes (hypothesis)",
        "tests/test_properties.py",
    ),
    (
        "a malformed `config.pbtxt`: start-up fails within seconds with the parse error and a "
        "diagnosis",
        "tests/test_faults.py",
    ),
    (
        "a Python stub built for another Python version: start-up times out with a diagnosis "
        "instead of hanging",
        "tests/test_faults.py",
    ),
    (
        "a missing model artifact: start-up fails fast naming the model and the file",
        "tests/test_server_startup.py",
    ),
)


def _reason(message: str) -> str:
    """An error without the ``in ensemble 'm', m_step: `` prefix of an ensemble's step (the
    one-model layout names the step the same way: ``m_step: ``)."""
    return re.sub(
        r"^(?:in ensemble '[^']+', )?\w+_(?:preprocess|detector|postprocess): ", "", message
    )


def _cell(text: str, limit: int = 90) -> str:
    return text[:limit].replace("|", "\\|").replace("\n", " ")


def _errors(summary: dict[str, Any]) -> str:
    errors = summary["errors"]
    if not errors:
        return "0 errors"
    return ", ".join(f"{n} {kind}" for kind, n in sorted(errors.items()))


def _first_message(summary: dict[str, Any]) -> str:
    messages = summary["messages"]
    return f' ("{_cell(next(iter(messages.values())), 200)}")' if messages else ""


def render_header(record: dict[str, Any]) -> list[str]:
    m, v = record["machine"], record["versions"]
    start, end = record["beside_at_start"], record["beside_at_end"]
    busy = ", ".join(f"{p['name']} {p['cpu_pct']} %" for p in start["busiest_processes"])
    models = "; ".join(
        f"`{name}` detector version {s['detector_version']} (sha256 {s['model_sha256']}...)"
        for name, s in record["models"].items()
    )
    c = record["command"]
    return [
        "# Reliability: what was tried, how often, what happened",
        "",
        "Generated by `python -m bonefrac.benchmarks.reliability` from its record "
        "`docs/reliability/record.json`: do not edit by hand (`tests/test_reliability_doc.py` "
        "checks that this file is what the record renders to). The command's `--help` explains "
        "it; `--render-only` rewrites this file from the record without measuring.",
        "",
        f"Run {record['started']} to {record['finished']} on {m['os']}, {m['cores']} cores "
        f"({m['cpu']}), {m['memory_gb']} GB, Python {m['python']}; "
        f"tritonserver {v['tritonserver']} from nvidia-pytriton {v['nvidia-pytriton']}, "
        f"onnxruntime {v['onnxruntime']}, "
        f"tritonclient {v['tritonclient']}, numpy {v['numpy']}. Served: the shipped "
        f"`{c['repository']}/` ({models}).",
        "",
        f"**What ran beside it:** {record['note'] or 'nothing noted.'} Load average (1, 5, 15 "
        "min) at the start: "
        f"{', '.join(map(str, start['load_average']))}; at the end: "
        f"{', '.join(map(str, end['load_average']))}. Busiest other processes at the start "
        f"(CPU % of one core): {busy or 'none above 5 %'}. Throughput and latency figures here "
        "are not benchmarks (those are `benchmarks/RESULTS.md`).",
        "",
        "```bash",
        f"python -m bonefrac.benchmarks.reliability --images {c['images']} \\",
        f"    --soak-warmup-s {c['soak_warmup_s']:g} --soak-s {c['soak_s']:g} "
        f"--soak-concurrency {c['soak_concurrency']}",
        "```",
        "",
    ]


def render_index(record: dict[str, Any]) -> list[str]:
    lines = [
        "## What was measured, what is tested",
        "",
        "Measured by the command above (figures below), and each also checked by a test that "
        "`make test` runs:",
        "",
        "| item | measured here | test in `make test` |",
        "| --- | --- | --- |",
    ]
    for step, title in TITLES.items():
        done = record["measurements"].get(step)
        state = (
            "no"
            if done is None
            else ("failed" if "error" in done else f"yes, {done['seconds']:g} s")
        )
        lines.append(f"| {title} | {state} | `{TESTED_BY[step]}` |")
    lines += ["", "Not measured by the command; covered by tests in `make test` only:", ""]
    lines += [f"- {text} (`{test}`);" for text, test in TESTS_ONLY]
    lines[-1] = lines[-1][:-1] + "."
    return [*lines, ""]


def _size(item: dict[str, Any]) -> str:
    if item["outcome"] != "ok":
        return item["outcome"]
    height, width = item["image_size"]
    return f"ok ({width}x{height})"


def render_bad_input(bad: dict[str, Any]) -> list[str]:
    if "error" in bad:
        return ["## Bad input", "", f"The run failed: {bad['error']}", ""]
    names = [m for m in ENSEMBLES if m in bad]
    items = {m: {i["name"]: i for i in bad[m]["items"]} for m in names}
    first = items[names[0]]
    summary = "; ".join(
        f"`{m}`: {bad[m]['as_expected']} of {len(items[m])} as expected, background "
        f"{bad[m]['background_ok']} requests with {bad[m]['background_failures']} failures, "
        f"server {'ready' if bad[m]['ready_after'] else 'NOT ready'} after"
        for m in names
    )
    lines = [
        "## Bad input",
        "",
        f"{len(first)} generated inputs (`benchmarks/bad_inputs.py`: damaged, unusual "
        "and wrong files made from one valid X-ray), each sent once to each ensemble while a "
        "background thread kept sending a good X-ray to the same model. Expected: a valid result "
        "or an `INVALID_ARGUMENT` error naming the problem, and no failed background request. "
        f"Result: {summary}.",
        "",
        f"Messages: `{names[0]}`'s where it refused the input, else the next ensemble's; "
        "without the prefix \"in ensemble '<model>', <model>_preprocess: \" that Triton adds; "
        "first 90 characters.",
        "",
        f"| input | expected | {' | '.join(names)} | message |",
        "| --- | --- | " + "--- | " * len(names) + "--- |",
    ]
    for name, item in first.items():
        message = next((items[m][name]["message"] for m in names if items[m][name]["message"]), "")
        cells = " | ".join(_size(items[m][name]) for m in names)
        expected = item["expected"].replace("_", " ")
        lines.append(f"| {name} | {expected} | {cells} | {_cell(_reason(message))} |")
    return [*lines, ""]


def render_overload(over: dict[str, Any], models: dict[str, Any]) -> list[str]:
    head = ["## Overload", ""]
    if "error" in over:
        return [*head, f"The run failed: {over['error']}", ""]
    q, plain, patient, r = over["queue"], over["no_retry"], over["with_retry"], over["retry_policy"]
    queues = ", ".join(f"`{n}` {s['max_queue_size']}" for n, s in models.items())
    return [
        *head,
        f"Every model has a bounded queue (`max_queue_size` in `BatchingSpec`, "
        f"`bonefrac/spec.py`; the shipped ensembles: {queues}). For this run the `yolo11` "
        f"ensemble was rewritten with a queue of {q['max_queue_size']}, "
        f"{q['preprocess_instances']} pre-processing instance and a "
        f"{q['max_queue_delay_us'] / 1000:g} ms batching delay, and {over['clients']} "
        "concurrent clients sent requests:",
        "",
        "| round | requests | succeeded | rejected (overloaded) | other errors | "
        "median time to rejection |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| no retries | {plain['requests']} | {plain['ok']} | {plain['rejected']} | "
        f"{plain['failed']} | {_ms(plain['rejected_median_ms'])} |",
        f"| retries: {r['attempts']} attempts, backoff {r['backoff_s']:g} s doubling to "
        f"{r['max_backoff_s']:g} s with jitter, deadline {r['deadline_s']:g} s | "
        f"{patient['requests']} | {patient['ok']} | {patient['rejected']} | {patient['failed']} | "
        f"{_ms(patient['rejected_median_ms'])} |",
        "",
        "The rejection the client raises (`ServerOverloadedError`): "
        f'"{_cell(plain["message"], 200)}". '
        f"Server ready afterwards: {'yes' if over['ready_after'] else 'NO'}.",
        "",
    ]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:g} ms"


def render_soak(soak: dict[str, Any], command: dict[str, Any]) -> list[str]:
    head = ["## Soak", ""]
    if "error" in soak:
        return [*head, f"The run failed: {soak['error']}", ""]
    samples = "; ".join(_cell(s, 120) for s in soak["error_samples"][:2])
    return [
        *head,
        f"{soak['concurrency']} closed-loop clients sent X-rays from `{command['images']}` to "
        f"`{soak['model']}` for {soak['warmup_s']:g} s (warm-up, not measured: the Python "
        f"backend's shared-memory pools and the stubs' allocators grow to their working size) "
        f"and then {soak['duration_s']:g} s (measured), with `bonefrac.benchmarks.soak` (the "
        "code of `bonefrac soak`). Memory is the resident memory of tritonserver (serving the "
        "whole repository) and its Python stubs, the median of the first and of the last 15 % "
        "of the measured window.",
        "",
        "| requests | errors | throughput | memory after warm-up -> end | "
        "shared-memory files left after stop |",
        "| --- | --- | --- | --- | --- |",
        f"| {soak['requests']:,} | {soak['errors']} | {soak['throughput_rps']:g}/s | "
        f"{soak['rss_after_warmup_mb']:,.1f} MB -> {soak['rss_end_mb']:,.1f} MB "
        f"({soak['rss_growth_pct']:+.2f} %) | {soak['shm_files_left_after_stop']} of "
        f"{soak['shm_files_of_the_server']} |",
        "",
        *([f"First errors: {samples}", ""] if samples else []),
        "`tests/test_soak.py` runs a shorter soak in `make test` and asserts 0 errors, memory "
        "growth under 15 % (a leak of half a megabyte a request would add over 35 %) and no "
        "shared memory left; `bonefrac soak --help` runs longer ones.",
        "",
    ]


def _server_kill_row(kill: dict[str, Any]) -> str:
    during, first = kill["during_kill"], kill["new_client_first_call"]
    reconnect = kill["old_client_reconnect_s"]
    return (
        f"a client without retries had {kill['ok_before_kill']} results in the second before; "
        f"then it got {_errors(during)}{_first_message(during)}; the server's shared-memory files "
        f"left after `TritonServer.stop()`: {kill['shm_files_left_after_stop']} of "
        f"{kill['shm_files_of_the_server']}; restarted on the same port, ready in "
        f"{kill['restart_to_ready_s']:g} s; a new client with the default retry policy: its "
        f"first call {_call(first)}, "
        + _after(kill["new_client_ok_after_s"], "a call succeeded after", "no call succeeded")
        + "; the old client object "
        + _after(reconnect, "reconnected by itself after", "did NOT reconnect")
    )


def _call(call: dict[str, Any]) -> str:
    if call["ok"]:
        return f"succeeded ({call['s']:g} s)"
    return f'failed after {call["s"]:g} s ("{_cell(call["error"], 200)}")'


def _after(seconds: float | None, done: str, never: str) -> str:
    return f"{done} {seconds:g} s" if seconds is not None else f"{never} within 60 s"


def _outcome(summary: dict[str, Any]) -> str:
    """What a :class:`Loop` got: results, errors by type, the first message."""
    return f"{summary['ok']} results, {_errors(summary)}{_first_message(summary)}"


def _version_row(version: dict[str, Any]) -> str:
    return (
        f"version {version['new_version']} of `yolo11_detector` added and loaded (explicit "
        f"model control, {version['load_s']:g} s) while 4 clients without retries sent "
        f"requests: {_outcome(version['during_load'])}; versions ready after: "
        f"{', '.join(version['versions_ready'])}"
    )


def _stub_row(stub: dict[str, Any]) -> str:
    if stub["self_recovered_s"] is not None:
        after = f"the model answered again by itself after {stub['self_recovered_s']:g} s"
    else:
        after = (
            f"no recovery by itself; unloading and loading the model (explicit model control) "
            f"brought it back in {stub['reload_s']:g} s"
        )
    return (
        f"the `{stub.get('victim', 'yolo11_postprocess')}` stub killed; "
        f"a client without retries tried every 0.2 s for {stub['window_s']:g} s: "
        f"{stub['failures_in_window']} failed requests"
        + (f' ("{_cell(stub["message"], 200)}")' if stub["message"] else "")
        + f"; {after}; server {'ready' if stub['server_ready'] else 'NOT ready'} throughout"
    )


def _tls_row(tls: dict[str, Any]) -> str:
    return (
        f"a client with `ssl=True` trusting the certificate: {_call(tls['tls_client'])}; a "
        f"plain-text client: {_call(tls['plain_client'])}"
    )


def _two_servers_row(two: dict[str, Any]) -> str:
    spread = " and ".join(map(str, two["first_10_per_server"]))
    return (
        f"the first 10 requests went {spread} to the two servers; then {two['threads']} clients "
        f"without retries, one server stopped after 2 s ({two['ok_before_stop']} results before, "
        f"{two['ok_after_stop']} in the 4 s after): {_outcome(two['during'])}"
    )


def render_faults(measured: dict[str, Any]) -> list[str]:
    rows = (
        ("server_kill", "tritonserver SIGKILLed under load (`yolo11` only)", _server_kill_row),
        ("version_load", "new detector version loaded while serving", _version_row),
        ("stub_kill", "a Python stub that serves `yolo11` SIGKILLed", _stub_row),
        ("tls", "gRPC over TLS (`bonefrac.server.GrpcTls`)", _tls_row),
        ("two_servers", "two tritonservers, one stopped mid-run", _two_servers_row),
    )
    lines = ["## Faults", "", "| fault | what happened |", "| --- | --- |"]
    for step, title, row in rows:
        if step in measured:
            fig = measured[step]
            text = f"the run failed: {_cell(fig['error'], 200)}" if "error" in fig else row(fig)
            lines.append(f"| {title} | {text} |")
    return [*lines, ""]


SECURITY = [
    "## Security",
    "",
    "- Everything binds to 127.0.0.1 unless told otherwise (`bonefrac serve --host`, "
    "`bonefrac ui --host`); `docker-compose.yml` publishes on 127.0.0.1 only.",
    "- gRPC over TLS: `bonefrac serve --grpc-tls-cert PEM --grpc-tls-key PEM "
    "[--grpc-tls-client-ca PEM]` (mutual TLS with the last); clients pass `ssl=True, "
    "root_certificates=PEM` (measured, see above). Triton's HTTP and metrics endpoints have no "
    "TLS: keep them on loopback or behind a proxy.",
    "- Checkpoints: Faster R-CNN weights load with `torch.load(..., weights_only=True)` (no "
    "pickled code runs). Ultralytics `.pt` files are full pickles by design: load only your own.",
    "- No dependency audit is recorded here.",
    "",
]


def render(record: dict[str, Any]) -> str:
    """The Markdown of ``docs/RELIABILITY.md`` from a record written by :func:`measure`."""
    measured = record["measurements"]
    lines = [*render_header(record), *render_index(record)]
    if "bad_input" in measured:
        lines += render_bad_input(measured["bad_input"])
    if "overload" in measured:
        lines += render_overload(measured["overload"], record["models"])
    if "soak" in measured:
        lines += render_soak(measured["soak"], record["command"])
    lines += [*render_faults(measured), *SECURITY]
    return "\n".join(lines).rstrip("\n") + "\n"


# -- the command ------------------------------------------------------------------------------
def _relative(path: str | Path) -> str:
    return os.path.relpath(Path(path).resolve(), Path.cwd())


def _write(record: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


@contextlib.contextmanager
def _step(record: dict[str, Any], name: str, path: Path) -> Iterator[dict[str, Any]]:
    """Time one measurement, keep its figures (or its error) in the record and save it."""
    start = time.monotonic()
    slot: dict[str, Any] = {}
    try:
        yield slot
    except Exception as exc:  # the record says the step failed and why; the next ones run
        slot.clear()
        slot["error"] = f"{type(exc).__name__}: {exc}"
        progress(f"{name} failed: {slot['error']}")
    record["measurements"][name] = {**slot, "seconds": round(time.monotonic() - start, 1)}
    _write(record, path)
    progress(f"{name} done in {record['measurements'][name]['seconds']} s")


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Run every step of ``args.steps``; the record is saved after each."""
    from bonefrac.benchmarks.soak import load_images

    repository, out = Path(args.repository), Path(args.record)
    images = sorted(Path(args.images).glob("*.jpg"))
    if len(images) < 2:
        raise SystemExit(f"--images {args.images}: need at least two .jpg X-rays")
    progress("sampling the load of the machine")
    record: dict[str, Any] = {
        "command": {
            "images": _relative(args.images),
            "repository": _relative(repository),
            "soak_s": args.soak_s,
            "soak_warmup_s": args.soak_warmup_s,
            "soak_concurrency": args.soak_concurrency,
            "steps": list(args.steps),
        },
        "started": _now(),
        "machine": machine(),
        "note": args.note,
        "beside_at_start": beside(),
        "models": models(repository),
        "measurements": {},
    }
    with tempfile.TemporaryDirectory(prefix="bonefrac-reliability-") as tmp:
        work = Path(tmp)
        progress(f"starting tritonserver on {repository}")
        with _server(repository) as server:
            record["versions"] = versions(server.grpc_url)
            if "bad_input" in args.steps:
                with _step(record, "bad_input", out) as slot:
                    slot.update(
                        measure_bad_input(server.grpc_url, images[0], images[1].read_bytes())
                    )
            regions = shm_regions(server)
            if "soak" in args.steps:
                with _step(record, "soak", out) as slot:
                    slot.update(
                        measure_soak(
                            server,
                            load_images(args.images),
                            warmup_s=args.soak_warmup_s,
                            duration_s=args.soak_s,
                            concurrency=args.soak_concurrency,
                        )
                    )
        if "soak" in args.steps and "error" not in record["measurements"]["soak"]:
            record["measurements"]["soak"]["shm_files_of_the_server"] = len(regions)
            record["measurements"]["soak"]["shm_files_left_after_stop"] = left_behind(regions)
            _write(record, out)
        _faults(record, args, repository, images[0].read_bytes(), work, out)
    record["finished"] = _now()
    record["beside_at_end"] = beside()
    _write(record, out)
    return record


def _faults(
    record: dict[str, Any],
    args: argparse.Namespace,
    repository: Path,
    data: bytes,
    work: Path,
    out: Path,
) -> None:
    """The steps that each start their own server."""
    if "overload" in args.steps:
        with _step(record, "overload", out) as slot:
            slot.update(measure_overload(repository, data, work))
    if "server_kill" in args.steps:
        with _step(record, "server_kill", out) as slot:
            slot.update(measure_server_kill(repository, data, work))
    if "tls" in args.steps:
        with _step(record, "tls", out) as slot:
            slot.update(measure_tls(repository, data, work))
    if "two_servers" in args.steps:
        with _step(record, "two_servers", out) as slot:
            slot.update(measure_two_servers(repository, data))
    wanted = [s for s in ("version_load", "stub_kill") if s in args.steps]
    if not wanted:
        return
    repo = ensemble_copy(repository, "yolo11", work / "explicit")
    with _server(repo, model_control="explicit", load_models=["yolo11"]) as server:
        if "version_load" in wanted:
            with _step(record, "version_load", out) as slot:
                slot.update(measure_version_load(server, repo, data))
        if "stub_kill" in wanted:
            with _step(record, "stub_kill", out) as slot:
                slot.update(measure_stub_kill(server, data))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bonefrac.benchmarks.reliability",
        description="Measure how the served models behave under bad input, overload, a soak "
        "and faults (server killed, Python stub killed, new model version loaded), against "
        "real tritonservers on free loopback ports serving the shipped model repository. "
        "Writes the JSON record (machine, date, versions, the machine's load before and "
        "after, every figure) and renders docs/RELIABILITY.md from it. --render-only renders "
        "the Markdown from an existing record without measuring. Progress goes to stderr.",
    )
    p.add_argument(
        "--images",
        metavar="DIR",
        help="X-rays (.jpg): the first is damaged into the bad-input corpus, the "
        "second is the background load; up to 32 feed the soak (needed to measure)",
    )
    p.add_argument(
        "--repository",
        default="model_repository",
        metavar="DIR",
        help="model repository to serve (default: %(default)s)",
    )
    p.add_argument(
        "--record",
        default=str(RECORD),
        metavar="JSON",
        help="the record to write, or to read with --render-only (default: %(default)s)",
    )
    p.add_argument(
        "--doc", default=str(DOC), metavar="MD", help="the Markdown to write (default: %(default)s)"
    )
    p.add_argument(
        "--render-only", action="store_true", help="do not measure: render --doc from --record"
    )
    p.add_argument(
        "--steps",
        default=",".join(STEPS),
        help=f"comma list of steps to measure (default: all: {','.join(STEPS)})",
    )
    p.add_argument(
        "--soak-s",
        type=float,
        default=120.0,
        help="measured soak time, seconds (default: %(default)s)",
    )
    p.add_argument(
        "--soak-warmup-s",
        type=float,
        default=60.0,
        help="unmeasured load before the soak's window (default: %(default)s)",
    )
    p.add_argument(
        "--soak-concurrency",
        type=int,
        default=6,
        help="closed-loop soak clients (default: %(default)s)",
    )
    p.add_argument(
        "--note", default="", help="what else ran on the machine, in words, for the record"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.steps = tuple(s.strip() for s in args.steps.split(",") if s.strip())
    unknown = sorted(set(args.steps) - set(STEPS))
    if unknown:
        parser().error(f"unknown steps {unknown}: choose from {', '.join(STEPS)}")
    if args.render_only:
        record = json.loads(Path(args.record).read_text())
    elif not args.images:
        parser().error("--images is required to measure (or pass --render-only)")
    else:
        record = measure(args)
    Path(args.doc).write_text(render(record))
    progress(f"wrote {args.doc}" + ("" if args.render_only else f" and {args.record}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
