"""Faster R-CNN with GroupNorm (``--norm group``): built without BatchNorm, trained, refused on a
resume with another norm, exported from its checkpoint (parity checked) and run."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.test_train import _train

pytestmark = [pytest.mark.export, pytest.mark.slow]


@pytest.mark.parametrize("arch", ["mobilenet_v3_fpn", "r50_fpn_v2"])
def test_group_norm_builder_has_no_batchnorm(arch):
    import torch

    from bonefrac.export.frcnn import build_frcnn
    from bonefrac.spec import FrcnnSpec

    spec = FrcnnSpec(class_names=("fracture",), arch=arch, min_size=128, max_size=160)
    model = build_frcnn(spec, norm="group")
    batch = [
        n for n, m in model.named_modules() if isinstance(m, torch.nn.modules.batchnorm._NormBase)
    ]
    assert batch == []
    groups = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.GroupNorm)}
    assert any(n.startswith("backbone.body") for n in groups)
    assert any(n.startswith("backbone.fpn") for n in groups)
    if arch == "r50_fpn_v2":
        assert any(n.startswith("roi_heads.box_head") for n in groups)
    for name, m in groups.items():
        assert m.num_channels % m.num_groups == 0, name
        assert m.num_groups == 32 or all(m.num_channels % g for g in range(m.num_groups + 1, 33))
    sizes = {m.num_channels: m.num_groups for m in groups.values()}
    if arch == "mobilenet_v3_fpn":
        assert sizes[72] == 24 and sizes[184] == 23 and sizes[960] == 32
    default = build_frcnn(spec)  # today's model: BatchNorm, no GroupNorm
    assert not any(isinstance(m, torch.nn.GroupNorm) for m in default.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in default.modules())


def test_frcnn_group_norm_trains_exports_runs_and_refuses_other_norm(
    tiny_data, tmp_path, valid_images
):
    from bonefrac.export._common import ExportError
    from bonefrac.export.frcnn import build_frcnn
    from bonefrac.pipeline import InProcessPipeline
    from bonefrac.spec import FrcnnSpec

    repo = tmp_path / "repo"
    common = ["frcnn", "--data", str(tiny_data), "--min-size", "128", "--max-size", "160"]
    common += ["--batch", "2", "--roi-batch", "64", "--rpn-proposals", "300", "--name", "gn"]
    out = _train(
        [*common, "--norm", "group", "--epochs", "1", "--limit", "4", "--val-limit", "2"]
        + ["--export-to", str(repo), "--export-name", "gnf"],
        tmp_path,
    )
    assert "epoch 1/1:" in out and "exported 'gnf'" in out
    run = tmp_path / "runs" / "gn"
    record = json.loads((run / "bonefrac_train.json").read_text())
    assert record["config"]["norm"] == "group"
    assert (run / "eval_valid_6class.json").is_file()

    resume = [*common, "--norm", "batch", "--epochs", "2", "--limit", "4", "--resume"]
    cli = [sys.executable, "-m", "bonefrac.cli", "train", *resume]
    refused = subprocess.run(
        [*cli, "--project", str(tmp_path / "runs")], capture_output=True, text=True, timeout=300
    )
    want = "resume with the options the run was started with: --norm group (now batch)"
    assert refused.returncode == 1 and want in refused.stderr, refused.stderr[-2000:]

    spec = FrcnnSpec(class_names=("fracture",), min_size=128, max_size=160)
    with pytest.raises(ExportError, match="trained with --norm group, not batch"):
        build_frcnn(spec, weights=run / "best.pth", norm="batch")

    pipeline = InProcessPipeline(repo, "gnf", threads=1)
    detections = pipeline.detect(valid_images[0].read_bytes(), conf_threshold=0.0)
    assert len(detections) > 0 and detections.image_size[0] > 0
