"""The project's performance targets, as data: one :class:`Rule` per target, saying what it
compares, its threshold and how its verdict is reached; :func:`verdicts` applies them to the
steps of one ``make bench`` record.

The targets: serving through Triton must cost nothing against running the same pipeline in the
caller's process (throughput against the best in-process layout of sessions x threads, and a
lone request's latency against one stream), must beat what a user would run without bonefrac
(Ultralytics ``predict()`` in PyTorch, a plain FastAPI + ONNX Runtime HTTP server, and the
layout of Ultralytics' Triton guide: its client against the served detector alone), bonefrac's
load generator must agree with Triton's own (perf_analyzer), the INT8 model must keep the FP32
model's accuracy (its speed-up is measured, with no threshold), and the served Faster R-CNN must
be twice as fast as on 2026-11-24 (:data:`FRCNN_BEFORE`) at no less accuracy; its ratio to
torchvision's model in PyTorch is measured.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

Runs = Sequence[dict[str, Any]]
#: What a rule measures: (the value its threshold applies to, the text shown), or None when the
#: record lacks the steps it compares.
Measure = Callable[[Runs, dict[str, float]], "tuple[float, str] | None"]


def is_main(r: dict) -> bool:
    """A step of the main comparison (not a scaling, tuning or detector-direct step)."""
    return not (r.get("image_side") or r.get("variant") or r.get("batch"))


def _matching(runs: Runs, match: dict[str, Any]) -> list[dict]:
    return [r for r in runs if is_main(r) and all(r.get(k) == v for k, v in match.items())]


def best(runs: Runs, **match: Any) -> dict | None:
    """The main-comparison step with the highest throughput among those matching."""
    rows = _matching(runs, match)
    return max(rows, key=lambda r: r["throughput_rps"]) if rows else None


def at(runs: Runs, concurrency: int, **match: Any) -> dict | None:
    """The first main-comparison step at ``concurrency`` matching."""
    rows = _matching(runs, {**match, "concurrency": concurrency})
    return rows[0] if rows else None


SERVED = {"target": "triton", "model": "yolo11"}
SERVED_FRCNN = {"target": "triton", "model": "frcnn"}

#: The served Faster R-CNN before issue 16, the bar its speed-up is measured against: its
#: throughput at concurrency 1 in the ``make bench`` record of 2026-11-24 15:51 UTC
#: (``benchmarks/results/runs.json`` as committed then, commit aef8686: 7.80/s; 8.20/s at
#: concurrency 2) and its valid AP50 (``docs/eval/valid_6class.json`` of that model, commit
#: e2441b3, 6class protocol, all 348 images).
FRCNN_BEFORE = {
    "throughput_rps": 7.8,
    "ap50": 0.0073473506207892385,
    "source": "7.80/s served at concurrency 1 in the make bench record of 2026-11-24 15:51 UTC, "
    "valid AP50 0.0073 in docs/eval/valid_6class.json of that model",
}


@dataclass(frozen=True)
class Rule:
    """One target.

    Attributes:
        label: what is claimed; ``{threshold:g}`` (or ``{pct:g}``, the threshold in per cent)
            is filled in from ``threshold``.
        measure: what it compares (see :data:`Measure`).
        threshold: the bound the value must meet; None: measured, no verdict.
        holds: how the value meets the threshold (``operator.ge``: at least, ``operator.le``:
            at most, ``operator.gt``: more than).
    """

    label: str
    measure: Measure
    threshold: float | None = None
    holds: Callable[[float, float], bool] = operator.ge

    def verdict(self, runs: Runs, ap: dict[str, float]) -> tuple[str, str, str] | None:
        """(target, measured, verdict), or None when the record lacks the steps."""
        measured = self.measure(runs, ap)
        if measured is None:
            return None
        value, text = measured
        if self.threshold is None:
            return self.label, text, "measured"
        met = self.holds(value, self.threshold)
        label = self.label.format(threshold=self.threshold, pct=100 * self.threshold)
        return label, text, "met" if met else "not met"


def _best_ratio(top: dict[str, Any], bottom: dict[str, Any], *, both: bool = False) -> Measure:
    """The best throughput of the steps matching ``top`` over that of ``bottom`` (the text
    shows both figures when ``both``)."""

    def measure(runs: Runs, ap: dict) -> tuple[float, str] | None:
        num, den = best(runs, **top), best(runs, **bottom)
        if not (num and den):
            return None
        found = _quotient(num["throughput_rps"], den["throughput_rps"], _layout(den))
        return found if both or found is None else (found[0], f"{found[0]:.2f} x")

    return measure


def _layout(row: dict) -> str:
    """`` (LAYOUT)`` for a step run in a named layout (sessions x threads, client threads)."""
    return f" ({row['layout']})" if row.get("layout") else ""


def _quotient(num: float, den: float, note: str = "") -> tuple[float, str] | None:
    """``num / den``, shown as ``num / den NOTE = ratio``; None when ``den`` is 0 (a step
    without one answer in its windows compares with nothing)."""
    if not den:
        return None
    return num / den, f"{num:.2f} / {den:.2f}{note} = {num / den:.2f}"


def _guide_at(concurrency: int, top: dict[str, Any] | None = None) -> Measure:
    """Served at ``concurrency`` (or the best of the steps matching ``top``) over the best
    layout of Ultralytics' Triton guide (one or several client threads) at ``concurrency``."""

    def measure(runs: Runs, ap: dict) -> tuple[float, str] | None:
        served = at(runs, concurrency, **SERVED) if top is None else best(runs, **top)
        guide = best(runs, target="ultralytics-triton", concurrency=concurrency)
        if not (served and guide):
            return None
        return _quotient(served["throughput_rps"], guide["throughput_rps"], _layout(guide))

    return measure


def cpu_ms_per_request(row: dict) -> float | None:
    """CPU milliseconds a step spent per completed request on this machine: the load
    generator's process (which holds the whole pipeline for an in-process target) plus the
    server's processes; None when the step did not count the server's (an older record,
    perf_analyzer) or answered nothing."""
    server = 0.0 if row["target"] in ("in-process", "ultralytics") else row.get("server_cpu_ms")
    if server is None or row.get("client_cpu_pct") is None or not row["throughput_rps"]:
        return None
    return 10.0 * row["client_cpu_pct"] / row["throughput_rps"] + server


def _cpu_bound(runs: Runs, ap: dict) -> tuple[float, str] | None:
    """The in-process ceiling's CPU per request over the best served step's: the fraction of
    the ceiling that serving can reach when client and server share the machine's cores and
    keep them all busy."""
    served, ceiling = best(runs, **SERVED), best(runs, target="in-process")
    if not (served and ceiling):
        return None
    ours, theirs = cpu_ms_per_request(served), cpu_ms_per_request(ceiling)
    if not (ours and theirs):
        return None
    text = f"{theirs:.2f} / {ours:.2f} ms (c{served['concurrency']}) = {theirs / ours:.2f}"
    return theirs / ours, text


def _frcnn_speedup(runs: Runs, ap: dict) -> tuple[float, str] | None:
    served = best(runs, **SERVED_FRCNN)
    return _quotient(served["throughput_rps"], FRCNN_BEFORE["throughput_rps"]) if served else None


def _frcnn_ap50_drop(runs: Runs, ap: dict) -> tuple[float, str] | None:
    """How far the served Faster R-CNN's AP50 is below the 2026-11-24 model's (negative when
    above): the speed-up must not cost accuracy; a better model is not a failure."""
    if "frcnn" not in ap:
        return None
    delta = ap["frcnn"] - FRCNN_BEFORE["ap50"]
    return -delta, f"{ap['frcnn']:.4f} vs {FRCNN_BEFORE['ap50']:.4f} ({delta:+.4f})"


def _lone_request_gap(runs: Runs, ap: dict) -> tuple[float, str] | None:
    served, ceiling = at(runs, 1, **SERVED), at(runs, 1, target="in-process")
    if not (served and ceiling):
        return None
    gap = served["p50_ms"] - ceiling["p50_ms"]
    return gap, f"{served['p50_ms']:.1f} - {ceiling['p50_ms']:.1f} = {gap:.1f} ms"


def _fastapi_at(concurrency: int) -> Measure:
    """Served vs FastAPI at one concurrency: the value is the smaller of the two advantages
    (throughput ratio, p99 ratio), so it is above 1 only when served wins on both."""

    def measure(runs: Runs, ap: dict) -> tuple[float, str] | None:
        s, f = at(runs, concurrency, **SERVED), at(runs, concurrency, target="fastapi")
        if not (s and f):
            return None
        value = min(s["throughput_rps"] / f["throughput_rps"], f["p99_ms"] / s["p99_ms"])
        text = (
            f"{s['throughput_rps']:.2f} vs {f['throughput_rps']:.2f}/s, p99 "
            f"{s['p99_ms']:.0f} vs {f['p99_ms']:.0f} ms"
        )
        return value, text

    return measure


def _perf_analyzer_gap(runs: Runs, ap: dict) -> tuple[float, str] | None:
    """The largest throughput difference, relative to perf_analyzer's, over the levels both ran;
    perf_analyzer steps without a stable window count too (their last trial), and are named."""
    diffs, unstable = [], []
    for r in runs:
        ours = at(runs, r["concurrency"], **SERVED) if r["target"] == "perf_analyzer" else None
        if ours:
            diffs.append(abs(ours["throughput_rps"] - r["throughput_rps"]) / r["throughput_rps"])
            if r.get("stable") is False:
                unstable.append(f"c{r['concurrency']}")
    if not diffs:
        return None
    text = f"largest difference {100 * max(diffs):.1f} %"
    if unstable:
        text += f" (perf_analyzer found no stable window at {', '.join(unstable)})"
    return max(diffs), text


def _int8_ap50_delta(runs: Runs, ap: dict) -> tuple[float, str] | None:
    if not ("yolo11" in ap and "yolo11_int8" in ap):
        return None
    delta = ap["yolo11_int8"] - ap["yolo11"]
    return abs(delta), f"{ap['yolo11_int8']:.4f} vs {ap['yolo11']:.4f} ({delta:+.4f})"


RULES: tuple[Rule, ...] = (
    Rule(
        "served best throughput >= {threshold:g} x in-process ceiling (best sessions x threads)",
        _best_ratio(SERVED, {"target": "in-process"}, both=True),
        0.9,
    ),
    Rule(
        "served p50 at concurrency 1 within {threshold:g} ms of in-process (one stream)",
        _lone_request_gap,
        3.0,
        operator.le,
    ),
    Rule(
        "CPU per request, in-process ceiling over served (load generator + server, best steps):"
        " the fraction of the ceiling that cores shared by client and server allow",
        _cpu_bound,
    ),
    Rule(
        "served >= {threshold:g} x Ultralytics predict throughput",
        _best_ratio(SERVED, {"target": "ultralytics"}),
        1.5,
    ),
    Rule(
        "served >= {threshold:g} x Ultralytics' Triton-guide layout at concurrency 4 "
        "(its best client threads)",
        _guide_at(4),
        2.0,
    ),
    Rule(
        "in-process ceiling (no server) vs Ultralytics' Triton-guide layout at concurrency 4: "
        "the most any server could reach",
        _guide_at(4, {"target": "in-process"}),
    ),
    *(
        Rule(
            f"better throughput and p99 than FastAPI at concurrency {c}",
            _fastapi_at(c),
            1.0,
            operator.gt,
        )
        for c in (4, 8)
    ),
    Rule(
        "load generator and perf_analyzer agree within {pct:g} % on throughput",
        _perf_analyzer_gap,
        0.1,
        operator.le,
    ),
    Rule(
        "INT8 speed-up over FP32 (served, best throughput)",
        _best_ratio({"target": "triton", "model": "yolo11_int8"}, SERVED),
    ),
    Rule("INT8 AP50 on valid within {threshold:g} of FP32", _int8_ap50_delta, 0.01, operator.le),
    Rule(
        "served Faster R-CNN >= {threshold:g} x its throughput of 2026-11-24 (best level)",
        _frcnn_speedup,
        2.0,
    ),
    Rule(
        "Faster R-CNN AP50 on valid at most {threshold:g} below the 2026-11-24 model's",
        _frcnn_ap50_drop,
        0.01,
        operator.le,
    ),
    Rule(
        "served Faster R-CNN vs torchvision in PyTorch, same weights (best throughput)",
        _best_ratio(SERVED_FRCNN, {"target": "torchvision", "model": "frcnn"}, both=True),
    ),
)


def verdicts(runs: Runs, ap: dict[str, float] | None = None) -> list[tuple[str, str, str]]:
    """(target, measured, verdict) for every rule the record has the steps for."""
    rows = (rule.verdict(runs, ap or {}) for rule in RULES)
    return [row for row in rows if row is not None]
