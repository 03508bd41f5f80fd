"""Zoos shown beside the served one (`python -m server --compare-zoo`): the built-in zoo served, a copy of it with
every top-1 a little higher and the HyTra test zoo compared. GET /api/zoo lists each compared zoo as its own index
records it; the UI's Pareto plot draws their entries and fronts with a legend naming zoo and family, on both axes; a
click on a compared zoo's marker chooses nothing; budgets, downloads and predictions stay on the served zoo. A compared
zoo that is missing, corrupt or on another dataset stops the start with one line naming it; without --compare-zoo
nothing changes."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import sync_playwright

from server.app import create_app
from server.state import ServerConfig
from server.ui import COMPARE, INTERVALS, POINT, SliderScale
from tests.test_family import make_hytra_zoo
from tests.test_server import run_server, serve
from tests.test_server_browser import CHROMIUM, CHROMIUM_ARGS, WAIT_MS, gradio_call, python_m_server
from tests.zoo_fixtures import make_zoo
from zoo import Zoo
from zoo.store import DEFAULT_ZOO, write_zoo

LEGENDS = ["ladder-fmnist-shifted (ViT), compared", "hytra-test (HyTra), compared"]
SHIFT = 0.1  # top-1 points: a few pixels in the plot, so each shifted marker lies within a click of a served one


def shifted_copy(source: Zoo, out: Path) -> Path:
    """`source` under another name with every top-1 SHIFT higher (test inputs), its test-set size, validation (and the
    training settings that held it out) and latencies kept."""
    extra = {key: source.doc[key] for key in ("dataset", "eval_images", "latency_protocol", "training", "validation")
             if key in source.doc}
    return write_zoo(out, name=f"{source.name}-shifted", space=source.space, state=source.supernet.state_dict(),
                     entries=[dataclasses.replace(e, top1=e.top1 + SHIFT) for e in source.entries],
                     classes=source.classes, preprocessing=source.preprocessing, family=source.family.name, **extra)


@pytest.fixture(scope="module")
def compared(tmp_path_factory) -> list[Path]:
    """A ViT zoo with intervals and latencies and markers beside the served zoo's, and the HyTra test zoo."""
    tmp = tmp_path_factory.mktemp("compared")
    return [shifted_copy(Zoo.load(DEFAULT_ZOO), tmp / "shifted"), make_hytra_zoo(tmp / "hytra")]


@pytest.fixture(scope="module")
def url(compared, tmp_path_factory) -> Iterator[str]:
    """`python -m server` on the built-in zoo with both test zoos compared."""
    args = ["--zoo", str(DEFAULT_ZOO), *[arg for folder in compared for arg in ("--compare-zoo", str(folder))]]
    with python_m_server(tmp_path_factory.mktemp("server"), *args, "--no-profile") as url:
        yield url


def expected_compare_block(folder: Path) -> dict:
    """What the zoo's own index says, read back here: the numbers /api/zoo must answer for it."""
    zoo = Zoo.load(folder)
    return {"name": zoo.name, "checksum": zoo.checksum, "family": zoo.family.name, "space": zoo.space.name,
            "entries": [{"id": e.id, "params": e.params, "flops": e.flops, "top1": e.top1,
                         "top1_interval": zoo.top1_interval(e), "latency_ms": e.latency_ms} for e in zoo.entries],
            "pareto": {by: [e.id for e in zoo.pareto(by)] for by in ("params", "flops")}}


def test_api_zoo_lists_each_compared_zoo_as_its_index_records_it(url, compared):
    z = httpx.get(f"{url}/api/zoo", timeout=60).json()
    served = Zoo.load(DEFAULT_ZOO)
    assert z["name"] == served.name and [e["id"] for e in z["entries"]] == [e.id for e in served.entries]
    answered = [{**{k: c[k] for k in ("name", "checksum", "family", "space", "pareto")},
                 "entries": [{k: e[k] for k in ("id", "params", "flops", "top1", "top1_interval", "latency_ms")}
                             for e in c["entries"]]} for c in z["compare"]]
    expected = [expected_compare_block(folder) for folder in compared]
    for got, want in zip(answered, expected, strict=True):
        for e, w in zip(got["entries"], want["entries"], strict=True):
            e["top1_interval"] = e["top1_interval"] and pytest.approx(w["top1_interval"], abs=1e-3)
    assert answered == expected
    vit, hytra = z["compare"]
    assert [e["latency_source"]["source"] for e in vit["entries"]] == ["zoo"] * len(vit["entries"])
    assert served.doc["latency_protocol"]["host"] in vit["latency_protocol"] and hytra["latency_protocol"] is None
    assert vit["entries"][0]["top1_interval"] is not None and hytra["family"] == "hytra"


def test_budgets_downloads_and_predictions_stay_on_the_served_zoo(url, compared):
    served, hytra = Zoo.load(DEFAULT_ZOO), Zoo.load(compared[1])
    with httpx.Client(base_url=url, timeout=120) as client:
        assert client.post("/api/specialize", json={}).json()["entry"]["id"] == served.query().id
        foreign = hytra.entries[0].id
        assert client.get(f"/api/models/{foreign}/download/config").status_code == 404
        r = client.post("/api/predict", files=[("files", ("x.png", b"", "image/png"))], data={"model": foreign})
        assert r.status_code == 404 and foreign in r.json()["error"]


def test_the_plot_draws_every_compared_entry_with_a_legend_on_both_axes(url, compared):
    """Through the page's budget event (PreZooUI.apply_budget: the plot the page shows), for each x-axis; error bars
    for every zoo that records its test-set size (the shifted copy does, the HyTra test zoo does not)."""
    entries = sum(len(Zoo.load(folder).entries) for folder in compared)
    served = Zoo.load(DEFAULT_ZOO).entries
    no_limit = [SliderScale.of(what, values, unit).maximum for what, values, unit in (
        ("parameters", [e.params for e in served], None), ("FLOPs", [e.flops for e in served], None),
        ("latency", [e.latency_ms for e in served], "ms"))]
    with httpx.Client(base_url=url, timeout=300) as client:
        for axis in ("params", "flops"):
            svg = gradio_call(client, "apply_budget", [*no_limit, axis, ""])[1]
            assert svg.count(f'id="{COMPARE}') == entries and svg.count(f'id="{POINT}') == len(served), axis
            assert all(legend in svg for legend in LEGENDS), axis
            assert "Pareto front, ladder-fmnist (ViT)" in svg
            assert all((f'id="{INTERVALS}{number}"' in svg) == (Zoo.load(folder).eval_images is not None)
                       for number, folder in enumerate(compared)) and f'id="{INTERVALS}served"' in svg, axis
    assert "for comparison only" in httpx.get(f"{url}/config", timeout=60).text


def test_a_click_on_a_compared_marker_chooses_nothing(url, compared):
    """Each compared marker is clicked (nothing is chosen: no UI event is sent, the chosen entry stays), though most lie
    a few pixels from a served one; then a served marker, which is chosen (so the check above watches the right
    thing)."""
    served = Zoo.load(DEFAULT_ZOO)
    default, other = served.query().id, served.entries[0].id
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.set_default_timeout(WAIT_MS)
            picks: list[str] = []  # the entries the page asked to choose in the plot (select events)
            page.on("request", lambda r: picks.append(r.post_data_json["event_data"]["value"])
                    if "/queue/join" in r.url and (r.post_data_json or {}).get("event_data") else None)
            page.goto(url, wait_until="load")
            page.wait_for_selector(f"#chosen :text('Chosen: {default}')")
            legend = page.locator("#pareto").text_content()  # the SVG keeps its text as text
            assert all(text in legend for text in LEGENDS)
            markers = page.locator(f"#pareto [id^='{COMPARE}']")
            assert markers.count() == sum(len(Zoo.load(folder).entries) for folder in compared)
            for i in range(markers.count()):
                markers.nth(i).click(force=True)  # force: a served marker or the legend may lie on top
            page.wait_for_timeout(1000)
            assert picks == [] and f"Chosen: {default}" in page.locator("#chosen").inner_text()
            page.locator(f"#pareto [id='{POINT}{other}']").click(force=True)
            page.wait_for_selector(f"#chosen :text('Chosen: {other}')")
            assert picks == [other]
        finally:
            browser.close()


def test_a_missing_corrupt_or_foreign_compared_zoo_stops_the_start_naming_it(tmp_path, compared):
    corrupt, foreign = tmp_path / "corrupt", make_zoo(tmp_path / "cifar", dataset="cifar10")
    shutil.copytree(compared[1], corrupt)
    weights = corrupt / "supernet.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    cases = {tmp_path / "missing": "no zoo at", corrupt: "sha256", foreign: "evaluated on cifar10"}
    for folder, message in cases.items():
        out = run_server("--zoo", str(DEFAULT_ZOO), "--compare-zoo", str(compared[0]), "--compare-zoo", str(folder),
                         "--port", "0")
        assert out.returncode == 2, out.stderr
        assert out.stderr.startswith(f"python -m server: cannot use --compare-zoo {folder}: ")
        assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    out = run_server(*[arg for _ in range(5) for arg in ("--compare-zoo", str(compared[0]))])
    assert out.returncode == 2 and "at most 4" in out.stderr and "Traceback" not in out.stderr


def test_without_compared_zoos_nothing_is_compared(zoo, zoo_dir, tmp_path):
    app = create_app(zoo_dir, tmp_path, ServerConfig(providers=(["CPUExecutionProvider"], "test")))
    with serve(app) as served, httpx.Client(base_url=served, timeout=300) as client:
        assert client.get("/api/zoo").json()["compare"] == []
        no_limit = [SliderScale.of(what, values).maximum for what, values in (
            ("parameters", [e.params for e in zoo.entries]), ("FLOPs", [e.flops for e in zoo.entries]))]
        svg = gradio_call(client, "apply_budget", [*no_limit, None, "params", ""])[1]
        assert COMPARE not in svg and "compared" not in svg and svg.count(f'id="{POINT}') == 4
        assert "comparison" not in client.get("/config").text
    with pytest.raises(ValueError, match="evaluated on cifar10"):
        create_app(zoo_dir, tmp_path, ServerConfig(compare=[make_zoo(tmp_path / "cifar", dataset="cifar10")]))
