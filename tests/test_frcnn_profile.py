"""The Faster R-CNN profiler (``python -m bonefrac.benchmarks.profile``) in miniature, the README
block it writes, and the two export changes its findings led to: RoI levels merged by a gather,
and weights recovered from an exported graph."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bonefrac.benchmarks import profile

ROOT = Path(__file__).resolve().parents[1]
MODEL_STAGES = ("backbone", "fpn", "rpn", "roi_heads", "postprocess", "python_pre", "python_post")


def test_profile_groups_every_stage_of_the_served_graph(repository, valid_images, tmp_path):
    out = tmp_path / "profile.json"
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{profile.BEGIN}\nSTALE-BLOCK\n{profile.END}\nafter\n")
    images = [str(p) for p in valid_images[:2]]
    assert (
        profile.main(
            [
                "--variant",
                f"shipped={repository}:frcnn@threads=1",
                "--images",
                *images,
                "--count",
                "2",
                "--json",
                str(out),
                "--readme",
                str(readme),
            ]
        )
        == 0
    )
    record = json.loads(out.read_text())
    shipped = record["variants"]["shipped"]
    assert shipped["images"] == 2 and shipped["settings"]["threads"] == 1
    stages = shipped["stages"]
    assert set(stages) == set(profile.STAGES)
    assert all(stages[s]["ms_median"] > 0 for s in MODEL_STAGES), stages
    assert sum(s["share"] for s in stages.values()) == pytest.approx(1.0)
    assert shipped["total_ms_median"] >= max(s["ms_median"] for s in stages.values())
    text = readme.read_text()
    assert text.startswith("before\n") and text.endswith("\nafter\n") and "STALE-BLOCK" not in text
    assert profile.render(record) in text


def test_every_node_of_the_shipped_graph_has_a_stage(repository):
    table, nested = profile.node_stages(repository / "frcnn_detector" / "1" / "model.onnx")
    import onnx

    graph = onnx.load(str(repository / "frcnn_detector" / "1" / "model.onnx")).graph
    assert nested  # the two batched NMS run inside If branches
    missing = [n.name for n in graph.node if n.name not in table]
    assert not missing, missing[:10]
    assert set(table.values()) == set(profile.GRAPH_STAGES)


def test_a_bad_variant_is_refused_with_its_syntax(capsys):
    with pytest.raises(SystemExit) as exc:
        profile.main(["--variant", "x=repo@opt=fastest", "--images", "."])
    assert exc.value.code == 2
    assert "opt=disable|basic|extended|all" in capsys.readouterr().err


def test_committed_readme_block_is_what_the_committed_record_renders():
    record = json.loads(profile.RECORD.read_text())
    assert {"before", "after"} <= set(record["variants"])
    assert "/" not in record["command"].split()[0]  # no machine paths in the record
    assert profile.render(record) in profile.README.read_text(), (
        "run: python -m bonefrac.benchmarks.profile --render-only"
    )


def test_gather_merge_equals_torchvisions_scatter_merge():
    torch = pytest.importorskip("torch")
    from torchvision.ops.poolers import _onnx_merge_levels

    from bonefrac.export.frcnn import _gather_merge_levels

    generator = torch.Generator().manual_seed(0)
    levels = torch.randint(0, 3, (50,), generator=generator)
    results = [torch.rand(int((levels == k).sum()), 4, 2, 2, generator=generator) for k in range(3)]
    assert torch.equal(_gather_merge_levels(levels, results), _onnx_merge_levels(levels, results))
    empty = torch.zeros(0, dtype=torch.int64)
    assert _gather_merge_levels(empty, [torch.zeros(0, 4, 2, 2)] * 3).shape == (0, 4, 2, 2)


def test_weights_recovered_from_the_shipped_graph_reproduce_it(repository, valid_images, tmp_path):
    pytest.importorskip("torch")
    from bonefrac.export.frcnn import recover_checkpoint

    out = tmp_path / "recovered.pth"
    parity = recover_checkpoint(
        repository / "frcnn_detector" / "1" / "model.onnx", out, parity_images=valid_images[:1]
    )
    assert not parity.note.endswith(" of 0"), parity.note  # there were detections to compare
    assert "0 unmatched" in parity.note and parity.max_abs_diff_boxes < 0.05
    assert out.stat().st_size > 10_000_000


@pytest.mark.parametrize("norm", ["batch", "group"])
def test_weights_recovered_from_a_graph_of_either_norm(norm, valid_images, tmp_path):
    """BatchNorm is folded into the convolutions by the exporter, GroupNorm becomes
    InstanceNormalization with a Mul and an Add: both are read back into the model that
    reproduces the graph, whichever norm is bundled."""
    pytest.importorskip("torch")
    import torch

    from bonefrac.export.frcnn import export_frcnn, recover_checkpoint

    exported = export_frcnn(
        out=tmp_path / "repo",
        class_names=["a", "b"],
        norm=norm,
        min_size=256,
        max_size=320,
        parity_images=valid_images[:1],
    )
    out = tmp_path / "recovered.pth"
    parity = recover_checkpoint(exported.onnx_path, out, parity_images=valid_images[:1])
    assert not parity.note.endswith(" of 0"), parity.note  # there were detections to compare
    assert "0 unmatched" in parity.note and parity.max_abs_diff_boxes < 0.05
    state = torch.load(out, weights_only=True)
    assert any(k.endswith(".running_mean") for k in state) == (norm == "batch")
