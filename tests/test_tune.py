"""`python -m training tune`: every zoo entry fine-tuned standalone, stored in the zoo and served from its own weights.

Real zoos (a `mini` ViT zoo, an `mbconv-small` zoo with per-path BatchNorm statistics), trained for real on synthetic
images; accuracies are measured again here, never taken from the index.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.zoo_fixtures import FMNIST_CLASSES, PREPROCESSING, make_zoo
from training.__main__ import main as training_main
from training.config import TuneConfig
from training.data import load_data
from training.evaluate import accuracy_of, tensor_batches
from training.tune import tune_zoo
from zoo.family import FAMILIES
from zoo.io import sha256_file
from zoo.layers import bn_statistics
from zoo.schema import ZooError
from zoo.store import INDEX, WEIGHTS, Zoo, ZooEntry, write_zoo

TRAINING = {"data": "synthetic:384", "seed": 0, "val_size": 128}
CFG = TuneConfig(epochs=2, lr=5e-3, batch_size=64, augment=False, crop_padding=0, progress=False)


def mbconv_zoo(out: Path) -> Path:
    """A freshly initialised mbconv-small zoo of three entries, each with its own BatchNorm statistics."""
    family = FAMILIES["mbconv"]
    space = family.spaces["mbconv-small"]
    torch.manual_seed(0)
    supernet = family.supernet(space).eval()
    smallest, largest = family.extreme_archs(space)
    archs = [smallest, family.random_arch(space, random.Random(3)), largest]
    entries = [ZooEntry(a, family.params(space, a), family.flops(space, a), 50.0, 90.0, 1.0) for a in archs]
    stats = {a.id: bn_statistics(supernet.extract(a)) for a in archs}
    return write_zoo(out, name="tiny-mbconv", space=space, state=supernet.state_dict(), entries=entries,
                     classes=FMNIST_CLASSES, preprocessing=PREPROCESSING, weights_dtype=torch.float16,
                     family="mbconv", path_stats=stats, training=TRAINING)


def vit_zoo(out: Path) -> Path:
    return make_zoo(out, torch.float16, training=TRAINING)


ZOOS = {"vit": vit_zoo, "mbconv": mbconv_zoo}


def batches_of(split: str) -> list:
    return tensor_batches(load_data(TRAINING["data"], split, img_size=28, in_chans=1, val_size=TRAINING["val_size"],
                                    seed=0)[0])


@pytest.mark.parametrize("family", list(ZOOS))
def test_tuned_entries_serve_their_own_weights_and_record_what_they_measure(tmp_path, family):
    zoo = Zoo.load(ZOOS[family](tmp_path / "zoo"))
    zoo.with_latency({zoo.entries[0].id: {"median_ms": 1.0, "p10_ms": 0.9, "p90_ms": 1.2}}, {"threads": 1})
    before = {e.id: zoo.subnet(e).state_dict() for e in zoo.entries}
    tuned = tune_zoo(zoo.root, tmp_path / "work", CFG)

    assert tuned.tuned == {e.id for e in zoo.entries} and Zoo.load(zoo.root).tuned == tuned.tuned
    assert tuned.entries[0].latency == zoo.entries[0].latency  # the same graph: its latency stays
    test, val = batches_of("test"), batches_of("val")
    for entry in tuned.entries:
        served = tuned.subnet(entry)
        stored = load_file(tmp_path / "work" / f"{entry.id}.safetensors")
        assert served.state_dict().keys() == stored.keys() == before[entry.id].keys()
        for key, t in served.state_dict().items():  # the tuned weights, as the zoo's fp16 file holds them
            assert torch.equal(t, stored[key].half().to(t.dtype) if t.is_floating_point() else stored[key]), key
        assert any(not torch.equal(t, before[entry.id][k]) for k, t in served.state_dict().items())
        assert not served.training
        assert accuracy_of(served, test).top1 == entry.top1 and accuracy_of(served, val).top1 == entry.val_top1
    record = tuned.doc["tuning"]
    assert record["recipe"] == CFG.recipe() and set(record["entries"]) == tuned.tuned
    assert all(len(r["val_top1_by_epoch"]) == CFG.epochs for r in record["entries"].values())
    assert tuned.doc["validation"]["images"] == TRAINING["val_size"]


def test_an_interrupted_tuning_resumes_where_it_stopped_and_gives_the_same_zoo(tmp_path):
    first = tune_zoo(vit_zoo(tmp_path / "a"), tmp_path / "work-a", CFG)
    shutil.copytree(tmp_path / "work-a", tmp_path / "work-b")
    redo = first.entries[1].id
    for suffix in (".json", ".safetensors"):
        (tmp_path / "work-b" / f"{redo}{suffix}").unlink()
    kept = {e.id: (tmp_path / "work-b" / f"{e.id}.json").read_text() for e in first.entries if e.id != redo}
    second = tune_zoo(vit_zoo(tmp_path / "b"), tmp_path / "work-b", CFG)
    assert {i: (tmp_path / "work-b" / f"{i}.json").read_text() for i in kept} == kept  # not trained again
    assert sha256_file(first.root / WEIGHTS) == sha256_file(second.root / WEIGHTS)  # the redone entry: bit for bit
    assert [e.to_dict() for e in first.entries] == [e.to_dict() for e in second.entries]


def test_a_work_folder_of_another_zoo_or_recipe_and_a_zoo_tuned_otherwise_are_refused(tmp_path):
    tuned = tune_zoo(vit_zoo(tmp_path / "zoo"), tmp_path / "work", CFG)
    digest = sha256_file(tuned.root / WEIGHTS)
    assert tune_zoo(tuned.root, tmp_path / "elsewhere", CFG).tuned == tuned.tuned  # done: nothing to do
    assert sha256_file(tuned.root / WEIGHTS) == digest and not (tmp_path / "elsewhere").exists()
    with pytest.raises(ValueError, match="is tuned already, with other settings"):
        tune_zoo(tuned.root, tmp_path / "work", TuneConfig(**{**CFG.recipe(), "epochs": 3, "progress": False}))
    other = make_zoo(tmp_path / "other", torch.float16, seed=1, training=TRAINING)
    with pytest.raises(ValueError, match=r"holds a tuning of another zoo or with other settings \(weights_sha256"):
        tune_zoo(other, tmp_path / "work", CFG)
    fresh = vit_zoo(tmp_path / "fresh")
    with pytest.raises(ValueError, match=r"other settings \(recipe differ"):
        tune_zoo(fresh, tmp_path / "work", TuneConfig(**{**CFG.recipe(), "lr": 1e-3, "progress": False}))


def rewritten(root: Path, weights: dict | None = None, index: dict | None = None) -> Path:
    """The zoo with its weight file and/or index replaced (the index's sha256 updated), as corruption would."""
    if weights is not None:
        save_file(weights, root / WEIGHTS)
    doc = index or json.loads((root / INDEX).read_text())
    doc["weights"]["sha256"] = sha256_file(root / WEIGHTS)
    (root / INDEX).write_text(json.dumps(doc))
    return root


def test_own_weights_missing_broken_or_unexplained_are_refused_naming_the_entry(tmp_path):
    tuned = tune_zoo(mbconv_zoo(tmp_path / "zoo"), tmp_path / "work", CFG)
    entry = tuned.entries[1].id
    tensors = load_file(tuned.root / WEIGHTS)
    key = next(k for k in tensors if k.startswith(f"paths.{entry}.") and "running" not in k)
    cases = {
        "one missing": ({k: v for k, v in tensors.items() if k != key}, None,
                        rf"the own weights of entry {entry} do not fit its model: no weights for "),
        "all missing": ({k: v for k, v in tensors.items() if not k.startswith(f"paths.{entry}.")}, None,
                        rf"entry {entry} has no weights \(paths\.{entry}\.\*\), though the index says it has its own"),
        "wrong shape": ({**tensors, key: tensors[key].flatten()[:1].clone()}, None,
                        rf"the own weights of entry {entry} do not fit its model: weights "),
        "no tuning block": (None, {k: v for k, v in json.loads((tuned.root / INDEX).read_text()).items()
                                   if k != "tuning"},
                            r"entries\[0\] has its own weights but the index has no `tuning`"),
    }
    for name, (weights, index, message) in cases.items():
        root = shutil.copytree(tuned.root, tmp_path / name.replace(" ", "-"))
        with pytest.raises(ZooError, match=message):
            Zoo.load(rewritten(root, weights, index))


@pytest.mark.slow
def test_the_cli_tunes_entries_side_by_side_and_says_what_is_next(tmp_path, capsys):
    root = vit_zoo(tmp_path / "zoo")
    args = ["tune", "--zoo", str(root), "--work", str(tmp_path / "work"), "--epochs", "1", "--batch-size", "64",
            "--no-augment", "--crop-padding", "0", "--jobs", "2", "--no-progress"]
    assert training_main(args) == 0
    out = capsys.readouterr().out
    assert f"wrote {root}: 4 entries with their own weights" in out and "training variants" in out
    assert Zoo.load(root).doc["tuning"]["recipe"]["epochs"] == 1


@pytest.mark.slow
def test_exports_of_a_tuned_entry_carry_its_own_weights_and_say_so(tmp_path):
    """What the server and the Hub get (the export cache's ONNX file, run by ONNX Runtime; the model card) is the
    tuned model, not the supernet's slice."""
    import onnxruntime as ort

    from export.cache import ExportCache

    tuned = tune_zoo(mbconv_zoo(tmp_path / "zoo"), tmp_path / "work", CFG)
    entry = tuned.entries[1]
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(4, 1, 28, 28)).astype(np.float32))
    with torch.no_grad():
        own, shared = tuned.subnet(entry)(x).numpy(), tuned.supernet.extract(entry.arch).eval()(x).numpy()
    cache = ExportCache(tmp_path / "cache")
    session = ort.InferenceSession(str(cache.file(tuned, entry, "onnx")), providers=["CPUExecutionProvider"])
    served = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert np.abs(served - own).max() < 1e-4 < np.abs(served - shared).max()
    card = (cache.get(tuned, entry, "safetensors") / "README.md").read_text()
    assert "then fine-tuned standalone for 2 epochs (`python -m training tune`)" in card
    assert "no retraining" not in card


def test_the_shipped_mbconv_zoo_is_picked_and_tuned_as_its_build_script_says():
    zoo = Zoo.load("mbconv-fmnist")
    assert zoo.tuned == {e.id for e in zoo.entries}
    script = (Path(__file__).resolve().parent.parent / "scripts" / "build-mbconv-zoo.sh").read_text()
    (line,) = [line for line in script.splitlines() if "-m training tune " in line]
    words = line.split()
    flags = dict(zip(words, words[1:], strict=False))
    recipe = zoo.doc["tuning"]["recipe"]
    assert (int(flags["--epochs"]), float(flags["--lr"])) == (recipe["epochs"], recipe["lr"])
    assert set(zoo.doc["tuning"]["entries"]) == zoo.tuned
    (line,) = [line for line in script.splitlines() if "--bucket-ratio" in line]  # the pick's grid, as packaged
    words = line.split()
    assert float(words[words.index("--bucket-ratio") + 1]) == zoo.doc["selector"]["bucket_ratio"]
