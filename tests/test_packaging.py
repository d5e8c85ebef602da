"""Packaging: one import name, folders mapped into it, extras for everything beyond serving and
calling models, and a serving path free of torch."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

from bonefrac._cli import EXTRA_OF_MODULE

ROOT = Path(__file__).resolve().parent.parent

#: What only an extra may pull in (the UI, the evaluator, DICOM, the benchmarks, export), and the
#: extra that does: the CLI names it when a command misses one.
OPTIONAL = EXTRA_OF_MODULE


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), ROOT],
        check=True,
        capture_output=True,
        text=True,
    )
    return next(out.glob("bonefrac-*.whl"))


def _metadata(wheel: Path):
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        return Parser().parsestr(zf.read(name).decode())


def _requirement_name(line: str) -> str:
    return re.match(r"[A-Za-z0-9_.-]+", line).group(0).lower().replace("_", "-")


def _requirements(wheel: Path) -> dict[str | None, list[str]]:
    """Requires-Dist of the wheel by extra (None: the base install)."""
    found: dict[str | None, list[str]] = {}
    for line in _metadata(wheel).get_all("Requires-Dist"):
        requirement, _, marker = line.partition(";")
        extra = re.search(r"""extra\s*==\s*["']([^"']+)""", marker)
        found.setdefault(extra.group(1) if extra else None, []).append(requirement.strip())
    return found


def _closure(requirements: list[str]) -> set[str]:
    """The distributions a pip install of ``requirements`` brings (normalised names), followed
    through the metadata of what is installed here, markers evaluated for this interpreter."""
    from importlib.metadata import PackageNotFoundError, requires

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    names: set[str] = set()
    seen: set[tuple[str, str]] = set()
    todo = [(r, "") for r in requirements]  # (requirement, the extra its marker is read under)
    while todo:
        text, extra = todo.pop()
        requirement = Requirement(text)
        if requirement.marker and not requirement.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(requirement.name)
        names.add(name)
        for wanted in {"", *requirement.extras} - {e for n, e in seen if n == name}:
            seen.add((name, wanted))
            try:
                todo += [(child, wanted) for child in requires(name) or []]
            except PackageNotFoundError:
                continue
    return names


@pytest.fixture(scope="module")
def not_in_base(wheel) -> list[str]:
    """The optional libraries that a base install does not bring, even indirectly."""
    return sorted(set(OPTIONAL) - _closure(_requirements(wheel)[None]))


def test_wheel_maps_folders_under_one_import_name(wheel):
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


def test_base_install_pulls_no_optional_library_and_the_extras_declare_them(wheel):
    requirements = _requirements(wheel)
    base = {_requirement_name(r) for r in requirements[None]}
    assert {"gradio", "matplotlib", "pycocotools", "pydicom", "fastapi", "torch"} <= set(OPTIONAL)
    assert {"nvidia-pytriton", "tritonclient", "onnxruntime", "numpy"} <= base, base
    assert not base & set(OPTIONAL), base & set(OPTIONAL)
    # Not even through the base dependencies' own dependencies (what the README promises).
    promised = {"gradio", "matplotlib", "pycocotools", "pydicom", "torch", "ultralytics"}
    assert not _closure(requirements[None]) & promised
    extras = set(_metadata(wheel).get_all("Provides-Extra"))
    assert {"ui", "eval", "dicom", "bench", "triton", "export", "train", "dev"} <= extras
    for module, extra in OPTIONAL.items():
        assert module in {_requirement_name(r) for r in requirements[extra]}, (module, extra)
    # The UI runs the evaluator (Metrics tab) and reads DICOM: it brings both extras along.
    assert any(re.fullmatch(r"bonefrac\[dicom,\s*eval\]", r) for r in requirements["ui"])
    # Pins that keep one pip command consistent (nvidia-pytriton needs numpy<2).
    for extra in (None, "triton"):
        assert "numpy<2,>=1.24" in requirements[extra] or "numpy>=1.24,<2" in requirements[extra]
        assert "opencv-python-headless==4.11.0.86" in requirements[extra]


def test_make_test_installs_every_extra_in_one_pip_command_and_demo_the_ui(wheel):
    makefile = (ROOT / "Makefile").read_text()
    listed = re.search(r"^EXTRAS := (.+)$", makefile, flags=re.M).group(1).split(",")
    assert set(listed) >= set(_metadata(wheel).get_all("Provides-Extra")) - {"train"}, listed
    dev_rule = re.search(r"^\$\(VENV\)/\.dev:.*\n((?:\t.*\n)+)", makefile, flags=re.M).group(1)
    assert dev_rule.count("$(PIP)") == 1 and "'.[$(EXTRAS)]'" in dev_rule, dev_rule
    assert re.search(r"^test: \$\(VENV\)/\.dev\b", makefile, flags=re.M)
    demo = re.search(r"^demo: (.+)$", makefile, flags=re.M).group(1).split()
    ui_rule = re.search(r"^\$\(VENV\)/\.ui:.*\n((?:\t.*\n)+)", makefile, flags=re.M).group(1)
    assert "$(VENV)/.ui" in demo and "-e '.[ui]'" in ui_rule


def test_triton_image_installs_the_triton_extra(wheel, tmp_path):
    dockerfile = (ROOT / "docker" / "triton.Dockerfile").read_text()
    assert "pip install --no-cache-dir --no-deps ." in dockerfile
    assert "docker/extra_requirements.py bonefrac triton" in dockerfile
    # No requirement typed by hand: every pip install reads its list from the package.
    assert not re.search(r"""["'][A-Za-z][\w.-]*(\[[\w,]+\])?[<>=]""", dockerfile), dockerfile
    assert "pip install --no-cache-dir '.[ui]'" in (ROOT / "docker" / "ui.Dockerfile").read_text()
    # Run the script the image runs, on the wheel's own metadata.
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(tmp_path / "site")
    listed = subprocess.run(
        [sys.executable, str(ROOT / "docker" / "extra_requirements.py"), "bonefrac", "triton"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(tmp_path / "site")},
        check=True,
    ).stdout.split()
    assert listed == _requirements(wheel)["triton"]
    names = {_requirement_name(r) for r in listed}
    assert {"pydicom", "numpy", "opencv-python-headless", "pillow", "tritonclient"} <= names
    assert not names & {"onnxruntime", "nvidia-pytriton", "torch", "gradio"}, names
    missing = subprocess.run(
        [sys.executable, str(ROOT / "docker" / "extra_requirements.py"), "bonefrac", "gpu"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(tmp_path / "site")},
    )
    assert missing.returncode == 1, missing.stderr
    assert "no extra 'gpu'" in missing.stderr and "triton" in missing.stderr


#: Run ``bonefrac.cli.main`` with the libraries a base install lacks made unimportable.
BASE_INSTALL = (
    "import sys\n"
    "for name in {missing!r}:\n"
    "    sys.modules[name] = None\n"
    "from bonefrac.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def _base_cli(missing: list[str], *args: str) -> list[str]:
    return [sys.executable, "-c", BASE_INSTALL.format(missing=missing), *args]


@pytest.mark.server
def test_serve_and_infer_work_on_a_base_install(repository, valid_images, tmp_path, not_in_base):
    """``bonefrac serve`` and ``bonefrac infer`` with what a base install lacks unimportable."""
    import json

    import tritonclient.grpc as grpcclient

    from bonefrac.server import free_ports

    grpc_port, http_port, metrics_port = free_ports(3)
    serve = subprocess.Popen(
        _base_cli(
            not_in_base,
            "serve",
            "--repository",
            str(repository),
            "--grpc-port",
            str(grpc_port),
            "--http-port",
            str(http_port),
            "--metrics-port",
            str(metrics_port),
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        raw = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        deadline = time.monotonic() + 180
        while True:
            assert serve.poll() is None, serve.stdout.read()
            try:
                if raw.is_server_ready():
                    break
            except Exception:  # not listening yet
                pass
            assert time.monotonic() < deadline, "bonefrac serve never became ready"
            time.sleep(0.5)
        out = tmp_path / "out.json"
        infer = subprocess.run(
            _base_cli(
                not_in_base,
                "infer",
                str(valid_images[0]),
                "--server",
                f"127.0.0.1:{grpc_port}",
                "--conf",
                "0.001",
                "--json",
                str(out),
                "--no-progress",
            ),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert infer.returncode == 0, infer.stderr
        records = json.loads(out.read_text())
        assert len(records) == 1 and len(records[0]["detections"]) > 0, records
    finally:
        serve.send_signal(signal.SIGINT)
        try:
            log, _ = serve.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            serve.kill()
            raise
    assert serve.returncode == 0, log
    assert "tritonserver stopped" in log


def test_a_missing_extra_is_named_with_its_install_command(tmp_path, not_in_base):
    from PIL import Image

    assert {"gradio", "matplotlib"} <= set(not_in_base)
    ui = subprocess.run(
        _base_cli(not_in_base, "ui", "--server", "127.0.0.1:1"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ui.returncode == 1, ui.stdout + ui.stderr
    assert "pip install 'bonefrac[ui]'" in ui.stderr and "gradio" in ui.stderr, ui.stderr
    # `bonefrac data summary` counts without the extras, then needs matplotlib for its plot.
    for split in ("train", "valid"):
        (tmp_path / split / "images").mkdir(parents=True)
        (tmp_path / split / "labels").mkdir(parents=True)
        Image.new("RGB", (64, 48)).save(tmp_path / split / "images" / "a.jpg")
        (tmp_path / split / "labels" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (tmp_path / "data.yaml").write_text("train: train/images\nval: valid/images\nnames: [a]\n")
    summary = subprocess.run(
        _base_cli(
            not_in_base,
            "data",
            "summary",
            str(tmp_path / "data.yaml"),
            "--out",
            str(tmp_path / "out"),
        ),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert summary.returncode == 1, summary.stdout + summary.stderr
    assert "pip install 'bonefrac[eval]'" in summary.stderr, summary.stderr


def test_serving_client_path_imports_no_optional_library():
    code = (
        "import sys\n"
        "import bonefrac, bonefrac.cli, bonefrac.client, bonefrac.processing, bonefrac.runtime\n"
        "import bonefrac.server, bonefrac.export, bonefrac.export.triton_config\n"
        "bonefrac.cli.build_parser()\n"
        f"heavy = [m for m in {sorted(OPTIONAL)!r} if m in sys.modules]\n"
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
