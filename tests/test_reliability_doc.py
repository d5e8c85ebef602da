"""docs/RELIABILITY.md is what its generator renders from the committed record, the record
describes the shipped repository, and the generator's measuring path works against a real
server (two corpus inputs to each ensemble)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bonefrac.benchmarks import reliability

ROOT = Path(__file__).resolve().parent.parent
RECORD = ROOT / reliability.RECORD
DOC = ROOT / reliability.DOC


def _record() -> dict:
    return json.loads(RECORD.read_text())


def test_doc_is_what_the_record_renders_to():
    assert reliability.render(_record()) == DOC.read_text(), (
        "docs/RELIABILITY.md differs from its record: run "
        "python -m bonefrac.benchmarks.reliability --render-only (or measure again)"
    )


def test_render_only_command_writes_the_same_doc(tmp_path):
    out = tmp_path / "RELIABILITY.md"
    assert reliability.main(["--render-only", "--record", str(RECORD), "--doc", str(out)]) == 0
    assert out.read_text() == DOC.read_text()


def test_measuring_needs_images():
    with pytest.raises(SystemExit):
        reliability.main(["--record", "unused.json"])
    with pytest.raises(SystemExit):
        reliability.main(["--images", "x", "--steps", "bad_input,nonsense"])


def test_record_is_complete_and_describes_the_shipped_models(repository):
    record = _record()
    assert set(record["measurements"]) == set(reliability.STEPS)
    failed = {k: v["error"] for k, v in record["measurements"].items() if "error" in v}
    assert not failed, failed
    assert record["models"] == reliability.models(repository), (
        "the shipped model repository changed since the reliability record was measured"
    )
    for key in ("started", "finished", "machine", "versions", "beside_at_start", "beside_at_end"):
        assert record[key], key


def test_every_file_the_doc_cites_exists():
    cited = set(re.findall(r"`([\w./-]+\.(?:py|md|json|yml|yaml))`", DOC.read_text()))
    assert "tests/test_faults.py" in cited and "docs/reliability/record.json" in cited
    for path in cited:
        assert (ROOT / path).is_file(), path


@pytest.mark.server
def test_bad_input_measurement_against_a_server(triton, valid_images):
    names = ("empty", "png 8-bit gray")
    result = reliability.measure_bad_input(
        triton.grpc_url, valid_images[0], valid_images[1].read_bytes(), names=names
    )
    assert set(result) == set(reliability.ENSEMBLES)
    for model, figures in result.items():
        assert [i["name"] for i in figures["items"]] == list(names), model
        assert figures["as_expected"] == 2, figures["items"]
        assert (
            figures["items"][0]["outcome"] == "error" and "empty" in figures["items"][0]["message"]
        )
        assert figures["items"][1]["outcome"] == "ok" and figures["items"][1]["image_size"][0] > 1
        assert figures["background_ok"] > 0 and figures["background_failures"] == 0
        assert figures["ready_after"]
    table = "\n".join(reliability.render_bad_input(result))
    assert "| empty | error | error | error | empty input" in table
