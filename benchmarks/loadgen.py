"""A gRPC load generator in the manner of Triton's perf_analyzer.

Closed loop (a concurrency sweep: N requests always in flight) or open loop (a request rate,
constant or Poisson), with a warm-up, measurement windows repeated until two in a row agree on
throughput, latency percentiles, error counts, the server's own per-step breakdown from Triton's
statistics API, and the client's own CPU use (so a saturated client is visible).

Targets are callables ``async (payload: bytes) -> None``; :func:`triton_target` calls a served
ensemble over gRPC (asyncio), :func:`in_process_target` runs the same pipeline in this process
(sessions on threads), the ceiling for serving on the machine; :func:`ultralytics_target` and
:func:`ultralytics_triton_target` are what an Ultralytics user would run instead (PyTorch in
process, or Ultralytics' Triton client against the served detector).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

Target = Callable[[bytes], Awaitable[None]]

#: Name prefix of the shared-memory regions (server registration and ``/dev/shm`` file).
REGION_PREFIX = "bonefrac_bench_"


@dataclass
class StepResult:
    """One load step.

    Attributes:
        target: ``triton``, ``in-process``, ...
        concurrency: requests in flight (closed loop), or None.
        rate_rps: offered request rate (open loop), or None.
        requests, errors: counted in the measured windows.
        throughput_rps: completed requests per second.
        p50_ms ... p99_ms: latency percentiles of successful requests.
        windows: measurement windows used; stable: whether the last two agreed.
        client_cpu_pct: this process's CPU use during the step (100 % = one core).
        server_cpu_ms: CPU time of the server's processes (the given one and all below it:
            tritonserver and its Python-backend stubs) per completed request, or None when
            no server process was given (in-process targets, perf_analyzer).
        server: composing model -> average ms per request of queue / compute phases.
    """

    target: str
    concurrency: int | None
    rate_rps: float | None
    requests: int
    errors: int
    throughput_rps: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    windows: int
    stable: bool
    client_cpu_pct: float
    error_samples: list[str] = field(default_factory=list)
    server: dict[str, dict[str, float]] = field(default_factory=dict)
    server_cpu_ms: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Window:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.errors = 0
        self.error_samples: list[str] = []
        self.start = time.perf_counter()
        self.end = self.start


async def _timed(target: Target, payload: bytes, window_ref: list[_Window]) -> None:
    start = time.perf_counter()
    try:
        await target(payload)
        window_ref[0].latencies.append(time.perf_counter() - start)
    except Exception as exc:  # counted: the load goes on
        w = window_ref[0]
        w.errors += 1
        if len(w.error_samples) < 3:
            w.error_samples.append(f"{type(exc).__name__}: {str(exc)[:200]}")


async def _closed_loop(
    target: Target,
    payloads: Sequence[bytes],
    concurrency: int,
    stop: asyncio.Event,
    window_ref: list[_Window],
    seed: int,
) -> None:
    rng = random.Random(seed)

    async def worker() -> None:
        while not stop.is_set():
            await _timed(target, rng.choice(payloads), window_ref)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def _open_loop(
    target: Target,
    payloads: Sequence[bytes],
    rate: float,
    poisson: bool,
    stop: asyncio.Event,
    window_ref: list[_Window],
    seed: int,
) -> None:
    rng = random.Random(seed)
    pending: set[asyncio.Task] = set()
    next_at = time.perf_counter()
    while not stop.is_set():
        gap = rng.expovariate(rate) if poisson else 1.0 / rate
        next_at += gap
        delay = next_at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.ensure_future(_timed(target, rng.choice(payloads), window_ref))
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.gather(*pending)


async def run_step(
    target: Target,
    payloads: Sequence[bytes],
    *,
    name: str,
    concurrency: int | None = None,
    rate_rps: float | None = None,
    poisson: bool = False,
    warmup_s: float = 2.0,
    window_s: float = 5.0,
    max_windows: int = 4,
    stability: float = 0.1,
    seed: int = 0,
    stats: Callable[[], dict[str, tuple[int, int]]] | None = None,
    server_pid: int | None = None,
) -> StepResult:
    """Run one step: warm up, then measure windows of ``window_s`` until two consecutive ones
    agree within ``stability`` on throughput (or ``max_windows`` is reached). ``server_pid``:
    the server's process, whose CPU time (with its children's) is counted per request."""
    if (concurrency is None) == (rate_rps is None):
        raise ValueError("give exactly one of concurrency or rate_rps")
    stop = asyncio.Event()
    window_ref = [_Window()]
    loop = (
        _closed_loop(target, payloads, concurrency, stop, window_ref, seed)
        if concurrency
        else _open_loop(target, payloads, rate_rps, poisson, stop, window_ref, seed)
    )
    runner = asyncio.ensure_future(loop)
    await asyncio.sleep(warmup_s)
    await _first_answer(window_ref[0])
    windows: list[_Window] = []
    before_stats = stats() if stats else {}
    server_before = process_tree_cpu_s(server_pid) if server_pid else 0.0
    cpu_before = os.times()
    wall_before = time.perf_counter()
    stable = await _measure(window_ref, windows, window_s, max_windows, stability)
    cpu_after = os.times()
    server_cpu = process_tree_cpu_s(server_pid) - server_before if server_pid else None
    wall = time.perf_counter() - wall_before
    after_stats = stats() if stats else {}
    stop.set()
    window_ref[0] = _Window()  # requests still in flight are not counted
    await runner

    latencies = np.array([x for w in windows for x in w.latencies]) * 1000.0
    elapsed = sum(w.end - w.start for w in windows)
    errors = sum(w.errors for w in windows)
    pct = np.percentile(latencies, [50, 90, 95, 99]) if latencies.size else np.full(4, float("nan"))
    cpu = (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)
    return StepResult(
        target=name,
        concurrency=concurrency,
        rate_rps=rate_rps,
        requests=int(latencies.size) + errors,
        errors=errors,
        throughput_rps=round(latencies.size / elapsed, 3) if elapsed else 0.0,
        p50_ms=round(float(pct[0]), 3),
        p90_ms=round(float(pct[1]), 3),
        p95_ms=round(float(pct[2]), 3),
        p99_ms=round(float(pct[3]), 3),
        mean_ms=round(float(latencies.mean()), 3) if latencies.size else float("nan"),
        windows=len(windows),
        stable=stable,
        client_cpu_pct=round(100.0 * cpu / wall, 1) if wall else 0.0,
        error_samples=[s for w in windows for s in w.error_samples][:3],
        server=_breakdown(before_stats, after_stats),
        server_cpu_ms=(
            round(1000.0 * server_cpu / latencies.size, 3)
            if server_cpu is not None and latencies.size
            else None
        ),
    )


def process_tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid`` and every process below it:
    the live ones, and those that ended and were waited for (their time is in their parent's
    ``cutime``/``cstime``). Linux ``/proc``; a process that cannot be read counts 0. Tritonserver
    with its Python-backend stubs, or a web server with its workers."""
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    used: dict[int, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        child = int(stat.parent.name)
        parents[child] = int(fields[1])
        used[child] = sum(int(f) for f in fields[11:15]) / tick  # utime stime cutime cstime
    total = 0.0
    for proc, seconds in used.items():
        walk = proc
        while walk not in (pid, 0, 1) and walk in parents:
            walk = parents[walk]
        total += seconds if walk == pid else 0.0
    return total


async def _measure(
    window_ref: list[_Window],
    windows: list[_Window],
    window_s: float,
    max_windows: int,
    stability: float,
) -> bool:
    """Measure windows of ``window_s`` into ``windows`` until the last two agree within
    ``stability`` on throughput or there are ``max_windows``; returns whether they agreed."""
    while True:
        window_ref[0] = _Window()
        await asyncio.sleep(window_s)
        window_ref[0].end = time.perf_counter()
        windows.append(window_ref[0])
        rates = [len(w.latencies) / (w.end - w.start) for w in windows[-2:]]
        # windows without one answer never agree: there is nothing to measure in them
        stable = len(rates) == 2 and min(rates) > 0
        stable = stable and abs(rates[0] - rates[1]) <= stability * max(rates)
        if stable or len(windows) >= max_windows:
            return stable


async def _first_answer(warm_up: _Window, limit_s: float = 120.0) -> None:
    """Wait (up to ``limit_s``) until the warm-up has had an answer: a target's first call can
    take long (lazy initialisation, a busy machine), and measuring must not start before it."""
    deadline = time.perf_counter() + limit_s
    while not (warm_up.latencies or warm_up.errors) and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)


def _breakdown(
    before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]
) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for key, (count, ns) in after.items():
        model, phase = key.rsplit(".", 1)
        c0, n0 = before.get(key, (0, 0))
        if count > c0:
            out.setdefault(model, {})[f"{phase}_ms"] = round((ns - n0) / 1e6 / (count - c0), 3)
    return out


# --------------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------------


def triton_target(
    url: str, model: str, *, metrics_url: str | None = None
) -> tuple[Target, Callable[[], dict], Callable[[], Any]]:
    """An asyncio gRPC target for a served model (``url`` may list several servers,
    ``a:8001,b:8001``: they are balanced), a statistics reader summing the model and its step
    models over the servers, and a closer. Must be called inside the running event loop.

    A one-model pipeline (``cpu_layout="single"``) has no step models to read; its per-step
    time comes from Triton's metrics port (``metrics_url``, a comma list in the servers' order;
    default :func:`bonefrac.server.metrics_url_of` each server) as ``<model>_<step>`` entries
    with the step's time per request as ``compute_infer``."""
    import tritonclient.grpc as grpcclient

    from bonefrac.client import NO_RETRY, connect_async, parse_servers
    from bonefrac.server import metrics_url_of, step_times

    client = connect_async(url, model=model, timeout_s=120, retry=NO_RETRY)
    servers = parse_servers(url)
    raws = [grpcclient.InferenceServerClient(u) for u in servers]
    metrics = metrics_url.split(",") if metrics_url else [metrics_url_of(u) for u in servers]

    async def target(payload: bytes) -> None:
        await client.detect(payload)

    def stats() -> dict[str, tuple[int, int]]:
        out: dict[str, tuple[int, int]] = {}
        for raw in raws:
            try:
                model_stats = raw.get_inference_statistics(as_json=True).get("model_stats", [])
            except Exception:  # a stopped server contributes nothing
                continue
            for m in model_stats:
                name = m.get("name", "")
                if name != model and not name.startswith(f"{model}_"):
                    continue
                s = m.get("inference_stats", {})
                for phase in ("queue", "compute_input", "compute_infer", "compute_output"):
                    entry = s.get(phase, {})
                    c0, n0 = out.get(f"{name}.{phase}", (0, 0))
                    out[f"{name}.{phase}"] = (
                        c0 + int(entry.get("count", 0)),
                        n0 + int(entry.get("ns", 0)),
                    )
        for source in filter(None, metrics):
            for step, (count, ns) in step_times(source, model).items():
                c0, n0 = out.get(f"{model}_{step}.compute_infer", (0, 0))
                out[f"{model}_{step}.compute_infer"] = (c0 + count, n0 + ns)
        return out

    return target, stats, client.close


def pooled_target(objects: Sequence[Any], run: Callable[[Any, bytes], Any]) -> Target:
    """A target that calls ``run(obj, payload)`` on its own threads, one per item of
    ``objects``, each call with an item no other call holds (when all are taken, a request
    waits for one)."""
    import queue
    from concurrent.futures import ThreadPoolExecutor

    free: queue.SimpleQueue = queue.SimpleQueue()
    for obj in objects:
        free.put(obj)
    pool = ThreadPoolExecutor(max_workers=len(objects))

    def call(payload: bytes) -> None:
        obj = free.get()
        try:
            run(obj, payload)
        finally:
            free.put(obj)

    async def target(payload: bytes) -> None:
        await asyncio.get_running_loop().run_in_executor(pool, call, payload)

    return target


def in_process_target(
    repository: str, model: str, *, threads: int = 0, workers: int = 1, sessions: int = 1
) -> Target:
    """The same pipeline in this process, no server: ``sessions`` pipelines, each its own ONNX
    Runtime session with ``threads`` intra-op threads (0: one per core) and its own thread;
    with one session, ``workers`` threads share it. The ceiling for serving on this machine:
    one stream (one session, one thread), or the sessions x threads that give the most."""
    from bonefrac.pipeline import InProcessPipeline

    pipelines = [InProcessPipeline(repository, model, threads=threads) for _ in range(sessions)]
    if sessions == 1:
        pipelines *= max(1, workers)
    return pooled_target(pipelines, lambda pipeline, payload: pipeline.detect(payload))


def ultralytics_target(weights: str, *, imgsz: int = 640, workers: int = 1) -> Target:
    """What a user would run instead of a server: Ultralytics ``YOLO(weights).predict()`` in
    PyTorch on the CPU, decoding the same bytes (``workers`` threads share the model)."""
    from bonefrac.export._offline import prepare_ultralytics_offline

    prepare_ultralytics_offline()
    from ultralytics import YOLO

    model = YOLO(weights, task="detect")
    return pooled_target([model] * max(1, workers), _predictor(imgsz=imgsz))


def _predictor(**options: Any) -> Callable[[Any, bytes], None]:
    """``run(model, payload)``: decode the bytes as a user would and ``model.predict`` them."""
    from bonefrac.processing import decode_image

    def run(model: Any, payload: bytes) -> None:
        image = decode_image(payload)[..., ::-1]  # Ultralytics takes BGR arrays
        model.predict(image, device="cpu", verbose=False, **options)

    return run


def ultralytics_triton_target(
    url: str, detector: str, *, threads: int = 1, conf: float = 0.25, iou: float = 0.7
) -> Target:
    """The layout of Ultralytics' Triton guide: ``YOLO("grpc://URL/DETECTOR", task="detect")``
    in the client, which letterboxes, sends FP32 pixels to the served detector alone and runs
    NMS itself (Ultralytics' ``TritonRemoteModel``), on ``threads`` client threads, each with
    its own ``YOLO`` object (and connection); the bytes are decoded in the client as a user
    would. Each object answers one request before the target is returned (connection and
    model metadata are read then, not during the measurement)."""
    from bonefrac.export._offline import prepare_ultralytics_offline

    prepare_ultralytics_offline()
    from ultralytics import YOLO

    run = _predictor(conf=conf, iou=iou)
    models = [YOLO(f"grpc://{url}/{detector}", task="detect") for _ in range(max(1, threads))]
    blank = blank_jpeg()
    for model in models:
        run(model, blank)
    return pooled_target(models, run)


def blank_jpeg(side: int = 256) -> bytes:
    """A black JPEG: a first request that warms a target up before it is measured."""
    import cv2

    return cv2.imencode(".jpg", np.zeros((side, side, 3), np.uint8))[1].tobytes()


class SharedMemoryPool:
    """System shared-memory regions registered with one server for a load generator: one region
    per request in flight, reused, and a close that lets the server finish with them first.

    Triton refuses to unregister a region that a request still holds, and it may hold one for a
    moment after the client has its response (the request is released after the response is
    sent), much longer on a busy machine. :meth:`close` therefore waits for the requests in
    flight, then retries each unregister while the server says the region is in use, up to a
    bound, and removes every region's file in any case.
    """

    def __init__(self, client: Any, tag: str) -> None:
        self.client = client
        self.tag = tag
        self.regions: list[tuple[str, Any]] = []  # (name, handle), every region made
        self._free: list[tuple[str, Any, int]] = []  # (name, handle, byte size), not in use
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False
        self._made = 0

    async def take(self, nbytes: int) -> tuple[str, Any, int]:
        """A region of at least ``nbytes``, registered, for one request."""
        if self._closing:
            raise RuntimeError("the shared-memory pool is closed")
        self._in_flight += 1
        self._idle.clear()
        try:
            return await self._region(nbytes)
        except BaseException:
            self._done()
            raise

    async def _region(self, nbytes: int) -> tuple[str, Any, int]:
        import tritonclient.utils.shared_memory as shm

        for i, r in enumerate(self._free):
            if r[2] >= nbytes:
                return self._free.pop(i)
        name = f"{self.tag}_{self._made}"
        self._made += 1
        handle = shm.create_shared_memory_region(name, f"/{name}", nbytes)
        try:
            await self.client.register_system_shared_memory(name, f"/{name}", nbytes)
        except BaseException:
            _destroy_region(handle)
            raise
        self.regions.append((name, handle))
        return name, handle, nbytes

    def give(self, region: tuple[str, Any, int], *, reuse: bool = True) -> None:
        """A region back from its request. A cancelled request may still be read by the
        server: its region is not reused (``reuse=False``), only freed at close."""
        if reuse:
            self._free.append(region)
        self._done()

    def _done(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0:
            self._idle.set()

    async def close(self, *, wait_s: float = 60.0, retry_s: float = 30.0) -> list[str]:
        """Wait (up to ``wait_s``) for the requests in flight, unregister every region (retrying
        up to ``retry_s`` while the server still holds it) and remove its file. Returns the
        regions the server would not let go of, each also printed as a warning."""
        self._closing = True
        # past wait_s, the unregister retries below still give the server its time
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._idle.wait(), wait_s)
        deadline = time.monotonic() + retry_s
        refused = []
        for name, handle in self.regions:
            reason = await self._unregister(name, deadline)
            if reason:
                refused.append(name)
                print(
                    f"warning: shared-memory region '{name}' is still registered on the server "
                    f"({reason}); its file was removed, the server frees the region when it "
                    "unregisters it or restarts",
                    file=sys.stderr,
                )
            _destroy_region(handle)
        return refused

    async def _unregister(self, name: str, deadline: float) -> str | None:
        """Unregister one region, retrying while the server says it is in use; the reason it
        failed, or None."""
        from tritonclient.utils import InferenceServerException

        pause = 0.02
        while True:
            try:
                await self.client.unregister_system_shared_memory(name)
                return None
            except InferenceServerException as exc:
                if "in use" not in str(exc):
                    return str(exc)
                if time.monotonic() >= deadline:
                    return f"still in use after the retries: {exc}"
            await asyncio.sleep(pause)
            pause = min(2 * pause, 1.0)


def _destroy_region(handle: Any) -> None:
    import tritonclient.utils.shared_memory as shm

    shm.destroy_shared_memory_region(handle)


def _detector_stats(raw: Any, model: str) -> Callable[[], dict[str, tuple[int, int]]]:
    """A statistics reader of one model (as :func:`triton_target`'s)."""

    def stats() -> dict[str, tuple[int, int]]:
        s = raw.get_inference_statistics(model, as_json=True).get("model_stats", [{}])[0]
        phases = s.get("inference_stats", {})
        return {
            f"{model}.{p}": (
                int(phases.get(p, {}).get("count", 0)),
                int(phases.get(p, {}).get("ns", 0)),
            )
            for p in ("queue", "compute_input", "compute_infer", "compute_output")
        }

    return stats


def detector_target(
    url: str, model: str, *, shared_memory: bool = False
) -> tuple[Target, Callable[[], dict], Callable[[], Awaitable[list[str]]]]:
    """Preprocessed tensors straight to a detector (``<name>_detector``): payloads are float32
    arrays ``(N, 3, H, W)``, N the batch of one request. With ``shared_memory`` the input goes
    through a POSIX shared-memory region registered with the server (client and server on one
    host), one region per request in flight, reused (:class:`SharedMemoryPool`); the (small)
    output returns over gRPC.

    Returns the target, a statistics reader (as :func:`triton_target`) and an async closer that
    waits for the requests in flight, unregisters and frees the regions and returns the names of
    any the server would not let go of (warned about, not raised: the measurement stands).
    """
    import tritonclient.grpc as grpcclient
    import tritonclient.grpc.aio as grpcaio

    client = grpcaio.InferenceServerClient(url)
    raw = grpcclient.InferenceServerClient(url)
    config = raw.get_model_config(model, as_json=True)["config"]
    input_name = config["input"][0]["name"]
    output_name = config["output"][0]["name"]
    pool = SharedMemoryPool(client, f"{REGION_PREFIX}{os.getpid()}_{id(client):x}")

    async def target(payload: np.ndarray) -> None:
        inp = grpcclient.InferInput(input_name, list(payload.shape), "FP32")
        out = [grpcclient.InferRequestedOutput(output_name)]
        if not shared_memory:
            inp.set_data_from_numpy(payload)
            await client.infer(model, [inp], outputs=out)
            return
        import tritonclient.utils.shared_memory as shm

        r = await pool.take(payload.nbytes)
        reuse = False  # stays False when cancelled: the server may still read the region
        try:
            shm.set_shared_memory_region(r[1], [payload])
            inp.set_shared_memory(r[0], payload.nbytes)
            await client.infer(model, [inp], outputs=out)
            reuse = True
        except Exception:
            reuse = True  # answered with an error (or never sent): nothing holds the region
            raise
        finally:
            pool.give(r, reuse=reuse)

    async def close() -> list[str]:
        try:
            return await pool.close()
        finally:
            await client.close()
            raw.close()

    return target, _detector_stats(raw, model), close


def detector_payloads(images: Sequence[bytes], spec, *, batch: int = 1) -> list[np.ndarray]:
    """Each image preprocessed as the server would, stacked ``batch`` at a time (YOLO's square
    letterbox makes every tensor the same shape; Faster R-CNN takes one image per call)."""
    from bonefrac.pipeline import preprocessor

    pre = preprocessor(spec)
    tensors = [pre(data)[0] for data in images]
    if batch == 1:
        return [t[None] for t in tensors]
    return [
        np.stack([tensors[(i + k) % len(tensors)] for k in range(batch)])
        for i in range(len(tensors))
    ]
