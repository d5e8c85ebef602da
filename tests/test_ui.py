"""The demo page against a real Triton: through gradio_client, and in a real browser (Debian's
Chromium, headless, driven by Playwright)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from bonefrac.server import free_port

pytestmark = pytest.mark.server

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "ui" / "examples" / "wrist.jpg"
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _start(server: str, tmp_path_factory) -> tuple[str, object]:
    from bonefrac.ui.app import UiConfig, launch

    config = UiConfig(
        server=server, examples=[str(EXAMPLE)], eval_cache_dir=tmp_path_factory.mktemp("evalcache")
    )
    port = free_port()
    demo = launch(config, host="127.0.0.1", port=port, block=False)
    return f"http://127.0.0.1:{port}/", demo


@pytest.fixture(scope="module")
def ui_url(triton, tmp_path_factory):
    url, demo = _start(triton.grpc_url, tmp_path_factory)
    yield url
    demo.close()


@pytest.fixture(scope="module")
def dead_ui_url(tmp_path_factory):
    url, demo = _start(f"127.0.0.1:{free_port()}", tmp_path_factory)
    yield url
    demo.close()


def test_detect_api_returns_boxes_table_and_verdict(ui_url):
    from gradio_client import Client, handle_file

    client = Client(ui_url, verbose=False)
    assert "/detect" in client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    image, table, verdict = client.predict(
        handle_file(str(EXAMPLE)), "frcnn", 0.05, api_name="/detect"
    )
    assert Path(image).is_file()
    assert table["headers"][:3] == ["model", "class", "score"] and len(table["data"]) > 0
    assert all(row[2] >= 0.05 for row in table["data"])
    assert verdict.startswith("frcnn: ")


def test_detect_api_both_models_and_corrupt_file(ui_url, tmp_path):
    from gradio_client import Client, handle_file

    client = Client(ui_url, verbose=False)
    _, table, verdict = client.predict(
        handle_file(str(EXAMPLE)), "both (side by side)", 0.0, api_name="/detect"
    )
    assert {row[0] for row in table["data"]} == {"yolo11", "frcnn"}
    assert "yolo11:" in verdict and "frcnn:" in verdict
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    with pytest.raises(Exception, match="cannot be read as an X-ray"):
        client.predict(handle_file(str(bad)), "yolo11", 0.25, api_name="/detect")
    # The page and the server are still fine afterwards.
    _, table, _ = client.predict(handle_file(str(EXAMPLE)), "frcnn", 0.05, api_name="/detect")
    assert len(table["data"]) > 0


def _browser():
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("Debian's chromium is not installed ('make test' installs it)")
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    browser = pw.chromium.launch(
        executable_path=chromium,
        args=[
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
        ],
    )
    return pw, browser


def test_browser_upload_detect_and_see_the_result(ui_url, tmp_path):
    pw, browser = _browser()
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(ui_url)
        page.get_by_text("Research use only").wait_for()
        page.locator("#xray-upload input[type=file]").set_input_files(str(EXAMPLE))
        page.get_by_label("frcnn").check()
        number = page.locator("#conf-slider input[type=number]")
        number.fill("0.05")
        number.press("Enter")
        page.locator("#detect-btn").click()
        from playwright.sync_api import expect

        expect(page.locator("#verdict textarea")).to_have_value(
            re.compile("^frcnn: "), timeout=60_000
        )
        page.locator("#annotated img").wait_for(timeout=30_000)
        expect(page.locator("#detections-table")).to_contain_text("frcnn", timeout=30_000)
        table_text = page.locator("#detections-table").inner_text()
        assert "wrist positive" in table_text or "forearm fracture" in table_text
        assert "FRACTURE SUSPECTED" in page.locator("#verdict textarea").input_value()
        shot = tmp_path / "ui.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 20_000
        if os.environ.get("BONEFRAC_SCREENSHOT"):
            shutil.copy(shot, os.environ["BONEFRAC_SCREENSHOT"])
    finally:
        browser.close()
        pw.stop()


def test_browser_shows_a_banner_when_triton_is_down(dead_ui_url):
    pw, browser = _browser()
    try:
        page = browser.new_page()
        page.goto(dead_ui_url)
        banner = page.locator(".bf-down")
        banner.wait_for(timeout=30_000)
        assert "unavailable" in banner.inner_text()
        assert "Traceback" not in page.content()
    finally:
        browser.close()
        pw.stop()


def test_uploads_stay_in_the_temporary_directory(ui_url, tmp_path):
    import tempfile

    from gradio_client import Client, handle_file

    before = set(ROOT.rglob("*"))
    image, _, _ = Client(ui_url, verbose=False).predict(
        handle_file(str(EXAMPLE)), "yolo11", 0.25, api_name="/detect"
    )
    assert Path(image).resolve().is_relative_to(Path(tempfile.gettempdir()).resolve())
    created = {p for p in set(ROOT.rglob("*")) - before if "__pycache__" not in p.parts}
    assert not created, created


def test_page_recovers_when_triton_comes_back(repository, tmp_path_factory):
    from bonefrac.server import TritonServer

    port = free_port()
    url, demo = _start(f"127.0.0.1:{port}", tmp_path_factory)
    pw, browser = _browser()
    try:
        page = browser.new_page()
        page.goto(url)
        page.locator(".bf-down").wait_for(timeout=30_000)
        server = TritonServer(
            repository, grpc_port=port, http_port=0, metrics_port=0, startup_timeout_s=120
        )
        with server:
            page.locator(".bf-up").wait_for(timeout=30_000)  # the status timer ticks every 5 s
            assert "ready" in page.locator(".bf-up").inner_text()
    finally:
        browser.close()
        pw.stop()
        demo.close()


def test_protocol_relabels_detections():
    from bonefrac.detections import Detections
    from bonefrac.spec import DATASET_CLASSES
    from bonefrac.ui.app import apply_protocol

    det = Detections.from_arrays(
        xyxy=[[0, 0, 1, 1], [1, 1, 2, 2]],
        scores=[0.9, 0.5],
        class_ids=[3, 6],
        names=DATASET_CLASSES,
        image_size=(5, 5),
    )
    six = apply_protocol(det, "6class")
    assert six.class_names == ("humerus", "wrist positive") and six.class_ids.tolist() == [3, 5]
    agnostic = apply_protocol(det, "agnostic")
    assert agnostic.class_names == ("fracture", "fracture")
    assert apply_protocol(det, "7class") is det
