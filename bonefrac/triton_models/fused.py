"""The one-model layout of the CPU profile: decode + letterbox, ONNX Runtime and post-processing
in one Python-backend model, so a request passes one Triton queue and no extra process hop.

Inputs and outputs are the ensemble's (``image``, optional ``conf_threshold`` /
``iou_threshold``; ``num_detections``, ``boxes``, ``scores``, ``class_ids``, ``class_names``,
``image_size``). The valid requests of a dynamic batch are pre-processed one by one, run through
ONNX Runtime grouped by input shape (one run per shape), then post-processed one by one, with the
step models' own functions (``bonefrac.triton_models._steps``); a request that fails a step gets
that step model's error (e.g. ``yolo11_preprocess: ...``) and the others go on. The ONNX file is
the newest version of ``<name>_detector``, read at load time.

With the ``solo_threads`` parameter above ``intra_op_threads``, each instance holds a second
ONNX Runtime session with that many threads and uses it when no other run of the server was in
progress at the start of this run nor is at its detector step (:class:`bonefrac.runtime.CoreGate`,
a lock on the model repository): a lone request gets every core, its threads spin-waiting only
while it runs, and under load each instance keeps to its own thread.

Per-step time goes to Triton's metrics port as two counters labelled ``model`` and ``step``
(``preprocess``, ``detector``, ``postprocess``): ``bonefrac_step_duration_us`` (a batch's step
time counted once for each request in it: the time each request spent in the step) and
``bonefrac_step_requests``; their ratio is the step's time per request. Detector runs are
counted by the threads they ran on: ``bonefrac_detector_runs`` (labels ``model``, ``threads``).
"""

import contextlib
import json
import time
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from bonefrac.pipeline import latest_version, postprocessor, preprocessor
from bonefrac.runtime import CoreGate
from bonefrac.spec import spec_from_json
from bonefrac.triton_models._steps import (
    load_detector,
    postprocess_request,
    preprocess_request,
    run_grouped,
)
from bonefrac.triton_models._support import error_response, model_parameters, required_parameter

STEPS = ("preprocess", "detector", "postprocess")


class TritonPythonModel:
    def initialize(self, args):
        self.name = args["model_name"]
        params = model_parameters(json.loads(args["model_config"]))
        self.spec = spec_from_json(required_parameter(params, "spec", model=self.name))
        detector_dir = Path(args["model_repository"]).parent / self.spec.detector
        onnx_path = str(latest_version(detector_dir) / self.spec.onnx_file)
        self.detector = load_detector(onnx_path, params)
        threads = self.detector.threads
        solo_threads = int(params.get("solo_threads", "0") or 0)
        self.solo, self.gate = None, None
        if threads and solo_threads > threads:
            try:
                self.gate = CoreGate(Path(args["model_repository"]).parent)
            except OSError as exc:  # serve without the solo session rather than not at all
                pb_utils.Logger.log_warn(
                    f"{self.name}: no {solo_threads}-thread runs for lone requests, the model "
                    f"repository cannot be locked here ({exc})"
                )
            else:
                # alone, its threads spin while it runs (a lone request's latency: 1.5 ms
                # less at concurrency 1, measured) and stop when it ends (the next run's cores)
                solo = {"intra_op_threads": str(solo_threads), "allow_spinning": "1"}
                self.solo = load_detector(onnx_path, {**params, **solo, "spin_after_run": "0"})
        # ONNX Runtime's first run is slow: have it before the first request (the config's
        # warm-up runs on the served input, an encoded image, which zeros are not).
        warmup_dims = json.loads(params.get("warmup_dims", "[]"))
        for detector in (self.detector, self.solo):
            if warmup_dims and detector is not None:
                detector.run(np.zeros((1, *warmup_dims), np.float32))
        self.preprocess = preprocessor(self.spec)
        self.postprocess = postprocessor(self.spec)
        self.families = (
            pb_utils.MetricFamily(
                name="bonefrac_step_duration_us",
                description="Time requests spent in each step of a one-model pipeline (us)",
                kind=pb_utils.MetricFamily.COUNTER,
            ),
            pb_utils.MetricFamily(
                name="bonefrac_step_requests",
                description="Requests through each step of a one-model pipeline",
                kind=pb_utils.MetricFamily.COUNTER,
            ),
        )
        self.metrics = {
            step: tuple(f.Metric(labels={"model": self.name, "step": step}) for f in self.families)
            for step in STEPS
        }
        self.runs_family = pb_utils.MetricFamily(
            name="bonefrac_detector_runs",
            description="Detector runs of a one-model pipeline by ONNX Runtime threads",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        self.runs = {
            n: self.runs_family.Metric(labels={"model": self.name, "threads": str(n)})
            for n in {d.threads for d in (self.detector, self.solo) if d is not None}
        }

    def execute(self, requests):
        with self.gate.running() if self.gate is not None else contextlib.nullcontext():
            return self._execute(requests)

    def _execute(self, requests):
        responses = [None] * len(requests)
        inputs = {}
        start = time.perf_counter()
        for i, request in enumerate(requests):
            try:
                inputs[i] = preprocess_request(pb_utils, request, self.preprocess)
            except Exception as exc:  # one bad image fails its own request only
                responses[i] = error_response(pb_utils, exc, model=self.spec.preprocess)
        start = self._record("preprocess", start, len(requests))
        alone = self.gate is not None and self.gate.alone()
        detector = self.solo if alone else self.detector
        raws = run_grouped(detector, {i: images for i, (images, _) in inputs.items()})
        if alone:
            self.gate.share()
        if inputs:
            self.runs[detector.threads].increment(len({a.shape[1:] for a, _ in inputs.values()}))
        start = self._record("detector", start, len(raws))
        for i, raw in raws.items():
            if isinstance(raw, Exception):
                responses[i] = error_response(pb_utils, raw, model=self.spec.detector)
            else:
                responses[i] = self._postprocess(requests[i], raw, inputs[i][1])
        self._record("postprocess", start, len(raws))
        return responses

    def _postprocess(self, request, raw, transforms):
        try:
            outputs = postprocess_request(
                pb_utils,
                request,
                raw=raw,
                transforms=transforms,
                spec=self.spec,
                postprocess=self.postprocess,
            )
            return pb_utils.InferenceResponse(output_tensors=outputs)
        except Exception as exc:
            return error_response(pb_utils, exc, model=self.spec.postprocess)

    def _record(self, step, start, requests):
        """Count ``requests`` through ``step`` since ``start``; returns the time now."""
        now = time.perf_counter()
        if requests:
            duration, count = self.metrics[step]
            duration.increment((now - start) * 1e6 * requests)
            count.increment(requests)
        return now

    def finalize(self):
        self.metrics.clear()  # the metrics go before their families
        self.runs.clear()
        self.families = ()
        self.runs_family = None
        if self.gate is not None:
            self.gate.close()
