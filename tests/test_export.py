"""Export: ONNX parity and metadata, INT8/fp16, what each ONNX file says it is (ONNX's own fields, only the opset
domains it uses), the HF folder loaded three ways, `get --format`, the cache, Hub round trip."""

from __future__ import annotations

import json
import threading

import numpy as np
import onnx
import pytest
import timm
import torch
from safetensors.torch import load_file

from export.__main__ import main as export_main
from export.cache import ExportCache
from export.hub import push_folder
from export.onnx import PRODUCER, export_onnx, model_metadata, parity, run, session
from tests.zoo_fixtures import ENTRY_ARCHS, FMNIST_CLASSES, PREPROCESSING
from zoo import PreZooViT, ViT, Zoo, __version__


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return ExportCache(tmp_path_factory.mktemp("cache"))


def _x(n=6, seed=0):
    return torch.randn(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_onnx_parity_metadata_and_dynamic_batch(zoo, tmp_path, exporter):
    model = zoo.subnet(zoo.entries[2])
    path = export_onnx(model, tmp_path / "m.onnx", model_metadata(model, FMNIST_CLASSES, PREPROCESSING), exporter)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert proto.opset_import[0].version >= 17
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["prezoo.arch"]) == model.arch.to_dict()
    assert json.loads(meta["prezoo.labels"]) == FMNIST_CLASSES
    assert json.loads(meta["prezoo.preprocessing"]) == PREPROCESSING
    written_by = meta["prezoo.exporter"]  # who wrote the graph: "pytorch 2.14.1 (torchscript)"
    assert written_by.startswith(f"pytorch {torch.__version__.split('+')[0]}") and written_by.endswith(f"({exporter})")
    # outside a zoo: the model alone says what it is, version 1
    assert (proto.producer_name, proto.producer_version, proto.model_version) == (PRODUCER, __version__, 1)
    assert model.arch.id in proto.doc_string and model.arch.to_json() in proto.doc_string
    sess = session(path)
    for n in (1, 5, 33):
        diff, agree = parity(model, sess, _x(n, seed=n))
        assert diff <= 1e-4 and agree == 1.0
    # exact-size weights: the file is about the subnet's size, not the supernet's
    assert path.stat().st_size < 4 * sum(p.numel() for p in model.parameters()) * 1.2


def test_int8_and_fp16_exports_run(zoo, cache):
    entry = zoo.entries[3]
    fp32 = cache.file(zoo, entry, "onnx")
    int8 = cache.file(zoo, entry, "onnx-int8")
    fp16 = cache.file(zoo, entry, "onnx-fp16")
    assert int8.stat().st_size < fp32.stat().st_size / 2.5
    assert fp16.stat().st_size < fp32.stat().st_size * 0.6
    x = _x(8).numpy()
    ref = run(session(fp32), x)
    for path in (int8, fp16):
        out = run(session(path), x)
        assert out.shape == ref.shape and np.isfinite(out).all()
        meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        assert meta["prezoo.arch_id"] == entry.id
    assert np.abs(run(session(fp16), x) - ref).max() < 0.05  # fp16 rounding on logits of size ~1


def used_domains(proto: onnx.ModelProto) -> set[str]:
    return {"" if n.domain == "ai.onnx" else n.domain for n in proto.graph.node} | {""}


def test_every_onnx_file_says_what_it_is_and_declares_only_the_domains_it_uses(zoo, cache):
    """fp32, INT8 and fp16 of a zoo entry: doc_string names the zoo, entry, arch, size and accuracy; model_version is
    the zoo's weights hash as a positive int; PreZoo is the producer; opset_import lists exactly the domains the nodes
    use (quantize_int8's pre-processing leaves ONNX Runtime's whole list of 9 declared); ONNX Runtime reads the same
    fields."""
    entry = zoo.entries[2]
    version = int(zoo.checksum[:13], 16)
    for fmt in ("onnx", "onnx-int8", "onnx-fp16"):
        path = cache.file(zoo, entry, fmt)
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto, full_check=True)
        assert {o.domain for o in proto.opset_import} == used_domains(proto), fmt
        assert (proto.producer_name, proto.producer_version, proto.model_version) == (PRODUCER, __version__, version)
        for needle in (f"zoo {zoo.name}", entry.id, entry.arch.to_json(), f"{entry.params:,} parameters",
                       f"top-1 {entry.top1:.2f}%, top-5 {entry.top5:.2f}%", zoo.checksum[:16]):
            assert needle in proto.doc_string, (fmt, needle)
        meta = session(path).get_modelmeta()
        assert (meta.description, meta.version, meta.producer_name) == (proto.doc_string, version, PRODUCER)
    int8 = onnx.load(str(cache.file(zoo, entry, "onnx-int8")))
    assert "INT8" in int8.doc_string and [(o.domain, o.version) for o in int8.opset_import] == [("", 17)]


def test_get_writes_the_hf_folder_or_one_file(zoo, cache, tmp_path, capsys):
    """`get --format hf` writes what from_pretrained reads (the folder a hf-zip download unpacks to); `safetensors`
    the weights alone; the ONNX formats one file each."""
    entry = zoo.entries[1]
    written = {}
    for fmt in ("hf", "safetensors", "onnx-int8"):
        out = tmp_path / fmt
        assert export_main(["get", "--zoo", str(zoo.root), "--id", entry.id, "--format", fmt, "--out", str(out),
                            "--cache", str(cache.root)]) == 0
        written[fmt] = sorted(p.name for p in out.iterdir())
        assert capsys.readouterr().out.startswith(f"chose {entry.id}: ")
    assert written == {"hf": ["README.md", "config.json", "model.safetensors"], "safetensors": ["model.safetensors"],
                       "onnx-int8": ["model.int8.onnx"]}
    x = _x()
    with torch.no_grad():
        assert torch.equal(PreZooViT.from_pretrained(tmp_path / "hf").eval()(x), zoo.subnet(entry)(x))
    assert (tmp_path / "hf" / "README.md").read_bytes() == (cache.file(zoo, entry, "safetensors", "README.md")
                                                            .read_bytes())


def assert_folder_loads_every_way(folder, x, ref, hub_class, module_class, labels) -> None:
    """An exported folder gives exactly `ref`'s logits through the family's Hub class, timm's `local-dir:` and its
    named architecture with the config's model_args, and as plain safetensors loaded into the family's module (no
    PreZoo class needed beyond the architecture's definition)."""
    mixin = hub_class.from_pretrained(folder)
    assert not mixin.training and torch.equal(mixin(x), ref) and mixin.labels == labels
    local = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    assert type(local) is hub_class and torch.equal(local(x), ref)
    config = json.loads((folder / "config.json").read_text())
    overlay = timm.create_model(hub_class.timm_name, pretrained=True, pretrained_cfg_overlay={
        "file": str(folder / "model.safetensors")}, **config["model_args"]).eval()
    assert torch.equal(overlay(x), ref)
    plain = module_class(hub_class.space_from_dict(config["space"]), hub_class.arch_from_dict(config["arch"]))
    plain.load_state_dict(load_file(folder / "model.safetensors"), strict=True)
    assert torch.equal(plain.eval()(x), ref)


def test_hf_folder_loads_three_ways(zoo, cache):
    entry = zoo.entries[1]
    folder = cache.get(zoo, entry, "safetensors")
    x = _x()
    with torch.no_grad():
        ref = zoo.subnet(entry)(x)
        assert_folder_loads_every_way(folder, x, ref, PreZooViT, ViT, FMNIST_CLASSES)
    card = (folder / "README.md").read_text()
    for needle in ("pipeline_tag: image-classification", "library_name: prezoo", "fashion_mnist", "accuracy",
                   f"{entry.params:,}", "FLOPs rule"):
        assert needle in card


def test_from_pretrained_is_strict(zoo, cache, tmp_path):
    import shutil

    from safetensors.torch import save_file

    folder = shutil.copytree(cache.get(zoo, zoo.entries[0], "safetensors"), tmp_path / "f")
    state = load_file(folder / "model.safetensors")
    state.pop("head.bias")
    save_file(state, folder / "model.safetensors")
    with pytest.raises(RuntimeError, match="head.bias"):
        PreZooViT.from_pretrained(folder)
    with pytest.raises(RuntimeError, match="head.bias"):
        timm.create_model(f"local-dir:{folder}", pretrained=True)


def test_concurrent_requests_build_an_export_once(zoo, tmp_path):
    cache = ExportCache(tmp_path / "c")
    entry = zoo.entries[0]
    paths, barrier = [], threading.Barrier(8)

    def ask():
        barrier.wait()
        paths.append(cache.file(zoo, entry, "onnx"))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(paths)) == 1 and len(paths) == 8
    assert sum(cache.builds.values()) == 1
    # a damaged cached file is detected (by checksum) and rebuilt for a fresh process
    data = bytearray(paths[0].read_bytes())
    data[100] ^= 0xFF
    paths[0].write_bytes(bytes(data))
    fresh = ExportCache(tmp_path / "c")
    assert fresh.file(zoo, entry, "onnx").read_bytes() != bytes(data) and sum(fresh.builds.values()) == 1
    with pytest.raises(ValueError, match="unknown export format 'tflite'"):
        cache.get(zoo, entry, "tflite")


def test_hub_round_trip_model_and_zoo(zoo, cache, local_hub, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "test-admin-token")
    entry = zoo.entries[1]
    push_folder(cache.get(zoo, entry, "safetensors"), "prezoo/mini-test-model")
    push_folder(zoo.root, "prezoo/mini-test-zoo")
    x = _x()
    with torch.no_grad():
        ref = zoo.subnet(entry)(x)
        assert torch.equal(PreZooViT.from_pretrained("prezoo/mini-test-model").eval()(x), ref)
        assert torch.equal(timm.create_model("hf-hub:prezoo/mini-test-model", pretrained=True).eval()(x), ref)
    pulled = Zoo.load("prezoo/mini-test-zoo")
    assert pulled.root != zoo.root and pulled.checksum == zoo.checksum
    assert (pulled.root / "supernet.safetensors").read_bytes() == (zoo.root / "supernet.safetensors").read_bytes()
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)  # warm cache: works offline
    assert Zoo.load("prezoo/mini-test-zoo").checksum == zoo.checksum
    assert ENTRY_ARCHS[1].id == entry.id
