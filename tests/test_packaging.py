"""Packaging: one import name, folders mapped into it, and a serving path free of torch."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_maps_folders_under_one_import_name(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--no-isolation",
            "--outdir",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    wheel = next(tmp_path.glob("bonefrac-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for module in (
        "bonefrac/__init__.py",
        "bonefrac/processing.py",
        "bonefrac/client/__init__.py",
        "bonefrac/export/__init__.py",
        "bonefrac/ui/__init__.py",
        "bonefrac/benchmarks/__init__.py",
        "bonefrac/triton_models/onnx_detector.py",
    ):
        assert module in names, module
    top_level = {n.split("/")[0] for n in names if not n.startswith("bonefrac-")}
    assert top_level == {"bonefrac"}, top_level
    metadata = (
        zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    )
    base = [
        ln
        for ln in metadata.splitlines()
        if ln.startswith("Requires-Dist:") and "extra ==" not in ln
    ]
    assert base and not any(("torch" in ln or "ultralytics" in ln) for ln in base), base


def test_serving_client_path_does_not_import_torch():
    code = (
        "import sys\n"
        "import bonefrac, bonefrac.cli, bonefrac.client, bonefrac.processing, bonefrac.runtime\n"
        "import bonefrac.server, bonefrac.export, bonefrac.export.triton_config\n"
        "bonefrac.cli.build_parser()\n"
        "heavy = [m for m in ('torch', 'ultralytics', 'torchvision') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_help_lists_commands():
    out = subprocess.run(
        [sys.executable, "-m", "bonefrac.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for command in ("serve", "infer", "export"):
        assert command in out
    serve = subprocess.run(
        [sys.executable, "-m", "bonefrac.cli", "serve", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "127.0.0.1" in serve and "--grpc-port" in serve


def test_code_passes_ruff():
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", str(ROOT)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
