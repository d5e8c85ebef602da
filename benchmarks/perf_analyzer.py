"""Triton's own load tool, perf_analyzer, as a cross-check of bonefrac's load generator.

The tritonclient 2.51.0 wheel (the server's version) carries a perf_analyzer binary that runs on
this platform's glibc (newer wheels need a newer glibc; the PyPI package ``perf-analyzer`` is an
empty placeholder). :func:`install` takes the binary out of that wheel into a cache folder and
copies beside it the two libraries it needs from the ``nvidia-pytriton`` wheel (copies, not
links: the cache outlives the environment it was made from).
"""

from __future__ import annotations

import base64
import csv
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

VERSION = "2.51.0"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "bonefrac" / "perf_analyzer" / VERSION


LIBRARIES = (("libcudart-*.so.12*", "libcudart.so.12"), ("libb64-*.so.0d", "libb64.so.0d"))


def locate() -> Path | None:
    """The perf_analyzer binary (``BONEFRAC_PERF_ANALYZER`` or the cache), or None when the
    cache lacks the binary or one of its libraries (then :func:`install` makes it again)."""
    env = os.environ.get("BONEFRAC_PERF_ANALYZER")
    if env:
        return Path(env)
    binary = cache_dir() / "bin" / "perf_analyzer"
    libs = [cache_dir() / "lib" / name for _, name in LIBRARIES]
    return binary if binary.is_file() and all(lib.is_file() for lib in libs) else None


def install() -> Path:
    """Fetch the tritonclient 2.51.0 wheel with pip and unpack its perf_analyzer.

    Raises:
        RuntimeError: if pip cannot fetch the wheel or the binary is not in it.
    """
    import pytriton

    target = cache_dir()
    (target / "bin").mkdir(parents=True, exist_ok=True)
    (target / "lib").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--quiet",
                "-d",
                tmp,
                f"tritonclient=={VERSION}",
            ],
            capture_output=True,
            text=True,
        )
        wheels = list(Path(tmp).glob("tritonclient-*.whl"))
        if result.returncode != 0 or not wheels:
            raise RuntimeError(
                f"pip could not fetch tritonclient {VERSION}: {result.stderr[-500:]}"
            )
        member = f"tritonclient-{VERSION}.data/data/bin/perf_analyzer"
        with zipfile.ZipFile(wheels[0]) as wheel:
            if member not in wheel.namelist():
                raise RuntimeError(f"{wheels[0].name} has no {member}")
            (target / "bin" / "perf_analyzer").write_bytes(wheel.read(member))
    (target / "bin" / "perf_analyzer").chmod(0o755)
    libs = Path(pytriton.__file__).parent.parent / "nvidia_pytriton.libs"
    for pattern, name in LIBRARIES:
        found = sorted(libs.glob(pattern))
        if not found:
            raise RuntimeError(f"{pattern} is not in {libs}")
        copy = target / "lib" / name
        copy.unlink(missing_ok=True)  # also a dangling link left by an older version
        shutil.copyfile(found[0], copy)
    return target / "bin" / "perf_analyzer"


def input_data(images: list[bytes], path: Path) -> Path:
    """perf_analyzer's input file: each image as one serialized BYTES element (length prefix)."""
    entries = [
        {"image": {"b64": base64.b64encode(struct.pack("<I", len(b)) + b).decode()}} for b in images
    ]
    path.write_text(json.dumps({"data": entries}))
    return path


def _command(
    binary: Path,
    *,
    url: str,
    model: str,
    data: Path,
    out: Path,
    concurrency: int,
    window_s: float,
    max_trials: int,
    stability_pct: int,
) -> list[str]:
    """The perf_analyzer command line: ``-v`` prints every trial ("Pass [n] throughput: ..."),
    which is all there is to report when no window is stable (then no CSV is written)."""
    return [
        str(binary),
        "-m",
        model,
        "-u",
        url,
        "-i",
        "grpc",
        "-v",
        f"--concurrency-range={concurrency}:{concurrency}",
        f"--measurement-interval={int(window_s * 1000)}",
        f"--max-trials={max_trials}",
        f"--stability-percentage={stability_pct}",
        f"--input-data={data}",
        "-f",
        str(out),
    ]


def run(
    binary: Path,
    *,
    url: str,
    model: str,
    images: list[bytes],
    concurrency: int,
    window_s: float = 5.0,
    max_trials: int = 6,
    stability_pct: int = 10,
) -> dict[str, Any]:
    """One perf_analyzer step, in bonefrac bench's run format. When no measurement window is
    stable within ``max_trials`` (perf_analyzer's "Failed to obtain stable measurement", a busy
    machine), the last trial is the result, with ``stable: False``: a reported result, not a
    failure.

    Raises:
        RuntimeError: with perf_analyzer's output when it fails otherwise (no trial measured).
    """
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.csv"
        command = _command(
            binary,
            url=url,
            model=model,
            data=input_data(images, Path(tmp) / "data.json"),
            out=out,
            concurrency=concurrency,
            window_s=window_s,
            max_trials=max_trials,
            stability_pct=stability_pct,
        )
        lib = str(binary.parent.parent / "lib")
        env = {
            **os.environ,
            "LD_LIBRARY_PATH": os.pathsep.join([lib, os.environ.get("LD_LIBRARY_PATH", "")]),
        }
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
        if out.is_file():
            row = next(csv.DictReader(out.open()))
            return {**_row(concurrency, row), "stable": result.returncode == 0}
    said = result.stdout + result.stderr
    no_stable_window = result.returncode == 2 or "Failed to obtain stable measurement" in said
    unstable = _last_pass(result.stdout) if no_stable_window else None
    if unstable is None:
        raise RuntimeError(f"perf_analyzer failed ({result.returncode}): {said[-3000:]}")
    return {**_row(concurrency, unstable), "stable": False}


_PASS = re.compile(
    r"Pass \[\d+\] throughput: ([\d.e+]+) infer/sec\. (p\d+|Avg) latency: (\d+) usec"
)


def _last_pass(stdout: str) -> dict[str, str] | None:
    """The last trial of an unstable run, as CSV-like fields: its throughput and the one latency
    statistic perf_analyzer prints per trial (the mean, or a percentile when ``--percentile``
    is given); the others are unknown (NaN)."""
    found = _PASS.findall(stdout)
    if not found:
        return None
    rate, stat, usec = found[-1]
    row = {"Inferences/Second": rate, "Avg latency": "nan"}
    row.update({f"p{q} latency": "nan" for q in (50, 90, 95, 99)})
    row[f"{stat} latency"] = usec
    return row


def _row(concurrency: int, row: dict[str, str]) -> dict[str, Any]:
    ms = lambda key: round(float(row[key]) / 1000.0, 3)  # noqa: E731 - microseconds to ms
    return {
        "target": "perf_analyzer",
        "concurrency": concurrency,
        "rate_rps": None,
        "requests": None,
        "errors": 0,
        "throughput_rps": round(float(row["Inferences/Second"]), 3),
        "p50_ms": ms("p50 latency"),
        "p90_ms": ms("p90 latency"),
        "p95_ms": ms("p95 latency"),
        "p99_ms": ms("p99 latency"),
        "mean_ms": ms("Avg latency") if row.get("Avg latency") else None,
        "windows": None,
        "client_cpu_pct": None,
        "error_samples": [],
        "server": {},
    }
