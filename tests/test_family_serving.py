"""Model families, export and serving side: a HyTra zoo's entry exports as an HF folder whose card tabulates its own
layers and FLOPs rule, loads back through PreZoo's class and timm with the same logits, names its family in its ONNX
metadata, and is served (REST, /v2, the Gradio UI) like a ViT; `python -m zoo spaces` lists every family's spaces."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import numpy as np
import onnx
import pytest
import timm
import torch
import tritonclient.http as triton
from safetensors import safe_open

from export.cache import ExportCache
from export.hf import markdown_table
from server.app import create_app
from tests.test_cards import expected_top, python_blocks, run_block, top_line
from tests.test_cli import cli
from tests.test_export import assert_folder_loads_every_way
from tests.test_family import ARCHS, _images, make_hytra_zoo
from tests.test_server import Live, png, predict, serve
from tests.test_v2 import images, pixel_values
from zoo import PreZooHyTra, PreZooViT, Zoo
from zoo.budget import human
from zoo.families.hytra import FLOPS_RULE, MICRO_HYTRA, HyTraNet, params
from zoo.family import FAMILIES

HYTRA = FAMILIES["hytra"]


@pytest.fixture(scope="module")
def hytra_zoo(tmp_path_factory) -> Zoo:
    return Zoo.load(make_hytra_zoo(tmp_path_factory.mktemp("hytra") / "zoo"))


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> ExportCache:
    return ExportCache(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def folder(hytra_zoo, cache):
    """The HF folder of the entry that has both ops and both halvings."""
    return cache.get(hytra_zoo, hytra_zoo.entries[1], "safetensors")


# -- the interface ----------------------------------------------------------------------------------------------------
def test_every_family_has_a_hub_class_registered_in_timm():
    assert {f.pretrained for f in FAMILIES.values()} >= {PreZooViT, PreZooHyTra}
    for family in FAMILIES.values():
        assert family.pretrained.family == family.name and timm.is_model(family.pretrained.timm_name)
        assert all(len(family.describe_choices(space).splitlines()) == 2 for space in family.spaces.values())
    assert HYTRA.cost_range(MICRO_HYTRA) == ((38_842, 541_946), (5_871_872, 9_919_584))  # over all 3,587 paths


# -- the HF folder, its card, loading it back ---------------------------------------------------------------------
def test_the_hytra_card_shows_its_own_layers_flops_rule_and_tags(hytra_zoo, folder):
    entry = hytra_zoo.entries[1]
    card = (folder / "README.md").read_text()
    assert f"# PreZoo HyTra `{entry.id}` ({human(entry.params)} params)" in card
    assert "A hybrid CNN/transformer sliced out of" in card and "vision transformer" not in card
    assert f"FLOPs rule: {FLOPS_RULE}." in card and hytra_zoo.doc["flops_rule"] == FLOPS_RULE
    assert HYTRA.describe_arch(hytra_zoo.space, entry.arch) in card
    table = markdown_table(HYTRA.layer_headers, HYTRA.layer_rows(hytra_zoo.space, entry.arch))
    assert table in card and table.count("\n") == 1 + len(entry.arch.layers)
    assert "| 5 | S2 | ResAtt | halve | 4 | 256 | 64 | 4 |" in table  # BoT-like: attention after the last halving
    for needle in ("hybrid-cnn-transformer", "bossnas", "library_name: prezoo", "zoo.PreZooHyTra.from_pretrained",
                   "prezoo_hytra", "HyTraNet`'s parameter names"):
        assert needle in card
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "prezoo_hytra" and config["pretrained_cfg"]["first_conv"] == "stem.0"
    assert config["num_features"] == 256 and config["arch"] == entry.arch.to_dict()
    with safe_open(folder / "model.safetensors", "pt") as f:
        assert f.metadata()["prezoo.family"] == "hytra" and f.metadata()["prezoo.arch_id"] == entry.id


def test_the_hytra_folder_loads_back_with_the_same_logits_every_way(hytra_zoo, folder):
    entry = hytra_zoo.entries[1]
    x = _images(6)
    with torch.no_grad():
        ref = hytra_zoo.subnet(entry)(x)
        assert_folder_loads_every_way(folder, x, ref, PreZooHyTra, HyTraNet, hytra_zoo.classes)


def test_a_new_head_is_fresh_and_other_image_sizes_are_refused(hytra_zoo, folder):
    ref = hytra_zoo.subnet(hytra_zoo.entries[1])
    for model in (PreZooHyTra.from_pretrained(folder, num_classes=5),
                  timm.create_model(f"local-dir:{folder}", pretrained=True, num_classes=5)):
        assert model.num_classes == 5 and model.space.num_classes == 5 and model.head.out_features == 5
        assert torch.equal(model.stem[0].weight, ref.stem[0].weight)  # the backbone keeps its weights
        with torch.no_grad():
            assert model.eval()(_images(2)).shape == (2, 5)
    for asked, message in (({"img_size": 32}, "trained with img_size=28"),
                           ({"global_pool": "max"}, "trained with global_pool=avg")):
        with pytest.raises(ValueError, match=message):
            PreZooHyTra.from_pretrained(folder, **asked)


def test_in_chans_adapts_the_stem_conv_like_timm(folder):
    """As the ViT's patch conv (tests/test_finetune.py): a gray image repeated over RGB gives the gray model's logits,
    and the space normalises each channel as the gray one."""
    gray, ref = _images(2), PreZooHyTra.from_pretrained(folder)
    for model in (PreZooHyTra.from_pretrained(folder, in_chans=3),
                  timm.create_model(f"local-dir:{folder}", pretrained=True, in_chans=3).eval()):
        assert model.in_chans == model.space.in_chans == model.stem[0].weight.shape[1] == 3
        assert model.space.mean == ref.space.mean * 3 and model.space.std == ref.space.std * 3
        with torch.no_grad():
            torch.testing.assert_close(model(gray.expand(-1, 3, -1, -1)), ref(gray), atol=1e-5, rtol=1e-5)


def test_the_hytra_cards_python_block_runs_as_is(hytra_zoo, folder):
    """The export folder's own card, run in that folder as a user would (tests/test_cards.py's way)."""
    [code] = python_blocks((folder / "README.md").read_text())
    label, probability = top_line(run_block(code, folder))
    expected_label, expected_probability = expected_top(hytra_zoo, hytra_zoo.entries[1])
    assert label == expected_label and probability == pytest.approx(expected_probability, abs=2e-3)


# -- ONNX ---------------------------------------------------------------------------------------------------------
def test_onnx_metadata_names_the_family(hytra_zoo, zoo, cache):
    for z, name in ((hytra_zoo, "hytra"), (zoo, "vit")):
        for fmt in ("onnx", "onnx-int8"):
            proto = onnx.load(str(cache.file(z, z.entries[0], fmt)))
            assert {p.key: p.value for p in proto.metadata_props}["prezoo.family"] == name, (name, fmt)


# -- `python -m zoo spaces` -----------------------------------------------------------------------------------------
def test_zoo_spaces_lists_every_familys_builtin_spaces():
    out = cli("zoo", "spaces")
    assert out.returncode == 0, out.stderr
    for family in FAMILIES.values():
        for name, space in family.spaces.items():
            assert f"{name}  [{space.hash}]  {family.title}  " in out.stdout
    assert "channels per scale [64, 128, 256]  ResAtt at S1, S2" in out.stdout
    bad = cli("zoo", "spaces", "nope")
    assert bad.returncode == 2 and "micro-hytra" in bad.stderr and "mini" in bad.stderr


# -- serving ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def live(hytra_zoo, tmp_path_factory) -> Iterator[Live]:
    app = create_app(hytra_zoo.root, cache_dir=tmp_path_factory.mktemp("server-cache"))
    with serve(app) as url:
        yield Live(url, app.state.prezoo)


def test_api_zoo_and_specialize_serve_the_hytra_entries(client, hytra_zoo):
    z = client.get("/api/zoo").json()
    assert z["family"] == "hytra" and [e["id"] for e in z["entries"]] == [a.id for a in ARCHS]
    assert [e["describe"] for e in z["entries"]] == [a.describe() for a in ARCHS]
    middle = params(MICRO_HYTRA, ARCHS[1])
    r = client.post("/api/specialize", json={"max_params": middle - 1})
    assert r.status_code == 200, r.text
    assert r.json()["entry"]["id"] == ARCHS[0].id and r.json()["entry"]["arch"] == ARCHS[0].to_dict()
    card = client.get(r.json()["downloads"]["card"])
    assert card.status_code == 200 and f"PreZoo HyTra `{ARCHS[0].id}`" in card.text


def test_predict_and_v2_infer_give_the_extracted_modules_outputs(client, live, hytra_zoo):
    entry = hytra_zoo.entries[1]
    x = images(live.server, 3)
    with torch.no_grad():
        expected = hytra_zoo.subnet(entry)(torch.from_numpy(x)).numpy()
    v2 = triton.InferenceServerClient(live.url.removeprefix("http://"), network_timeout=120)
    try:
        logits = v2.infer(entry.id, [pixel_values(x)]).as_numpy("logits")
    finally:
        v2.close()
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)
    r = predict(client, ("0.png", png(seed=0), "image/png"), model=entry.id, top_k="10")
    assert r.status_code == 200, r.text
    probabilities = np.exp(expected[0] - expected[0].max())
    probabilities /= probabilities.sum()
    for top in r.json()["predictions"][0]["top"]:
        assert top["probability"] == pytest.approx(probabilities[hytra_zoo.classes.index(top["label"])], abs=1e-5)


def test_the_ui_shows_the_hytra_entrys_layers(live, hytra_zoo):
    from tests.test_server_browser import gradio_call

    page = httpx.get(f"{live.url}/config", timeout=60).json()  # what the browser builds the page from
    props = [c.get("props", {}) for c in page["components"]]
    assert any("3 hybrid CNN/transformers sliced from one supernet" in str(p.get("value")) for p in props)
    [table] = [p for p in props if p.get("label") == "Architecture, per layer"]
    assert table["value"]["headers"] == list(HYTRA.layer_headers)
    highest = [p["maximum"] for what in ("parameters", "FLOPs") for p in props
               if str(p.get("label")).startswith(f"Max {what} (")]  # every entry fits
    with httpx.Client(base_url=live.url, timeout=300) as client:  # the page's own budget event, as the page sends it
        answer = gradio_call(client, "apply_budget", [*highest, None, "params", ""])
    summary, _plot, layers, card, _chosen, model = answer[:6]  # _chosen: the page's gr.State (not sent: None)
    entry = hytra_zoo.entry(model)
    assert entry.arch == ARCHS[1] and HYTRA.describe_arch(hytra_zoo.space, entry.arch) in summary
    assert layers["headers"] == list(HYTRA.layer_headers)
    assert layers["data"] == HYTRA.layer_rows(hytra_zoo.space, entry.arch)
    assert f"PreZoo HyTra `{entry.id}`" in card and "| layer | scale | op |" in card
