"""The UI in a real browser: Debian's chromium driven by Playwright against `python -m server` in a subprocess.

Set a budget, see the chosen model, download its ONNX file (and run it), classify an upload and a bundled sample,
open the API docs; the pages make no request off the machine, and the server stops cleanly on SIGTERM.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from playwright.sync_api import Page, sync_playwright

from tests.zoo_fixtures import FMNIST_CLASSES, make_zoo

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
MID = "e80-d4-ccfc93cf"  # the most accurate test-zoo entry under 250K parameters


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[tuple[str, Path, subprocess.Popen, Path]]:
    """(url, cache dir, process, log file) of `python -m server` on a test zoo."""
    tmp = tmp_path_factory.mktemp("browser")
    zoo, cache, port, log = make_zoo(tmp / "zoo"), tmp / "cache", free_port(), tmp / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "server", "--zoo", str(zoo), "--cache", str(cache),
                                 "--port", str(port)], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, f"the server exited with {proc.returncode}"
        assert time.monotonic() < deadline, "the server did not come up in 120 s"
        try:
            if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.3)
    yield url, cache, proc, log
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_ui_in_chromium(server, tmp_path):
    url, cache, proc, log = server
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900}, accept_downloads=True)
            hosts: set[str] = set()
            page.on("request", lambda r: hosts.add(urlsplit(r.url).hostname or r.url))
            page.goto(url, wait_until="load")
            choose_a_model(page)
            download_and_run_onnx(page, tmp_path)
            classify_a_sample(page, cache / "samples" / "9-ankle-boot.png")
            page.screenshot(path=str(tmp_path / "ui.png"), full_page=True)
            page.goto(f"{url}/docs", wait_until="load")  # Swagger UI, served by us: it renders offline
            page.wait_for_selector(".opblock-summary-path:has-text('/api/predict')", timeout=60_000)
        finally:
            browser.close()
    assert (tmp_path / "ui.png").stat().st_size > 10_000
    assert hosts <= {"127.0.0.1"}, f"the page requested {hosts - {'127.0.0.1'}}"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after shutting down
    assert "Application shutdown complete" in log.read_text() and "Traceback" not in log.read_text()


def choose_a_model(page: Page) -> None:
    page.wait_for_selector("#chosen :text('Chosen')", timeout=60_000)  # the default: the most accurate entry
    box = page.get_by_label("number input for Max parameters (K)")
    box.fill("250")
    box.press("Enter")
    page.get_by_role("button", name="Specialize").click()
    page.wait_for_selector(f"#chosen :text('{MID}')", timeout=60_000)


def download_and_run_onnx(page: Page, tmp_path: Path) -> None:
    button = page.locator("#download-onnx:not([disabled])")  # armed once the chosen entry is exported
    button.wait_for(timeout=60_000)
    with page.expect_download(timeout=60_000) as info:
        button.click()
    download = info.value
    assert download.suggested_filename == f"prezoo-{MID}.onnx"
    path = tmp_path / download.suggested_filename
    download.save_as(path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = sess.run(["logits"], {"pixel_values": np.zeros((2, 1, 28, 28), np.float32)})[0]
    assert logits.shape == (2, len(FMNIST_CLASSES)) and np.isfinite(logits).all()


def classify_a_sample(page: Page, sample: Path) -> None:
    assert sample.is_file(), "the server writes Fashion-MNIST samples (dataset-fashion-mnist is installed)"
    page.get_by_role("tab", name="Try it").click()
    page.locator("#try-file input[type=file]").set_input_files(str(sample))
    page.wait_for_selector("#predictions :text('%')", timeout=60_000)
    text = page.locator("#predictions").inner_text()
    assert sum(label in text for label in FMNIST_CLASSES) >= 5
    seen = page.locator("#model-view img").get_attribute("src")
    page.locator("#samples img").first.click()  # a bundled sample: classified on click
    page.wait_for_function("src => document.querySelector('#model-view img')?.src !== src", arg=seen)
