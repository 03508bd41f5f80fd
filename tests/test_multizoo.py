"""One front across families (issue 23, item 4): the shipped ViT and HyTra zoos served by one server as one catalog
(zoo.catalog). A budget picks the most accurate entry over both (a HyTra entry where it beats every ViT that fits, a
ViT where nothing else fits), ids are looked up in either zoo and served by their own (download, predict, /v2 infer
give the entry's own model's outputs), GET /api/zoo, /v2's repository index and the UI's one Pareto plot show every
entry with its family, a whole-zoo push names which zoo; zoos that cannot be served together (an id in two of them,
another dataset) stop the start with one line, and without --zoo every shipped zoo is served."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import torch
import tritonclient.http as triton

from server.app import create_app
from server.startup import StartError, served_zoos
from server.state import ServerConfig
from server.ui import POINT, SliderScale
from tests.test_server import ADMIN, HUB_TOKEN, Live, png, predict, run_server, serve
from tests.test_server_browser import gradio_call, python_m_server
from tests.test_v2 import images, pixel_values
from tests.zoo_fixtures import make_zoo
from zoo.catalog import Catalog
from zoo.store import Zoo, ZooEntry, shipped_zoos

CPU_ONLY = (["CPUExecutionProvider"], "test")


@pytest.fixture(scope="module")
def shipped() -> dict[str, Zoo]:
    """The shipped zoos by family: a ViT zoo and a HyTra zoo, each recording validation accuracy."""
    zoos = {z.family.name: z for z in (Zoo.load(folder) for folder in shipped_zoos().values())}
    assert {"vit", "hytra"} <= set(zoos) and all(z.validation for z in zoos.values())
    return zoos


@pytest.fixture(scope="module")
def both(shipped) -> Catalog:
    return Catalog([shipped["vit"], shipped["hytra"]])


def best(entries: list[ZooEntry], max_params: float) -> ZooEntry:
    """The budget's answer worked out here: the highest validation top-1 within the limit, ties to the smaller."""
    return max((e for e in entries if e.params <= max_params), key=lambda e: (e.val_top1, -e.params))


# -- the catalog --------------------------------------------------------------------------------------------------
def test_a_budget_picks_across_families_by_validation_top1(both, shipped):
    vit, hytra = shipped["vit"], shipped["hytra"]
    smallest_hytra = min(e.params for e in hytra.entries)
    # a budget where a HyTra entry beats every ViT entry that fits
    limit = next(e.params for e in sorted(hytra.entries, key=lambda e: e.params)
                 if e.val_top1 > best(vit.entries, e.params).val_top1)
    chosen = both.query(max_params=limit)
    assert chosen == best(both.entries, limit) and both.zoo_of(chosen) is hytra
    assert chosen.val_top1 > max(e.val_top1 for e in vit.entries if e.params <= limit)
    # a budget only ViT entries fit
    chosen = both.query(max_params=smallest_hytra - 1)
    assert chosen == vit.query(max_params=smallest_hytra - 1) and both.zoo_of(chosen) is vit
    # no limit: the most accurate of all; the front holds both families, each entry in it undominated over both zoos
    assert both.query() == max(both.entries, key=lambda e: (e.val_top1, -e.params))
    front = both.pareto("params")
    assert {both.zoo_of(e).family.name for e in front} == {"vit", "hytra"}
    assert all(not any(o.params <= e.params and o.val_top1 > e.val_top1 for o in both.entries) for e in front)
    assert both.chosen_by == "validation" and both.choice_text() == vit.choice_text() == hytra.choice_text()


def test_one_zoo_as_a_catalog_chooses_as_the_zoo_does(shipped):
    for zoo in shipped.values():
        one = Catalog([zoo])
        assert (one.name, one.checksum, one.chosen_by, one.choice_text()) == (
            zoo.name, zoo.checksum, zoo.chosen_by, zoo.choice_text())
        for limit in (None, "60K", "0.2M"):
            assert one.query(max_params=limit) == zoo.query(max_params=limit)
        assert one.pareto("flops") == zoo.pareto("flops")
        top = zoo.query()
        assert one.equivalent_cheaper(top) == zoo.equivalent_cheaper(top)


def test_nothing_fits_names_the_nearest_over_both_zoos(both):
    with pytest.raises(ValueError, match="no entry of zoos ladder-fmnist, hytra-fmnist fits max_params=5K") as e:
        both.query(max_params="5K")
    assert e.value.nearest == sorted(both.entries, key=lambda e: e.params)[:3]


def test_a_zoo_without_validation_makes_every_zoo_choose_on_test(tmp_path, shipped):
    vit, plain = shipped["vit"], Zoo.load(make_zoo(tmp_path / "plain"))  # no validation: test top-1 only
    mixed = Catalog([vit, plain])
    assert not mixed.by_validation and mixed.chosen_by == "test (no validation accuracy in zoo test-zoo)"
    assert "entries of all 2 zoos chosen on test top-1" in mixed.choice_text()
    assert "test-zoo" in mixed.choice_text() and "optimistic" in mixed.choice_text()
    assert mixed.query() == max(mixed.entries, key=lambda e: (e.top1, -e.params))
    assert mixed.choice_split(vit.entries[0]) == ("test", vit.eval_images)


def test_zoos_that_cannot_be_served_together_are_refused(tmp_path, shipped):
    vit = shipped["vit"]
    with pytest.raises(ValueError, match=f"entry id {vit.entries[0].id} is in zoo ladder-fmnist .* and in zoo"):
        Catalog([vit, vit])
    with pytest.raises(ValueError, match="evaluated on cifar10"):
        Catalog([vit, Zoo.load(make_zoo(tmp_path / "cifar", dataset="cifar10"))])
    renamed = make_zoo(tmp_path / "classes")  # the same zoo with its class names in capitals
    index = json.loads((renamed / "zoo.json").read_text())
    (renamed / "zoo.json").write_text(json.dumps({**index, "classes": [c.upper() for c in index["classes"]]}))
    with pytest.raises(ValueError, match="other classes"):
        Catalog([vit, Zoo.load(renamed)])


# -- one server, both zoos ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def live(shipped, tmp_path_factory) -> Iterator[Live]:
    app = create_app([shipped["vit"].root, shipped["hytra"].root], tmp_path_factory.mktemp("cache"),
                     ServerConfig(admin_token=ADMIN, hub_token=HUB_TOKEN, providers=CPU_ONLY))
    with serve(app) as url:
        yield Live(url, app.state.prezoo)


def test_api_zoo_lists_every_entry_of_both_zoos_with_its_family(client, both):
    z = client.get("/api/zoo").json()
    assert z["name"] == "ladder-fmnist + hytra-fmnist" and z["family"] is None and z["chosen_by"] == "validation"
    assert [(e["id"], e["zoo"], e["family"]) for e in z["entries"]] == [
        (e.id, both.zoo_of(e).name, both.zoo_of(e).family.name) for e in both.entries]
    assert z["pareto"]["params"] == [e.id for e in both.pareto("params")]
    assert [(b["name"], b["family"], b["entries"]) for b in z["zoos"]] == [
        (zoo.name, zoo.family.name, [e.id for e in zoo.entries]) for zoo in both.zoos]
    assert z["default_model"] == both.query().id and z["classes"] == both.classes and z["preprocessing"] is not None
    health = client.get("/api/health").json()
    assert health["zoos"] == ["ladder-fmnist", "hytra-fmnist"] and health["entries"] == len(both.entries)


def test_specialize_picks_across_zoos_and_says_what_is_as_accurate(client, both, shipped):
    vit = shipped["vit"]
    for limit in (best(both.entries, 120_000).params, min(e.params for e in shipped["hytra"].entries) - 1):
        r = client.post("/api/specialize", json={"max_params": limit})
        assert r.status_code == 200, r.text
        chosen = both.query(max_params=limit)
        assert (r.json()["entry"]["id"], r.json()["entry"]["family"]) == (chosen.id, both.zoo_of(chosen).family.name)
        assert [e["id"] for e in r.json()["equivalent_cheaper"]] == [e.id for e in both.equivalent_cheaper(chosen)]
    assert r.json()["entry"]["zoo"] == vit.name
    r = client.post("/api/specialize", json={"max_params": "5K"})
    assert r.status_code == 422 and [e["id"] for e in r.json()["nearest"]] == [
        e.id for e in sorted(both.entries, key=lambda e: e.params)[:3]]


@pytest.mark.parametrize("family", ["vit", "hytra"])
def test_an_entry_of_each_family_downloads_and_predicts_with_its_own_model(client, live, shipped, family):
    zoo = shipped[family]
    entry = zoo.entries[0]
    config = client.get(f"/api/models/{entry.id}/download/config")
    assert config.status_code == 200 and json.loads(config.text)["arch"] == entry.arch.to_dict()
    x = images(live.server, 2, entry)
    with torch.no_grad():
        expected = zoo.subnet(entry)(torch.from_numpy(x)).numpy()
    r = predict(client, ("0.png", png(seed=0), "image/png"), ("1.png", png(seed=1), "image/png"), model=entry.id,
                top_k="10")
    assert r.status_code == 200 and r.json()["model"] == entry.id, r.text
    for logits, answer in zip(expected, r.json()["predictions"], strict=True):
        probabilities = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        for top in answer["top"]:
            assert top["probability"] == pytest.approx(probabilities[zoo.classes.index(top["label"])], abs=1e-5)
    v2 = triton.InferenceServerClient(live.url.removeprefix("http://"), network_timeout=120)
    try:
        assert v2.get_model_metadata(entry.id)["inputs"][0]["shape"] == [-1, zoo.preprocessing["in_chans"], 28, 28]
        np.testing.assert_allclose(v2.infer(entry.id, [pixel_values(x)]).as_numpy("logits"), expected, rtol=1e-4,
                                   atol=1e-4)
    finally:
        v2.close()


def test_the_v2_repository_index_lists_both_zoos(client, both):
    index = client.post("/v2/repository/index", json={}).json()
    assert [m["name"] for m in index] == [e.id for e in both.entries] and {m["state"] for m in index} == {"READY"}
    assert client.get("/v2/models/nope/ready").status_code == 404


def test_a_whole_zoo_push_names_its_zoo(client, local_hub, shipped):
    headers = {"Authorization": f"Bearer {ADMIN}"}
    unnamed = client.post("/api/push", json={"repo_id": "prezoo-test/multi", "whole_zoo": True}, headers=headers)
    assert unnamed.status_code == 422 and "ladder-fmnist, hytra-fmnist" in unnamed.json()["error"]
    hytra = shipped["hytra"]
    r = client.post("/api/push", json={"repo_id": "prezoo-test/multi-hytra", "whole_zoo": True, "zoo": hytra.name},
                    headers=headers)
    assert r.status_code == 200 and r.json()["pushed"] == "zoo", r.text
    pushed = local_hub.repos["prezoo-test/multi-hytra"]
    assert json.loads(pushed.commits[pushed.refs["main"]]["zoo.json"])["name"] == hytra.name


def test_the_ui_draws_one_front_coloured_by_family(live, both):
    no_limit = [SliderScale.of(what, values, unit).maximum for what, values, unit in (
        ("parameters", [e.params for e in both.entries], None), ("FLOPs", [e.flops for e in both.entries], None),
        ("latency", [e.latency_ms for e in both.entries], "ms"))]
    with httpx.Client(base_url=live.url, timeout=300) as client:
        summary, svg, layers = gradio_call(client, "apply_budget", [*no_limit, "params", ""])[:3]
        chosen = both.query()
        assert f"Chosen: `{chosen.id}`" in summary
        assert layers["headers"] == list(both.zoo_of(chosen).family.layer_headers)
        assert svg.count(f'id="{POINT}') == len(both.entries)
        assert "ViT (ladder-fmnist)" in svg and "HyTra (hytra-fmnist)" in svg and "Pareto front" in svg
        vit = gradio_call(client, "specialize", ["15K", "", "", ""])
        assert vit[0] == both.query(max_params="15K").id and "(zoo ladder-fmnist)" in vit[1]


# -- python -m server ---------------------------------------------------------------------------------------------
def test_without_zoo_every_shipped_zoo_is_served():
    assert [z.name for z in served_zoos([]).zoos] == list(shipped_zoos())
    with pytest.raises(StartError, match="cannot serve these zoos together: entry id"):
        served_zoos([str(shipped_zoos()["ladder-fmnist"])] * 2)


def test_an_id_in_two_served_zoos_stops_the_start_with_one_line():
    folder = str(shipped_zoos()["hytra-fmnist"])
    out = run_server("--zoo", folder, "--zoo", "hytra-fmnist", "--port", "0")
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert out.stderr.startswith("python -m server: cannot serve these zoos together: entry id hytra-L8-")


def test_python_m_server_without_zoo_serves_every_shipped_zoo(tmp_path):
    with python_m_server(tmp_path, "--no-profile") as url:
        z = httpx.get(f"{url}/api/zoo", timeout=60).json()
    assert [b["name"] for b in z["zoos"]] == list(shipped_zoos())
    assert {e["family"] for e in z["entries"]} == {"vit", "hytra", "mbconv"}


def test_the_latency_note_says_each_protocol_once_and_names_its_zoos():
    """Zoos measured alike on other days share one phrase (the screenshot's note repeated it per zoo); a zoo measured
    otherwise, or not at all, gets its own."""
    from types import SimpleNamespace

    from server.ui import built_latencies

    protocol = {"statistic": "median, p10, p90", "runs": 100, "warmup": 10, "batch": 1, "threads": 2,
                "engine": "onnxruntime CPU, fp32", "host": "box"}
    zoos = [SimpleNamespace(name="a", doc={"latency_protocol": {**protocol, "measured_at": "2026-11-29T19:29:43"}}),
            SimpleNamespace(name="b", doc={"latency_protocol": {**protocol, "measured_at": "2026-12-06T01:58:39"}}),
            SimpleNamespace(name="c", doc={"latency_protocol": {**protocol, "threads": 1}}),
            SimpleNamespace(name="d", doc={})]
    note = built_latencies(zoos)
    assert note.count("median of 100 runs") == 2 and "(a on 2026-11-29, b on 2026-12-06)" in note
    assert "1 threads, onnxruntime CPU, fp32 on box (c)" in note
    assert "not measured (`prezoo profile` measures it) (d)" in note
