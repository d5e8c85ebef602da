"""Shared fixtures: the bundled dataset, the committed model repository, a real tritonserver."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from bonefrac.export._offline import prepare_ultralytics_offline

# Tests import Ultralytics as the reference for letterbox and NMS: keep it offline and quiet.
prepare_ultralytics_offline()

# Property tests draw the same examples on every run and machine: a verdict does not change
# between two runs of the same code (a new counterexample shows when the code or test changes).
settings.register_profile(
    "steady", derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("steady")

ROOT = Path(__file__).resolve().parent.parent
REPOSITORY = ROOT / "model_repository"
DATA = Path(
    os.environ.get("BONEFRAC_DATA", ROOT.parent / "shared" / "data" / "bone-fracture-yolo8")
)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA / "valid" / "images").is_dir():
        pytest.fail(
            f"dataset not found at {DATA}: put shared/ beside the repository or set BONEFRAC_DATA"
        )
    return DATA


@pytest.fixture(scope="session")
def valid_images(data_dir: Path) -> list[Path]:
    """A fixed, varied sample of valid-split images (with and without fractures)."""
    images = sorted((data_dir / "valid" / "images").glob("*.jpg"))
    return images[::29][:12]


@pytest.fixture(scope="session")
def repository() -> Path:
    onnx = REPOSITORY / "yolo11_detector" / "1" / "model.onnx"
    if not onnx.is_file():
        pytest.fail(f"{onnx} is missing: run 'make demo' once (it rebuilds missing models)")
    return REPOSITORY


@pytest.fixture(scope="session")
def triton(repository: Path, tmp_path_factory: pytest.TempPathFactory):
    """A real tritonserver on free loopback ports, serving the committed model repository."""
    from bonefrac.server import TritonServer

    log = tmp_path_factory.mktemp("triton") / "tritonserver.log"
    server = TritonServer.ephemeral(repository, startup_timeout_s=300, log_path=log)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def reference(repository: Path):
    """The in-process reference pipeline over the same repository."""
    from bonefrac.pipeline import InProcessPipeline

    return InProcessPipeline(repository, "yolo11")


@pytest.fixture(scope="session")
def tiny_data(data_dir, tmp_path_factory):
    """8 train and 4 valid images with fractures, copied with their labels."""
    root = tmp_path_factory.mktemp("tiny")
    for split, count in (("train", 8), ("valid", 4)):
        labels = sorted(p for p in (data_dir / split / "labels").glob("*.txt") if p.stat().st_size)
        for sub in ("images", "labels"):
            (root / split / sub).mkdir(parents=True)
        for label in labels[:: max(1, len(labels) // count)][:count]:
            shutil.copy(label, root / split / "labels")
            shutil.copy(data_dir / split / "images" / f"{label.stem}.jpg", root / split / "images")
    (root / "data.yaml").write_text((data_dir / "data.yaml").read_text())
    return root / "data.yaml"
