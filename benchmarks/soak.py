"""Soak: saturate a served model for a bounded time and check that nothing degrades.

Counts requests and errors, samples the resident memory of tritonserver and its Python-backend
stubs, and compares memory after warm-up with memory at the end. Loopback only: the target is a
server this machine runs.
"""

from __future__ import annotations

import glob
import random
import statistics
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

SHM_GLOB = "/dev/shm/triton_python_backend_shm_region_*"


def server_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its children (the Python stubs), MB."""
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total / 1e6


@dataclass(frozen=True)
class SoakResult:
    """What a soak run saw.

    Attributes:
        duration_s, concurrency: the load.
        requests, errors: counts (errors holds the first few messages in ``error_samples``).
        throughput_rps: requests per second over the run.
        rss_after_warmup_mb, rss_end_mb: median memory over the first and the last 15 % of the
            measured window.
        rss_growth_pct: growth between the two.
        shm_files: Python-backend shared-memory files present at the end.
    """

    duration_s: float
    concurrency: int
    requests: int
    errors: int
    error_samples: list[str]
    throughput_rps: float
    rss_after_warmup_mb: float
    rss_end_mb: float
    rss_growth_pct: float
    rss_samples_mb: list[float]
    shm_files: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def soak(
    *,
    url: str,
    model: str,
    images: list[bytes],
    server_pid: int,
    duration_s: float = 60.0,
    warmup_s: float = 60.0,
    concurrency: int = 8,
    sample_every_s: float = 1.0,
    seed: int = 0,
) -> SoakResult:
    """Run ``concurrency`` closed-loop clients against ``url`` for ``warmup_s`` (not measured:
    Triton's and the stubs' shared-memory pools and allocators grow to their working size, about
    45 s at saturation on 2 cores) and then ``duration_s`` seconds (measured)."""
    from bonefrac.client import DetectionClient

    client = DetectionClient(url, model=model, timeout_s=60)
    stop = threading.Event()
    lock = threading.Lock()
    counts = {"ok": 0, "errors": 0}
    samples: list[str] = []

    def worker(k: int) -> None:
        rng = random.Random(seed + k)
        while not stop.is_set():
            try:
                client.detect(rng.choice(images))
                with lock:
                    counts["ok"] += 1
            except Exception as exc:  # counted and reported, the run goes on
                with lock:
                    counts["errors"] += 1
                    if len(samples) < 5:
                        samples.append(f"{type(exc).__name__}: {exc}")

    memory: list[tuple[float, float]] = []
    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(concurrency)]
    for t in threads:
        t.start()
    time.sleep(warmup_s)
    with lock:
        counts["ok"] = counts["errors"] = 0
        del samples[:]
    start = time.monotonic()
    while (elapsed := time.monotonic() - start) < duration_s:
        memory.append((elapsed, server_rss_mb(server_pid)))
        time.sleep(sample_every_s)
    stop.set()
    for t in threads:
        t.join(timeout=120)
    elapsed = time.monotonic() - start
    warm = [m for t, m in memory if t < 0.15 * duration_s] or [memory[0][1]]
    end = [m for t, m in memory if t >= 0.85 * duration_s] or [memory[-1][1]]
    before, after = statistics.median(warm), statistics.median(end)
    return SoakResult(
        duration_s=round(elapsed, 1),
        concurrency=concurrency,
        requests=counts["ok"] + counts["errors"],
        errors=counts["errors"],
        error_samples=samples,
        throughput_rps=round((counts["ok"] + counts["errors"]) / elapsed, 2),
        rss_after_warmup_mb=round(before, 1),
        rss_end_mb=round(after, 1),
        rss_growth_pct=round(100.0 * (after - before) / before, 2) if before else 0.0,
        rss_samples_mb=[round(m, 1) for _, m in memory],
        shm_files=len(glob.glob(SHM_GLOB)),
    )


def load_images(folder: str | Path, *, limit: int = 32) -> list[bytes]:
    from bonefrac.client.cli import collect_images

    return [p.read_bytes() for p in collect_images([str(folder)])[:limit]]
