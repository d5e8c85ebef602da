"""benchmarks/RESULTS.md is what its generator writes from the committed record, and the targets'
verdicts follow their rules (no server: the record is read, nothing is measured)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


@pytest.fixture(scope="module")
def record() -> dict:
    return json.loads((RESULTS / "runs.json").read_text())


def test_committed_results_are_what_the_generator_writes(record):
    """Every figure of RESULTS.md comes from runs.json (regenerate with
    ``python -m bonefrac.benchmarks.report``); the plots it links are committed beside it."""
    from bonefrac.benchmarks.report import results_markdown, suite_plot_names

    text = (ROOT / "benchmarks" / "RESULTS.md").read_text()
    assert text == results_markdown(record, plots="results")
    for name in suite_plot_names(record["runs"]):
        assert (RESULTS / f"{name}.png").is_file(), name


def test_record_holds_what_the_report_shows(record):
    """The AP50 figures, the shipped variant and the run's duration are in the record; AP50
    taken from a committed evaluation record equals it."""
    assert {"started", "elapsed_s", "models", "ap50", "ap50_source", "shipped_variant"} <= set(
        record
    )
    source = record["ap50_source"].split()[0]
    if (ROOT / source).is_file():
        reports = {r["model"]["name"]: r for r in json.loads((ROOT / source).read_text())}
        assert record["ap50"] == {m: reports[m]["ap50"] for m in record["ap50"]}
    variants = {r.get("variant") for r in record["runs"]}
    assert record["shipped_variant"] in variants


def _row(target: str, concurrency: int, rps: float, **extra) -> dict:
    return {
        "target": target,
        "model": "yolo11",
        "concurrency": concurrency,
        "throughput_rps": rps,
        "p50_ms": 20.0,
        "p99_ms": 40.0,
        "stable": True,
        **extra,
    }


def test_verdicts_follow_each_rules_threshold():
    from bonefrac.benchmarks.targets import verdicts

    runs = [
        _row("triton", 1, 50.0),
        _row("in-process", 1, 60.0, p50_ms=16.0),  # 50/60 = 0.83 < 0.9; 20 - 16 = 4 ms > 3
        _row("ultralytics", 1, 25.0),  # 2.0 x >= 1.5
        _row("fastapi", 4, 40.0),
        _row("triton", 4, 45.0, p99_ms=39.0),  # more throughput and a lower p99
    ]
    got = {label: verdict for label, _, verdict in verdicts(runs)}
    assert got == {
        "served best throughput >= 0.9 x in-process ceiling (best sessions x threads)": "not met",
        "served p50 at concurrency 1 within 3 ms of in-process (one stream)": "not met",
        "served >= 1.5 x Ultralytics predict throughput": "met",
        "better throughput and p99 than FastAPI at concurrency 4": "met",
    }
    runs[-1]["p99_ms"] = 41.0  # more throughput but a higher p99: not both
    got = {label: verdict for label, _, verdict in verdicts(runs)}
    assert got["better throughput and p99 than FastAPI at concurrency 4"] == "not met"


def test_unstable_perf_analyzer_pass_is_a_reported_result():
    """A perf_analyzer step without a stable window still counts, and the report names it."""
    from bonefrac.benchmarks.targets import verdicts

    runs = [
        _row("triton", 2, 50.0),
        _row("perf_analyzer", 2, 52.0, stable=False),
        _row("triton", 4, 60.0),
        _row("perf_analyzer", 4, 80.0),
    ]
    (row,) = [v for v in verdicts(runs) if "perf_analyzer" in v[0]]
    assert row == (
        "load generator and perf_analyzer agree within 10 % on throughput",
        "largest difference 25.0 % (perf_analyzer found no stable window at c2)",
        "not met",
    )


def test_int8_ap50_rule_reads_the_records_figures():
    from bonefrac.benchmarks.targets import verdicts

    (row,) = verdicts([], {"yolo11": 0.30, "yolo11_int8": 0.285})
    assert row == (
        "INT8 AP50 on valid within 0.01 of FP32",
        "0.2850 vs 0.3000 (-0.0150)",
        "not met",
    )


def test_frcnn_accuracy_rule_fails_only_a_drop():
    """The Faster R-CNN speed target holds "at the same accuracy": AP50 more than 0.01 below the
    2026-11-24 model's fails it; any gain passes."""
    from bonefrac.benchmarks.targets import verdicts

    def verdict(ap50):
        (row,) = [v for v in verdicts([], {"frcnn": ap50}) if v[0].startswith("Faster R-CNN AP50")]
        return row[2]

    assert verdict(0.0073 - 0.011) == "not met"
    assert verdict(0.0073 - 0.009) == "met"
    assert verdict(0.0567) == "met"


def test_anchor_rules_compare_with_the_best_layout_and_name_it():
    """The in-process ceiling and Ultralytics' Triton-guide layout are their best layouts
    (named), and the ceiling is set against the guide (what any server could reach); Faster
    R-CNN is held to twice its 2026-11-24 throughput at the same AP50, and compared with
    torchvision in PyTorch."""
    from bonefrac.benchmarks.targets import verdicts

    runs = [
        _row("triton", 4, 60.0),
        _row("in-process", 1, 40.0, layout="one stream"),
        _row("in-process", 8, 70.0, layout="2 sessions x 1 thread"),
        _row("ultralytics-triton", 4, 20.0, layout="1 client thread"),
        _row("ultralytics-triton", 4, 32.0, layout="4 client threads"),
        _row("ultralytics-triton", 8, 99.0, layout="4 client threads"),  # not at 4: not used
        _row("triton", 2, 16.0, model="frcnn"),
        _row("torchvision", 2, 4.0, model="frcnn", layout="2 threads"),
    ]
    got = {label: (text, verdict) for label, text, verdict in verdicts(runs, {"frcnn": 0.02})}
    assert got == {
        "served best throughput >= 0.9 x in-process ceiling (best sessions x threads)": (
            "60.00 / 70.00 (2 sessions x 1 thread) = 0.86",
            "not met",
        ),
        "served >= 2 x Ultralytics' Triton-guide layout at concurrency 4 (its best client "
        "threads)": ("60.00 / 32.00 (4 client threads) = 1.88", "not met"),
        "in-process ceiling (no server) vs Ultralytics' Triton-guide layout at concurrency 4: "
        "the most any server could reach": ("70.00 / 32.00 (4 client threads) = 2.19", "measured"),
        "served Faster R-CNN >= 2 x its throughput of 2026-11-24 (best level)": (
            "16.00 / 7.80 = 2.05",
            "met",
        ),
        "Faster R-CNN AP50 on valid at most 0.01 below the 2026-11-24 model's": (
            "0.0200 vs 0.0073 (+0.0127)",
            "met",  # a better model is no failure of "at the same accuracy"
        ),
        "served Faster R-CNN vs torchvision in PyTorch, same weights (best throughput)": (
            "16.00 / 4.00 (2 threads) = 4.00",
            "measured",
        ),
    }


def test_a_step_without_answers_compares_with_nothing():
    """A baseline step that completed no request in its windows (0/s) gives no ratio."""
    from bonefrac.benchmarks.targets import verdicts

    runs = [_row("triton", 1, 8.0, model="frcnn"), _row("torchvision", 1, 0.0, model="frcnn")]
    assert not [v for v in verdicts(runs) if "torchvision" in v[0]]


def test_cpu_per_request_counts_the_server_where_there_is_one():
    """CPU per request adds the server's processes to the load generator's; the in-process
    ceiling has no server; a step that did not count its server's CPU gives no figure, and a
    record without any server CPU has no CPU section (older records read as before)."""
    from bonefrac.benchmarks.report import _cpu_section
    from bonefrac.benchmarks.targets import cpu_ms_per_request, verdicts

    served = _row("triton", 8, 150.0, client_cpu_pct=9.0, server_cpu_ms=11.6)
    ceiling = _row("in-process", 8, 180.0, layout="2 sessions x 1 thread", client_cpu_pct=198.0)
    assert cpu_ms_per_request(served) == pytest.approx(0.6 + 11.6)
    assert cpu_ms_per_request(ceiling) == pytest.approx(11.0)
    assert cpu_ms_per_request(_row("perf_analyzer", 8, 160.0, client_cpu_pct=None)) is None
    assert cpu_ms_per_request(_row("fastapi", 8, 130.0, client_cpu_pct=8.0)) is None
    got = {label: text for label, text, _ in verdicts([served, ceiling])}
    assert got[next(k for k in got if k.startswith("CPU per request"))] == (
        "11.00 / 12.20 ms (c8) = 0.90"
    )
    section = "\n".join(_cpu_section([served, ceiling]))
    assert "| triton | yolo11 |  | 8 | 150.00 | 0.60 | 11.60 | 12.20 | 1.83 |" in section
    assert "| in-process | yolo11 | 2 sessions x 1 thread | 8 | 180.00 | 11.00 |  | 11.00 |" in (
        section
    )
    assert _cpu_section([{**served, "server_cpu_ms": None}, ceiling]) == []


def test_server_cpu_is_read_from_the_process_and_its_children():
    """A child burning CPU counts towards the parent's CPU time while it runs and after it has
    ended (then its time is in the parent's cutime)."""
    import select
    import subprocess
    import sys
    import time

    from bonefrac.benchmarks.loadgen import process_tree_cpu_s

    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 1.0: pass"
    spawn = (
        f"import subprocess, sys, time; subprocess.run([sys.executable, '-c', {burn!r}]); "
        "print('done', flush=True); time.sleep(120)"
    )
    parent = subprocess.Popen([sys.executable, "-c", spawn], stdout=subprocess.PIPE, text=True)
    try:
        live = 0.0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if select.select([parent.stdout], [], [], 0.05)[0]:
                break  # the child ended and was waited for
            live = max(live, process_tree_cpu_s(parent.pid))
        assert parent.stdout.readline() == "done\n"
        ended = process_tree_cpu_s(parent.pid)
    finally:
        parent.kill()
        parent.wait()
    assert live >= 0.3  # seen while the child ran
    assert ended >= 0.9  # all of it once the child has ended (/proc counts in ticks)
