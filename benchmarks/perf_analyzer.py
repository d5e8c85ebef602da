"""Triton's own load tool, perf_analyzer, as a cross-check of bonefrac's load generator.

The tritonclient 2.51.0 wheel (the server's version) carries a perf_analyzer binary that runs on
this platform's glibc (newer wheels need a newer glibc; the PyPI package ``perf-analyzer`` is an
empty placeholder). :func:`install` takes the binary out of that wheel into a cache folder and
links the two libraries it needs from the ``nvidia-pytriton`` wheel.
"""

from __future__ import annotations

import base64
import csv
import json
import os
import re
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


def locate() -> Path | None:
    """The perf_analyzer binary (``BONEFRAC_PERF_ANALYZER`` or the cache), or None."""
    env = os.environ.get("BONEFRAC_PERF_ANALYZER")
    if env:
        return Path(env)
    binary = cache_dir() / "bin" / "perf_analyzer"
    return binary if binary.is_file() else None


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
    for pattern, name in (
        ("libcudart-*.so.12*", "libcudart.so.12"),
        ("libb64-*.so.0d", "libb64.so.0d"),
    ):
        found = sorted(libs.glob(pattern))
        if not found:
            raise RuntimeError(f"{pattern} is not in {libs}")
        link = target / "lib" / name
        link.unlink(missing_ok=True)
        link.symlink_to(found[0])
    return target / "bin" / "perf_analyzer"


def input_data(images: list[bytes], path: Path) -> Path:
    """perf_analyzer's input file: each image as one serialized BYTES element (length prefix)."""
    entries = [
        {"image": {"b64": base64.b64encode(struct.pack("<I", len(b)) + b).decode()}} for b in images
    ]
    path.write_text(json.dumps({"data": entries}))
    return path


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
    """One perf_analyzer step, in bonefrac bench's run format.

    Raises:
        RuntimeError: with perf_analyzer's output when it fails.
    """
    with tempfile.TemporaryDirectory() as tmp:
        data = input_data(images, Path(tmp) / "data.json")
        out = Path(tmp) / "out.csv"
        env = {
            **os.environ,
            "LD_LIBRARY_PATH": os.pathsep.join(
                [str(binary.parent.parent / "lib"), os.environ.get("LD_LIBRARY_PATH", "")]
            ),
        }
        result = subprocess.run(
            [
                str(binary),
                "-m",
                model,
                "-u",
                url,
                "-i",
                "grpc",
                f"--concurrency-range={concurrency}:{concurrency}",
                f"--measurement-interval={int(window_s * 1000)}",
                f"--max-trials={max_trials}",
                f"--stability-percentage={stability_pct}",
                f"--input-data={data}",
                "-f",
                str(out),
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )
        if not out.is_file():
            # Exit 2 is perf_analyzer's "no stable measurement": it then writes no CSV, but its
            # output still holds every trial; the last one is reported, marked unstable.
            unstable = _last_pass(result.stdout) if result.returncode == 2 else None
            if unstable is None:
                raise RuntimeError(
                    f"perf_analyzer failed ({result.returncode}): "
                    f"{(result.stdout + result.stderr)[-3000:]}"
                )
            return {**_row(concurrency, unstable), "stable": False}
        row = next(csv.DictReader(out.open()))
    return {**_row(concurrency, row), "stable": result.returncode == 0}


_PASS = re.compile(r"Pass \[\d+\] throughput: ([\d.]+) infer/sec\. (p\d+|Avg) latency: (\d+) usec")


def _last_pass(stdout: str) -> dict[str, str] | None:
    """The last trial of an unstable run, as CSV-like fields: its throughput and the one latency
    statistic perf_analyzer prints per trial (p95 by default); the others are unknown."""
    found = _PASS.findall(stdout)
    if not found:
        return None
    rate, stat, usec = found[-1]
    row = {"Inferences/Second": rate}
    row.update({f"p{q} latency": "nan" for q in (50, 90, 95, 99)})
    if stat.startswith("p") and f"{stat} latency" in row:
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
        "mean_ms": None,
        "windows": None,
        "client_cpu_pct": None,
        "error_samples": [],
        "server": {},
    }
