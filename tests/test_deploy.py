"""Deployment files: Kubernetes manifests against the Kubernetes schemas (offline), and the
Prometheus and Grafana configs against the metrics a real tritonserver exposes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"


def _validate(paths, version="1.30.0"):
    return subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", "-k", version, *map(str, paths)],
        capture_output=True,
        text=True,
    )


def _manifests():
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


@pytest.mark.parametrize("version", ["1.28.0", "1.30.0", "1.33.0"])
def test_manifests_pass_strict_schema_validation(version):
    result = _validate(_manifests(), version)
    assert result.returncode == 0, result.stdout + result.stderr


def test_validation_catches_a_broken_manifest(tmp_path):
    broken = tmp_path / "broken.yaml"
    doc = yaml.safe_load((K8S / "triton-pdb.yaml").read_text())
    doc["spec"]["minAvailabel"] = 1  # a typo
    broken.write_text(yaml.safe_dump(doc))
    assert _validate([broken]).returncode != 0


def test_manifests_shape():
    docs = {
        (d["kind"], d["metadata"]["name"]): d
        for p in _manifests()
        for d in yaml.safe_load_all(p.read_text())
    }
    listed = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(p.name for p in _manifests())
    triton = docs[("Deployment", "bonefrac-triton")]["spec"]["template"]["spec"]["containers"][0]
    assert triton["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert triton["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert triton["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    hpa = docs[("HorizontalPodAutoscaler", "bonefrac-triton")]["spec"]
    adapter = docs[("ConfigMap", "bonefrac-prometheus-adapter-rules")]["data"]["config.yaml"]
    assert hpa["metrics"][0]["pods"]["metric"]["name"] in adapter
    assert docs[("Service", "bonefrac-triton-headless")]["spec"]["clusterIP"] == "None"
    assert ("PodDisruptionBudget", "bonefrac-triton") in docs
    ui = docs[("Deployment", "bonefrac-ui")]["spec"]["template"]["spec"]["containers"][0]
    assert "bonefrac-triton:8001" in ui["args"]


def _metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b(nv_[a-z_]+)", expr))


@pytest.mark.server
def test_dashboard_and_rules_use_metrics_triton_exposes(triton, valid_images):
    from bonefrac.client import DetectionClient

    DetectionClient(triton.grpc_url).detect(valid_images[0].read_bytes())
    text = urllib.request.urlopen(triton.metrics_url, timeout=10).read().decode()
    exposed = set(re.findall(r"^(nv_[a-z_]+)", text, flags=re.M))
    dashboard = json.loads(
        (ROOT / "deploy" / "grafana" / "dashboards" / "bonefrac.json").read_text()
    )
    used = {m for p in dashboard["panels"] for t in p["targets"] for m in _metric_names(t["expr"])}
    adapter = yaml.safe_load((K8S / "prometheus-adapter-rules.yaml").read_text())
    used |= _metric_names(adapter["data"]["config.yaml"])
    gpu_only = {m for m in used if m.startswith("nv_gpu_")}  # absent on a CPU server
    assert used - gpu_only <= exposed, (used - gpu_only) - exposed
    assert {
        "nv_inference_request_success",
        "nv_inference_queue_duration_us",
        "nv_cpu_utilization",
    } <= used
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])


def test_prometheus_scrapes_triton_of_the_compose_stack():
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    targets = [
        t for job in config["scrape_configs"] for s in job["static_configs"] for t in s["targets"]
    ]
    assert "triton:8002" in targets
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert {"prometheus", "grafana"} <= set(compose["services"])
