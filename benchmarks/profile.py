"""Where a served Faster R-CNN spends its time: ONNX Runtime's own profiler over the served graph.

Each variant (a model of a repository, with optional ONNX Runtime settings) runs on the same
images, preprocessed and post-processed exactly as served (:mod:`bonefrac.pipeline`); the node
times ONNX Runtime records (``SessionOptions.enable_profiling``) are grouped into the stages of
the architecture by the module scopes torch.onnx writes into node names::

    python -m bonefrac.benchmarks.profile --images DATA/valid/images --count 24 \\
        --variant before=old_repository:frcnn --variant after=model_repository:frcnn \\
        --json benchmarks/results/frcnn_profile.json --readme benchmarks/README.md
    python -m bonefrac.benchmarks.profile --render-only   # rewrite the README block from the record

Stages: ``python_pre`` (decode and size cap), ``transform`` (the graph's resize and
normalisation), ``backbone``, ``fpn``, ``rpn`` (head, anchors, box decode, proposal top-k and
NMS), ``roi_heads`` (multi-scale RoIAlign, box head, predictor), ``postprocess`` (box decode,
score floor, per-class NMS, top-k, scaling back), ``python_post`` (threshold, class names), and
``runtime`` (the part of ``session.run`` outside any node).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RECORD = ROOT / "benchmarks" / "results" / "frcnn_profile.json"
README = ROOT / "benchmarks" / "README.md"
BEGIN, END = "<!-- frcnn-profile:begin -->", "<!-- frcnn-profile:end -->"

GRAPH_STAGES = ("transform", "backbone", "fpn", "rpn", "roi_heads", "postprocess")
STAGES = ("python_pre", *GRAPH_STAGES, "runtime", "python_post")
#: Module scopes in node names, first match wins (``/roi_heads/`` alone: the detection post-
#: processing torchvision runs inside the RoI heads module).
_SCOPES = (
    ("/backbone/body/", "backbone"),
    ("/backbone/fpn/", "fpn"),
    ("/rpn/", "rpn"),
    ("/roi_heads/box_roi_pool/", "roi_heads"),
    ("/roi_heads/box_head/", "roi_heads"),
    ("/roi_heads/box_predictor/", "roi_heads"),
    ("/roi_heads/", "postprocess"),
)
_OPT_LEVELS = ("disable", "basic", "extended", "all")


def _scope_stage(name: str, *, after_backbone: bool) -> str | None:
    for scope, stage in _SCOPES:
        if scope in name:
            return stage
    if "/transform/" in name:  # torchvision's transform both resizes and scales boxes back
        return "postprocess" if after_backbone else "transform"
    return None


def _propagate(nodes, stages: dict[str, str | None]) -> None:
    """Give unscoped nodes (torch's batched-NMS wrappers, the wrapper's own ops) the stage of
    the node producing their input, else of the node reading their output."""
    producer = {out: n.name for n in nodes for out in n.output}
    for n in nodes:
        if stages[n.name] is None:
            found = [stages.get(producer.get(i, "")) for i in n.input]
            stages[n.name] = next((s for s in found if s), None)
    for n in reversed(nodes):
        if stages[n.name] is None:
            readers = [stages[m.name] for m in nodes if set(m.input) & set(n.output)]
            stages[n.name] = next((s for s in readers if s), None)


def node_stages(onnx_path: str | os.PathLike[str]) -> tuple[dict[str, str], set[str]]:
    """Stage of every node of the graph, by node and output-tensor name; and the names of nodes
    inside subgraphs (an ``If``'s branches: their time is already in the ``If``'s)."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    nodes = list(graph.node)
    first = next((i for i, n in enumerate(nodes) if "/backbone/" in n.name), len(nodes))
    stages = {n.name: _scope_stage(n.name, after_backbone=i > first) for i, n in enumerate(nodes)}
    _propagate(nodes, stages)
    table = {n.name: stages[n.name] for n in nodes if stages[n.name]}
    table.update({out: stages[n.name] for n in nodes for out in n.output if stages[n.name]})
    nested: set[str] = set()
    for n in nodes:
        for attr in n.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                for sub in attr.g.node:
                    nested.add(sub.name)
                    table[sub.name] = table.get(n.name, "postprocess")
    return table, nested


def ort_node_stage(name: str, table: dict[str, str]) -> str | None:
    """Stage of a node as ONNX Runtime names it after optimising: the graph's own name, a fused
    node (``fused X``), or a layout node named after the tensor it writes (``X_nchwc``)."""
    name = name.removeprefix("fused ")
    for candidate in (name, re.sub(r"_nchwc$", "", name), re.sub(r"_token_\d+$", "", name)):
        if candidate in table:
            return table[candidate]
    return _scope_stage(name, after_backbone=False)


@dataclass
class Variant:
    """One thing to profile: a repository's model with ONNX Runtime settings."""

    name: str
    repository: Path
    model: str = "frcnn"
    opt: str = "all"
    threads: int = 2
    runs: list[dict[str, float]] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str) -> Variant:
        """``NAME=REPOSITORY[:MODEL][@opt=LEVEL,threads=N]``."""
        name, sep, rest = text.partition("=")
        if not sep or not name or not rest:
            raise ValueError(
                f"--variant {text!r}: expected NAME=REPOSITORY[:MODEL][@opt=..,threads=..]"
            )
        where, _, settings = rest.partition("@")
        repo, _, model = where.partition(":")
        variant = cls(name=name, repository=Path(repo), model=model or "frcnn")
        for item in filter(None, settings.split(",")):
            key, _, value = item.partition("=")
            if key == "opt" and value in _OPT_LEVELS:
                variant.opt = value
            elif key == "threads" and value.isdigit():
                variant.threads = int(value)
            else:
                levels = "|".join(_OPT_LEVELS)
                raise ValueError(
                    f"--variant {text!r}: unknown setting {item!r} (opt={levels}, threads=N)"
                )
        return variant

    def settings(self) -> dict[str, Any]:
        return {
            "repository": self.repository.name,
            "model": self.model,
            "opt": self.opt,
            "threads": self.threads,
        }


def _session(onnx_path: Path, variant: Variant, prefix: str):
    import onnxruntime as ort

    from bonefrac.runtime import session_options

    options = session_options(threads=variant.threads, spin=False, opt_level=variant.opt)
    options.enable_profiling = True
    options.profile_file_prefix = prefix
    return ort.InferenceSession(
        str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"]
    )


def _graph_runs(
    profile_file: str, table: dict[str, str], nested: set[str]
) -> list[dict[str, float]]:
    """Per ``session.run``: milliseconds per graph stage and ``runtime`` (the rest of the run)."""
    events = json.loads(Path(profile_file).read_text())
    runs = [e for e in events if e.get("cat") == "Session" and e["name"] == "model_run"]
    nodes = sorted(
        (e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")),
        key=lambda e: e["ts"],
    )
    out = []
    for run in runs:
        stages = dict.fromkeys(GRAPH_STAGES, 0.0)
        last = "transform"
        for e in nodes:
            if not run["ts"] <= e["ts"] <= run["ts"] + run["dur"]:
                continue
            name = e["name"].removesuffix("_kernel_time")
            if name in nested:
                continue
            last = ort_node_stage(name, table) or last  # a layout node: the stage it sits in
            stages[last] += e["dur"] / 1000
        stages["runtime"] = max(0.0, run["dur"] / 1000 - sum(stages.values()))
        out.append(stages)
    return out


def profile(variants: list[Variant], images: list[Path], *, warmup: int = 1) -> None:
    """Run every variant on every image (interleaved, so background load hits all alike) and
    fill each variant's ``runs``: milliseconds per stage and image."""
    from bonefrac.pipeline import postprocessor, preprocessor, read_repository_model

    with tempfile.TemporaryDirectory(prefix="bonefrac-profile-") as tmp:
        loaded = []
        for v in variants:
            found = read_repository_model(v.repository, v.model)
            table, nested = node_stages(found.onnx_path)
            session = _session(found.onnx_path, v, os.path.join(tmp, v.name))
            loaded.append(
                (v, session, preprocessor(found.spec), postprocessor(found.spec), table, nested)
            )
        python: dict[str, list[dict[str, float]]] = {v.name: [] for v in variants}
        for i, path in enumerate([*images[:1] * warmup, *images]):
            data = path.read_bytes()
            for v, session, pre, post, _, _ in loaded:
                t0 = time.perf_counter()
                tensor, transform = pre(data)
                t1 = time.perf_counter()
                raw = session.run(None, {session.get_inputs()[0].name: tensor[None]})[0][0]
                t2 = time.perf_counter()
                post(raw, transform)
                t3 = time.perf_counter()
                if i >= warmup:
                    python[v.name].append(
                        {"python_pre": (t1 - t0) * 1e3, "python_post": (t3 - t2) * 1e3}
                    )
        for v, session, _, _, table, nested in loaded:
            graph = _graph_runs(session.end_profiling(), table, nested)[warmup:]
            v.runs = [{**g, **p} for g, p in zip(graph, python[v.name])]


def summarise(variant: Variant) -> dict[str, Any]:
    """Median milliseconds per stage, each stage's share of the summed time, the median total."""
    totals = {s: sum(r[s] for r in variant.runs) for s in STAGES}
    whole = sum(totals.values()) or 1.0
    return {
        "settings": variant.settings(),
        "images": len(variant.runs),
        "total_ms_median": statistics.median(sum(r[s] for s in STAGES) for r in variant.runs),
        "stages": {
            s: {
                "ms_median": statistics.median(r[s] for r in variant.runs),
                "share": totals[s] / whole,
            }
            for s in STAGES
        },
    }


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for package in ("bonefrac", "onnxruntime", "onnx", "numpy"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "not installed"
    return out


def _machine() -> dict[str, Any]:
    import platform

    cpu = platform.processor()
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
    }


_LABELS = {
    "python_pre": "Python pre-processing (decode, size cap)",
    "transform": "graph: resize + normalise",
    "backbone": "graph: backbone (MobileNetV3)",
    "fpn": "graph: FPN",
    "rpn": "graph: RPN (head, anchors, decode, top-k, NMS)",
    "roi_heads": "graph: RoI heads (MultiScaleRoIAlign, box head, predictor)",
    "postprocess": "graph: post-processing (decode, score floor, NMS, top-k)",
    "runtime": "ONNX Runtime between nodes",
    "python_post": "Python post-processing (threshold, names)",
}


def _cell(stage: dict[str, float]) -> str:
    return f"{stage['ms_median']:.1f} | {100 * stage['share']:.0f} %"


def render(record: dict[str, Any]) -> str:
    """The README block: median ms and share per stage, one column pair per variant."""
    variants = record["variants"]
    names = list(variants)
    head = "| stage | " + " | ".join(f"{n} ms | {n} share" for n in names) + " |"
    rule = "|---|" + "---:|---:|" * len(names)
    rows = [
        f"| {_LABELS[s]} | " + " | ".join(_cell(variants[n]["stages"][s]) for n in names) + " |"
        for s in STAGES
    ]
    total = (
        "| **total (median per image)** | "
        + " | ".join(f"**{variants[n]['total_ms_median']:.1f}** | " for n in names)
        + " |"
    )
    settings = "; ".join(
        "`{}`: {repository}:{model}, ORT opt {opt}, {threads} threads".format(n, **v["settings"])
        + f", {v['images']} images"
        for n, v in variants.items()
    )
    machine = record["machine"]
    return "\n".join(
        [
            BEGIN,
            f"Measured {record['date']} on {machine['cores']} cores ({machine['cpu']}), "
            f"onnxruntime {record['versions']['onnxruntime']}, load average "
            f"{record['load_average_before'][0]} before the run (other jobs shared the cores: "
            f"compare variants, which ran interleaved, not absolute times): {settings}. Written by "
            "`python -m bonefrac.benchmarks.profile` from `benchmarks/results/frcnn_profile.json`.",
            "",
            head,
            rule,
            *rows,
            total,
            END,
        ]
    )


def update_readme(readme: Path, record: dict[str, Any]) -> None:
    """Replace the block between the markers with :func:`render`'s.

    Raises:
        ValueError: the README has no block to replace.
    """
    text = readme.read_text()
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"{readme} has no {BEGIN} ... {END} block")
    readme.write_text(text[:start] + render(record) + text[end + len(END) :])


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bonefrac.benchmarks.profile", description=__doc__.split("\n\n")[0]
    )
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=REPO[:MODEL][@opt=..,threads=..]",
        help="a model to profile (repeat); opt: disable|basic|extended|all, threads: intra-op",
    )
    p.add_argument("--images", nargs="+", default=[], metavar="PATH", help="image files or folders")
    p.add_argument(
        "--count", type=int, default=24, help="images used, evenly spaced over those found"
    )
    p.add_argument("--warmup", type=int, default=1, help="unrecorded runs first")
    p.add_argument(
        "--json", default=str(RECORD), help="record to write (and read with --render-only)"
    )
    p.add_argument(
        "--readme", default=str(README), help="README whose block is rewritten ('' : none)"
    )
    p.add_argument(
        "--render-only", action="store_true", help="only rewrite the README block from --json"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not args.render_only:
        from bonefrac.client.cli import collect_images

        if not args.variant or not args.images:
            _parser().error("give --variant and --images (or --render-only)")
        try:
            variants = [Variant.parse(v) for v in args.variant]
            found = collect_images(args.images)
        except (ValueError, FileNotFoundError) as exc:
            _parser().error(str(exc))
        step = max(1, len(found) // max(1, args.count))
        images = found[::step][: args.count]
        load = [round(x, 2) for x in os.getloadavg()]
        profile(variants, images, warmup=args.warmup)
        record = {
            "command": "python -m bonefrac.benchmarks.profile "
            + " ".join(sys.argv[1:] if argv is None else argv),
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": _machine(),
            "versions": _versions(),
            "settings": {"images": len(images), "warmup": args.warmup, "spin": False},
            "load_average_before": load,
            "variants": {v.name: summarise(v) for v in variants},
        }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(record, indent=1) + "\n")
    record = json.loads(Path(args.json).read_text())
    if args.readme:
        update_readme(Path(args.readme), record)
    print(render(record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
