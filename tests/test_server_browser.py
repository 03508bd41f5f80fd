"""The UI in a real browser: Debian's chromium driven by Playwright against `python -m server` in a subprocess.

Set a budget (Enter in a number box applies it), see the chosen model with its 95% interval and the cheaper entries
as accurate, read the entries table (counts as 13.2K, who measured the latencies said once), pick entries in the table
and in the Pareto plot, download its ONNX, fp16 ONNX and zipped HF folder (and use them), read what input the model
expects, classify an upload and a bundled sample, open the API docs; the pages make no request off the machine, and
the server stops cleanly on SIGTERM. Against the same server: the REST answers with intervals and equivalent cheaper
entries, the zipped HF folder, and public UI endpoints that name no file of the server's cache.

The default zoo in chromium: its page, read the same way, is the README's screenshot docs/ui.png, which records the
zoo it shows (PNG text chunks); PREZOO_UPDATE_SCREENSHOT=1 rewrites it, and a test fails while it shows another zoo.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from playwright.sync_api import Locator, Page, sync_playwright
from safetensors.numpy import load as load_safetensors

from server.api import entry_json
from server.ui import DOWNLOAD_BUTTONS
from tests.zoo_fixtures import ACCURACY, FMNIST_CLASSES, make_zoo
from zoo import Zoo
from zoo.budget import human
from zoo.catalog import Catalog
from zoo.stats import wilson_interval
from zoo.store import INDEX, shipped_zoos

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
SMALL, MID, DOMINATED, LARGEST = "e64-d4-8aeab532", "e80-d4-ccfc93cf", "e96-d5-64c6ae65", "e96-d6-529fda2c"
IDS = [SMALL, MID, DOMINATED, LARGEST]  # the test zoo's entries, cheapest first, with accuracies ACCURACY
EVAL_IMAGES = 400  # few enough test images that some cheaper entries are within the chosen one's 95% interval
LABEL_SMOOTHING = 0.1
LATENCY_PROTOCOL = {"engine": "onnxruntime CPUExecutionProvider, fp32", "device": "the test fixture", "threads": 1,
                    "batch": 1, "warmup": 10, "runs": 100, "statistic": "median, p10, p90"}
WAIT_MS = 120_000  # generous: a busy 2-core machine exports, converts and classifies while the page waits
SCREENSHOT = ROOT / "docs" / "ui.png"  # the README's
UPDATE_SCREENSHOT = "PREZOO_UPDATE_SCREENSHOT"  # set to 1: test_the_default_zoo_in_chromium rewrites SCREENSHOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ui_zoo(out: Path) -> Path:
    """The test zoo with a recorded test-set size, training settings and latencies (test inputs, like its
    accuracies): what the UI shows about uncertainty, label smoothing and latency has something to show."""
    folder = make_zoo(out, eval_images=EVAL_IMAGES, training={"label_smoothing": LABEL_SMOOTHING})
    zoo = Zoo.load(folder)
    zoo.with_latency({e.id: {"median_ms": e.params / 1e6, "p10_ms": e.params / 1.1e6, "p90_ms": e.params / 0.9e6}
                      for e in zoo.entries}, LATENCY_PROTOCOL)
    return folder


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[tuple[str, Path, Path]]:
    """(url, cache dir, zoo dir) of `python -m server` on a test zoo."""
    tmp = tmp_path_factory.mktemp("browser")
    zoo = ui_zoo(tmp / "zoo")
    with python_m_server(tmp, "--zoo", str(zoo), "--no-profile") as url:  # the UI shows the zoo's latencies
        yield url, tmp / "cache", zoo


@contextmanager
def python_m_server(tmp: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """The URL of `python -m server *args` on a free loopback port (cache and log in `tmp`; `env` added to the
    environment), once it answers. On exit it must stop cleanly on SIGTERM."""
    port, log = free_port(), tmp / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "server", *args, "--cache", str(tmp / "cache"),
                                 "--port", str(port)], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, f"the server exited with {proc.returncode}: {log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, "the server did not come up in 120 s"
            try:
                if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.3)
        yield url
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after shutting down
        assert "Application shutdown complete" in log.read_text() and "Traceback" not in log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def expected_interval(entry_id: str) -> tuple[float, float]:
    return wilson_interval(ACCURACY[IDS.index(entry_id)], EVAL_IMAGES)


def interval_text(entry_id: str) -> str:
    lo, hi = expected_interval(entry_id)
    return f"{lo:.2f}–{hi:.2f}"


# -- the browser -------------------------------------------------------------------------------------

def test_ui_in_chromium(server, tmp_path):
    url, cache, zoo = server
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900}, accept_downloads=True)
            page.set_default_timeout(WAIT_MS)
            hosts: set[str] = set()
            page.on("request", lambda r: hosts.add(urlsplit(r.url).hostname or r.url))
            page.goto(url, wait_until="load")
            read_the_entries_table(page, Zoo.load(zoo), str(LATENCY_PROTOCOL["device"]))
            choose_a_model_with_enter(page)
            download_and_run_onnx(page, tmp_path, "onnx", MID)
            pick_in_the_table(page, SMALL)
            pick_in_the_plot(page, LARGEST)
            download_and_run_onnx(page, tmp_path, "onnx-fp16", LARGEST)
            download_the_hf_folder(page, tmp_path, LARGEST)
            classify_a_sample(page, cache / "ui" / "samples" / "9-ankle-boot.png")
            page.screenshot(path=str(tmp_path / "ui.png"), full_page=True)
            page.goto(f"{url}/docs", wait_until="load")  # Swagger UI, served by us: it renders offline
            page.wait_for_selector(".opblock-summary-path:has-text('/api/predict')")
        finally:
            browser.close()
    assert (tmp_path / "ui.png").stat().st_size > 10_000
    assert hosts <= {"127.0.0.1"}, f"the page requested {hosts - {'127.0.0.1'}}"


def table_rows(page: Page, table: Locator) -> dict[str, list[str]]:
    """Every row of a Gradio table by its first cell, scrolled through from top to bottom: a long table renders only
    the rows near its view."""
    table.locator("[role=row]").nth(1).wait_for()  # the page is still loading
    table.hover()
    rows: dict[str, list[str]] = {}
    for scroll in (-100_000, *[300] * 60, 100_000):  # the top, steps down, the very bottom
        page.mouse.wheel(0, scroll)
        page.wait_for_timeout(150)
        for row in table.locator("[role=row]").all():
            cells = [c.strip() for c in row.locator("[role=gridcell], td").all_inner_texts()]
            if cells:
                rows[cells[0]] = cells
    return rows


def read_the_entries_table(page: Page, zoo: Zoo | Catalog, host: str) -> None:
    """Each entry's row shows its parameters and MACs with three significant digits and a unit (13.2K, 1.21M); the
    host that measured the latencies is said once, under the table, not in any row."""
    table = page.locator("#entries")
    rows = table_rows(page, table)
    for e in zoo.entries:
        assert [human(e.params), human(e.flops)] == rows.get(e.id, [])[1:3], (e.id, sorted(rows))
    assert host not in table.inner_text()
    sources = page.locator("#latency-sources").inner_text()
    assert sources.count(host) == 1 and f"all {len(zoo.entries)} entries" in sources, sources


def choose_a_model_with_enter(page: Page) -> None:
    """The default (the most accurate entry), then a budget typed into the number box and applied with Enter alone:
    the summary shows the 95% interval, the cheaper entry within it, and where the latency was measured."""
    page.wait_for_selector(f"#chosen :text('{LARGEST}')")
    box = page.get_by_label("number input for Max parameters (K)")
    box.fill("250")
    box.press("Enter")
    page.wait_for_selector(f"#chosen :text('Chosen: {MID}')")
    summary = page.locator("#chosen").inner_text()
    assert interval_text(MID) in summary and "within the budget" in summary
    assert f"({SMALL}, test top-1 84.00%) is within the 95% interval {interval_text(MID)}%" in summary
    assert "measured when each zoo was built" in summary and LATENCY_PROTOCOL["device"] in summary


def pick_in_the_table(page: Page, entry_id: str) -> None:
    row = page.locator("#entries [role=row]", has_text=entry_id)
    assert interval_text(entry_id) in row.inner_text()
    row.get_by_text(entry_id).click()
    page.wait_for_selector(f"#chosen :text('Chosen: {entry_id}')")
    assert "Picked in the table" in page.locator("#chosen").inner_text()


def pick_in_the_plot(page: Page, entry_id: str) -> None:
    page.locator(f"#pareto [id='point-{entry_id}']").click()
    page.wait_for_selector(f"#chosen :text('Chosen: {entry_id}')")
    assert "Picked in the plot" in page.locator("#chosen").inner_text()
    assert page.locator("#pareto [id^='point-']").count() == len(ACCURACY)  # redrawn, still every entry


def download(page: Page, kind: str, entry_id: str, tmp_path: Path) -> Path:
    """The file of an armed download button (armed once the chosen entry is exported), named for `entry_id`."""
    button = page.locator(f"#download-{kind}:not([disabled])")
    button.wait_for()
    with page.expect_download(timeout=WAIT_MS) as info:
        button.click()
    d = info.value
    assert d.suggested_filename.startswith(f"prezoo-{entry_id}."), d.suggested_filename
    d.save_as(tmp_path / d.suggested_filename)
    return tmp_path / d.suggested_filename


def download_and_run_onnx(page: Page, tmp_path: Path, kind: str, entry_id: str) -> None:
    path = download(page, kind, entry_id, tmp_path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = sess.run(["logits"], {"pixel_values": np.zeros((2, 1, 28, 28), np.float32)})[0]
    assert logits.shape == (2, len(FMNIST_CLASSES)) and np.isfinite(logits).all()


def download_the_hf_folder(page: Page, tmp_path: Path, entry_id: str) -> None:
    path = download(page, "hf-zip", entry_id, tmp_path)
    with zipfile.ZipFile(path) as z:
        assert sorted(z.namelist()) == [f"prezoo-{entry_id}/{n}" for n in ("README.md", "config.json",
                                                                            "model.safetensors")]
        assert json.loads(z.read(f"prezoo-{entry_id}/config.json"))["num_classes"] == len(FMNIST_CLASSES)
        assert load_safetensors(z.read(f"prezoo-{entry_id}/model.safetensors"))


def classify_a_sample(page: Page, sample: Path) -> None:
    assert sample.is_file(), "the server writes Fashion-MNIST samples (dataset-fashion-mnist is installed)"
    page.get_by_role("tab", name="Try it").click()
    note = page.locator("#input-note").inner_text()
    assert "light on a dark background" in note and f"label smoothing {LABEL_SMOOTHING:g}" in note
    page.locator("#try-file input[type=file]").set_input_files(str(sample))
    page.wait_for_selector("#predictions :text('%')")
    text = page.locator("#predictions").inner_text()
    assert sum(label in text for label in FMNIST_CLASSES) >= 5
    seen = page.locator("#model-view img").get_attribute("src")
    assert seen.startswith("data:image/png;base64,")
    page.locator("#samples img").first.click()  # a bundled sample: classified on click
    page.wait_for_function("src => document.querySelector('#model-view img')?.src !== src", arg=seen)


# -- the same server over HTTP ---------------------------------------------------------------------------

def test_zoo_and_specialize_answer_intervals_and_cheaper_equivalents(server):
    url, _, _ = server
    entries = httpx.get(f"{url}/api/zoo", timeout=60).json()["entries"]
    assert [e["id"] for e in entries] == IDS  # cheapest first
    for e in entries:
        assert e["top1_interval"] == pytest.approx(expected_interval(e["id"]), abs=1e-3)
    notes = 0
    for budget, chosen in [({}, LARGEST), ({"max_params": "250K"}, MID), ({"max_flops": "8M"}, SMALL)]:
        lo = expected_interval(chosen)[0]
        cheaper = [i for i, a in zip(IDS[:IDS.index(chosen)], ACCURACY, strict=False) if a >= lo]
        body = httpx.post(f"{url}/api/specialize", json=budget, timeout=60).json()
        assert body["entry"]["id"] == chosen  # still the best point estimate
        assert body["entry"]["top1_interval"] == pytest.approx(expected_interval(chosen), abs=1e-3)
        assert [e["id"] for e in body["equivalent_cheaper"]] == cheaper
        if cheaper:
            notes += 1
            assert cheaper[0] in body["note"] and f"95% interval {interval_text(chosen)}% of the chosen" in body["note"]
            assert f"{EVAL_IMAGES} test images" in body["note"]
        else:
            assert body["note"] is None
    assert notes == 2  # the budgets cover both answers


def test_a_zoo_without_a_test_set_size_has_no_intervals(tmp_path):
    zoo = Zoo.load(make_zoo(tmp_path / "zoo"))
    assert all(entry_json(zoo, e, set())["top1_interval"] is None for e in zoo.entries)
    assert zoo.equivalent_cheaper(zoo.entry(LARGEST)) == []


def test_hf_folder_zip_over_rest_is_the_export_and_stable(server):
    url, _, _ = server
    with httpx.Client(base_url=url, timeout=300) as client:
        r = client.get(f"/api/models/{MID}/download/hf-zip")
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/zip"
        assert r.headers["content-disposition"] == f'attachment; filename="prezoo-{MID}.hf.zip"'
        assert r.headers["etag"] == f'"{hashlib.sha256(r.content).hexdigest()}"'
        with zipfile.ZipFile(io.BytesIO(r.content)) as z:
            for kind, name in [("safetensors", "model.safetensors"), ("config", "config.json"), ("card", "README.md")]:
                assert z.read(f"prezoo-{MID}/{name}") == client.get(f"/api/models/{MID}/download/{kind}").content
        again = client.get(f"/api/models/{MID}/download/hf-zip", headers={"If-None-Match": r.headers["etag"]})
        assert again.status_code == 304


def gradio_call(client: httpx.Client, api_name: str, data: list) -> list:
    """A public UI endpoint through Gradio's REST API: its outputs, as JSON."""
    event = client.post(f"/gradio_api/call/{api_name}", json={"data": data})
    assert event.status_code == 200, event.text
    answer = client.get(f"/gradio_api/call/{api_name}/{event.json()['event_id']}").text
    assert answer.startswith("event: complete\ndata: "), answer[:500]
    return json.loads(answer.partition("data: ")[2])


def strings(value) -> Iterator[str]:
    """Every string in a JSON value."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict | list):
        for item in value.values() if isinstance(value, dict) else value:
            yield from strings(item)


def test_public_ui_endpoints_answer_no_server_paths(server):
    """/classify and /specialize answer data inline; /download a file that Gradio serves from its own copy: no answer
    names a file of the server's cache."""
    url, cache, _ = server
    sample = cache / "ui" / "samples" / "0-t-shirt-top.png"
    with httpx.Client(base_url=url, timeout=300) as client:
        uploaded = client.post("/gradio_api/upload", files=[("files", (sample.name, sample.read_bytes()))]).json()[0]
        classified = gradio_call(client, "classify", [{"path": uploaded, "meta": {"_type": "gradio.FileData"}}, MID])
        specialized = gradio_call(client, "specialize", ["250K", "", "", ""])
        [downloaded] = gradio_call(client, "download", [MID, "onnx"])
        served = client.get(downloaded["url"]).content
        assert served == client.get(f"/api/models/{MID}/download/onnx").content
    for text in strings([classified, specialized]):
        assert not text.startswith("/") and "file=" not in text and str(cache) not in text, text[:200]
    assert all(str(cache) not in text for text in strings(downloaded))
    assert classified[0]["label"] in FMNIST_CLASSES and classified[1].startswith('<img alt="')
    assert "data:image/png;base64," in classified[1] and f"Chosen: `{MID}`" in specialized[1]
    assert specialized[0] == MID and specialized[2]["entry"]["id"] == MID


# -- the default zoo: the README's screenshot ----------------------------------------------------------------

def shipped() -> Catalog:
    """What `python -m server` serves without --zoo: every shipped zoo."""
    return Catalog([Zoo.load(folder) for folder in shipped_zoos().values()])


def screenshot_stamp(catalog: Catalog) -> dict[str, str]:
    """What docs/ui.png records of the zoos it shows: their names and the sha256 of their indexes (which name the
    weights' sha256), so a retrained, re-measured, renamed, added or removed shipped zoo makes the screenshot stale."""
    indexes = "\n".join(hashlib.sha256((z.root / INDEX).read_bytes()).hexdigest() for z in catalog.zoos)
    return {"prezoo-zoo": catalog.name, "prezoo-zoo-index-sha256": hashlib.sha256(indexes.encode()).hexdigest()}


def test_the_default_zoos_in_chromium(tmp_path):
    """The page `python -m server` shows without options (every shipped zoo; latency profiling off: the zoos' own
    numbers), once the default entry's downloads are ready; with PREZOO_UPDATE_SCREENSHOT=1 its screenshot becomes
    docs/ui.png."""
    zoo = shipped()
    assert len(zoo.zoos) >= 2 and len({z.family.name for z in zoo.zoos}) >= 2
    shot = tmp_path / "ui.png"
    with python_m_server(tmp_path, "--no-profile") as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.set_default_timeout(WAIT_MS)
            page.goto(url, wait_until="load")
            page.wait_for_selector(f"#chosen :text('Chosen: {zoo.query().id}')")
            read_the_entries_table(page, zoo, zoo.zoos[0].doc["latency_protocol"]["host"])
            for kind in DOWNLOAD_BUTTONS:
                page.locator(f"#download-{kind}:not([disabled])").wait_for()
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
    if os.environ.get(UPDATE_SCREENSHOT) == "1":
        stamp = PngInfo()
        for key, value in screenshot_stamp(zoo).items():
            stamp.add_text(key, value)
        Image.open(shot).save(SCREENSHOT, pnginfo=stamp, optimize=True)


def test_the_readme_screenshot_shows_the_default_zoos():
    shown = Image.open(SCREENSHOT).text
    expected = screenshot_stamp(shipped())
    assert {key: shown.get(key) for key in expected} == expected, (
        f"{SCREENSHOT.relative_to(ROOT)} shows other zoos than the default: rewrite it with "
        f"{UPDATE_SCREENSHOT}=1 pytest tests/test_server_browser.py -k default_zoos")
