"""The zoo store: verified loading, budgets, Pareto front, instant slicing, CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from tests.zoo_fixtures import ACCURACY, ENTRY_ARCHS, MINI, make_zoo
from zoo import BudgetError, Zoo, ZooError, params
from zoo.budget import parse_count, parse_latency_ms
from zoo.stats import wilson_interval
from zoo.store import CHOSEN_ON_TEST, ZooEntry, write_zoo


def test_round_trip_and_entries(zoo):
    assert [e.arch for e in zoo.entries] == ENTRY_ARCHS and [e.top1 for e in zoo.entries] == ACCURACY
    assert zoo.space == MINI and len(zoo.classes) == 10 and zoo.preprocessing["img_size"] == 28
    assert all(e.params == params(MINI, e.arch) for e in zoo.entries)


@pytest.mark.parametrize("text, value", [("6M", 6e6), ("0.3m", 3e5), ("1.4G", 1.4e9), ("500000", 5e5),
                                         (250_000, 250_000.0), ("2e5", 2e5), ("50 K", 5e4)])
def test_parse_count(text, value):
    assert parse_count(text) == pytest.approx(value)


@pytest.mark.parametrize("text, ms", [("12ms", 12.0), ("0.5s", 500.0), ("3", 3.0), (2.5, 2.5), ("250us", 0.25)])
def test_parse_latency(text, ms):
    assert parse_latency_ms(text) == pytest.approx(ms)


@pytest.mark.parametrize("bad", ["", "lots", "-3M", "0", "6X", "nan", True, "1e400"])
def test_bad_budgets_are_clear_errors(bad):
    with pytest.raises(ValueError, match="must be"):
        parse_count(bad, "max_params")


def test_query_picks_the_most_accurate_entry_within_all_limits(zoo):
    assert zoo.query().arch == MINI.largest_arch()
    assert zoo.query(max_params="0.25M").top1 == 86.5
    assert zoo.query(max_params=params(MINI, ENTRY_ARCHS[1])).arch == ENTRY_ARCHS[1]  # limits are inclusive
    assert zoo.query(max_params="0.25M", max_flops="5.9M").arch == MINI.smallest_arch()


def test_impossible_budget_names_the_nearest_entries(zoo):
    with pytest.raises(BudgetError, match=r"no entry of zoo test-zoo fits max_params=50K; nearest: e64-d4") as e:
        zoo.query(max_params="50K")
    assert e.value.nearest[0].arch == MINI.smallest_arch()
    with pytest.raises(BudgetError, match="run `prezoo profile"):
        zoo.query(max_latency_ms="5ms")


def test_pareto_front(zoo):
    front = zoo.pareto("params")
    assert [e.arch for e in front] == [ENTRY_ARCHS[0], ENTRY_ARCHS[1], ENTRY_ARCHS[3]]
    with pytest.raises(ValueError, match="cost must be one of"):
        zoo.pareto("speed")


def test_subnet_is_the_exact_standalone_model(zoo):
    arch = ENTRY_ARCHS[2]
    sub = zoo.subnet(zoo.entries[2])
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(sub(x), zoo.supernet(x, arch))
    assert sum(p.numel() for p in sub.parameters()) == params(MINI, arch)
    assert zoo.subnet(arch.id).arch == arch
    with pytest.raises(KeyError, match="no entry 'e1-d1-x'"):
        zoo.subnet("e1-d1-x")


def test_fp16_weights_load_as_float32(tmp_path):
    z = Zoo.load(make_zoo(tmp_path, dtype=torch.float16))
    assert z.doc["weights"]["dtype"] == "torch.float16"
    assert next(z.supernet.parameters()).dtype == torch.float32


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_corrupt_truncated_or_mismatched_files_are_named(zoo_dir, tmp_path):
    bad = _copy(zoo_dir, tmp_path / "flip")
    data = bytearray((bad / "supernet.safetensors").read_bytes())
    data[-10] ^= 0x01
    (bad / "supernet.safetensors").write_bytes(bytes(data))
    with pytest.raises(ZooError, match=r"supernet.safetensors does not match .*zoo.json: sha256"):
        Zoo.load(bad)
    trunc = _copy(zoo_dir, tmp_path / "trunc")
    (trunc / "zoo.json").write_text((trunc / "zoo.json").read_text()[:200])
    with pytest.raises(ZooError, match=r"cannot read .*zoo.json: .*truncated or corrupt"):
        Zoo.load(trunc)
    gone = _copy(zoo_dir, tmp_path / "gone")
    (gone / "supernet.safetensors").unlink()
    with pytest.raises(ZooError, match="supernet.safetensors is missing"):
        Zoo.load(gone)
    lied = _copy(zoo_dir, tmp_path / "lied")
    doc = json.loads((lied / "zoo.json").read_text())
    doc["entries"][0]["params"] += 1
    (lied / "zoo.json").write_text(json.dumps(doc))
    with pytest.raises(ZooError, match="says id/params/flops"):
        Zoo.load(lied)
    with pytest.raises(ZooError, match="not a directory and not a Hub repo id"):
        Zoo.load(tmp_path / "nowhere" / "deeper" / "x")


@pytest.mark.parametrize("change, message", [
    (lambda p: p.pop("mean"), "preprocessing: lacks mean"),
    (lambda p: p.update(in_chans=3), "preprocessing: is for 28px x 3 channels but the space takes 28px x 1"),
    (lambda p: p.update(std=[0.0]), "std must be positive"),
    (lambda p: p.update(mean=["0.3"]), "mean must be 1 number"),
    (lambda p: p.update(interpolation="cubic"), "interpolation must be one of"),
    (lambda p: p.update(crop_pct=1.5), r"crop_pct must lie in \(0, 1\]"),
])
def test_preprocessing_that_cannot_feed_the_models_is_refused_on_write_and_load(zoo_dir, tmp_path, change, message):
    bad = _copy(zoo_dir, tmp_path / "bad")
    doc = json.loads((bad / "zoo.json").read_text())
    change(doc["preprocessing"])
    (bad / "zoo.json").write_text(json.dumps(doc))
    with pytest.raises(ZooError, match=message):
        Zoo.load(bad)
    zoo = Zoo.load(zoo_dir)
    with pytest.raises(ValueError, match=message):
        write_zoo(tmp_path / "new", name="x", space=zoo.space, state=zoo.supernet.state_dict(), entries=zoo.entries,
                  classes=zoo.classes, preprocessing=doc["preprocessing"])


def _zoo_cli(*args, module: str = "zoo"):
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=300)


def test_cli_list_get_profile(zoo_dir, tmp_path):
    import shutil

    z = shutil.copytree(zoo_dir, tmp_path / "z")
    listed = _zoo_cli("list", "--zoo", str(z))
    assert listed.returncode == 0 and all(a.id in listed.stdout for a in ENTRY_ARCHS)
    cache = str(tmp_path / "cache")
    got = _zoo_cli("get", "--zoo", str(z), "--max-params", "0.25M", "--format", "onnx", "--out", str(tmp_path / "o"),
                   "--cache", cache, module="export")
    assert got.returncode == 0, got.stderr
    assert f"chose {ENTRY_ARCHS[1].id}" in got.stdout and (tmp_path / "o" / "model.onnx").stat().st_size > 100_000
    prof = _zoo_cli("profile", "--zoo", str(z), "--cache", cache, "--runs", "10", "--warmup", "2", module="export")
    assert prof.returncode == 0, prof.stderr
    reloaded = Zoo.load(z)
    assert all(e.latency["p10_ms"] <= e.latency["median_ms"] <= e.latency["p90_ms"] for e in reloaded.entries)
    assert reloaded.doc["latency_protocol"]["threads"] == 2
    assert reloaded.query(max_latency_ms="1s").arch == MINI.largest_arch()
    for args, msg, module in (
            (["get", "--zoo", str(z), "--max-params", "1K", "--out", str(tmp_path / "x")], "nearest", "export"),
            (["get", "--zoo", str(z), "--max-params", "lots", "--out", str(tmp_path / "x")], "must be", "export"),
            (["list", "--zoo", str(tmp_path / "missing" / "zoo")], "no zoo at", "zoo")):
        bad = _zoo_cli(*args, module=module)
        assert bad.returncode == 2 and msg in bad.stderr and "Traceback" not in bad.stderr


def test_write_zoo_replaces_a_zoo_as_one_unit_and_never_writes_an_invalid_one(tmp_path, zoo):
    out = tmp_path / "zoo"
    args = dict(name="x", space=zoo.space, state=zoo.supernet.state_dict(), entries=zoo.entries, classes=zoo.classes,
                preprocessing=zoo.preprocessing)
    write_zoo(out, **args)
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    bad = [ZooEntry(e.arch, e.params, e.flops, float("nan")) for e in zoo.entries]
    with pytest.raises(ZooError, match=r"entries\[0\]\.top1"):
        write_zoo(out, **{**args, "entries": bad, "name": "y"})
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first  # the old zoo, untouched
    write_zoo(out, **{**args, "name": "y", "weights_dtype": torch.float16})
    assert Zoo.load(out).name == "y" and Zoo.load(out).doc["weights"]["dtype"] == "torch.float16"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["zoo"]  # no temp folder or old copy left
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="holds files that are not a zoo's"):
        write_zoo(out, **args)
    assert (out / "notes.txt").read_text() == "mine"


def test_wilson_interval_matches_known_values_and_stays_in_range():
    from zoo.stats import wilson_interval

    lo, hi = wilson_interval(50.0, 100)  # the textbook case: 0.4038 to 0.5962
    assert (round(lo, 2), round(hi, 2)) == (40.38, 59.62)
    lo, hi = wilson_interval(90.1, 10_000)  # the default zoo's best entry: about +-0.59 pp
    assert 89.49 < lo < 89.51 and 90.66 < hi < 90.68
    assert wilson_interval(0.0, 20)[0] == 0.0 and wilson_interval(100.0, 20)[1] == 100.0
    assert wilson_interval(100.0, 20)[0] < 100.0  # 20 of 20 right is not a certain 100%
    with pytest.raises(ValueError):
        wilson_interval(50.0, 0)


def test_cheaper_entries_within_the_chosen_interval_are_named(tmp_path, zoo):
    doc = json.loads((zoo.root / "zoo.json").read_text())
    assert zoo.equivalent_cheaper(zoo.query()) == []  # no test-set size recorded: no claim either way
    for n, expected in ((100, 3), (100_000, 0)):  # 89% on 100 images is +-6 pp; on 100k +-0.2 pp
        folder = tmp_path / str(n)
        folder.mkdir()
        (folder / "supernet.safetensors").write_bytes((zoo.root / "supernet.safetensors").read_bytes())
        (folder / "zoo.json").write_text(json.dumps({**doc, "eval_images": n}))
        sized = Zoo.load(folder)
        best = sized.query()
        assert len(sized.equivalent_cheaper(best)) == expected
        assert all(e.params < best.params for e in sized.equivalent_cheaper(best))


# -- which accuracy chooses: validation where the zoo records it, else test -------------------------------------------
TRAINING = {"data": "fashion-mnist", "seed": 0, "val_size": None}
VAL_ACCURACY = [84.0, 85.0, 87.0, 87.0]  # ranks otherwise than test's ACCURACY: the third best, tied with the fourth


def validated(folder, images: int = 5000):
    """The fixture zoo (test top-1: ACCURACY) with validation top-1 VAL_ACCURACY recorded in place, on `images`
    held-out images of its training."""
    zoo = Zoo.load(make_zoo(folder, training=TRAINING, eval_images=10_000))
    zoo.with_validation({"source": "fashion-mnist", "split": "val", "held_out_of": "train", "images": images,
                         "seed": 0}, {e.id: (v, 99.0) for e, v in zip(zoo.entries, VAL_ACCURACY, strict=True)})
    return Zoo.load(folder)


def test_budgets_the_front_and_equivalence_choose_on_validation_and_ties_go_to_the_cheaper(tmp_path, zoo):
    val = validated(tmp_path / "val")
    assert (val.chosen_by, zoo.chosen_by) == ("validation", CHOSEN_ON_TEST)
    assert [e.top1 for e in val.entries] == ACCURACY  # test top-1 kept as reported
    assert val.query().arch == ENTRY_ARCHS[2] and zoo.query().arch == ENTRY_ARCHS[3]  # 87.0 = 87.0: the cheaper
    assert val.query(max_params="0.25M").arch == ENTRY_ARCHS[1] == zoo.query(max_params="0.25M").arch
    assert [e.arch for e in val.pareto("params")] == ENTRY_ARCHS[:3]
    assert [e.arch for e in zoo.pareto("params")] == [ENTRY_ARCHS[0], ENTRY_ARCHS[1], ENTRY_ARCHS[3]]
    # the equivalence is judged on validation's images: 87% on 5,000 is 86.0-87.9, on 100 it is 78.9-92.3
    assert val.choice_interval(val.entries[2]) == pytest.approx(wilson_interval(87.0, 5000))
    assert val.equivalent_cheaper(val.entries[3]) == [val.entries[2]]
    wide = validated(tmp_path / "wide", images=100)
    assert [e.arch for e in wide.equivalent_cheaper(wide.entries[2])] == ENTRY_ARCHS[:2]
    assert "chosen on validation top-1 (5,000 held-out fashion-mnist training images, seed 0" in val.choice_text()
    assert "chosen on test top-1 (this zoo records no validation accuracy)" in zoo.choice_text()


def test_the_api_shows_test_with_its_interval_and_says_which_accuracy_chose(tmp_path, zoo):
    from server.api import entry_json, zoo_json

    val = validated(tmp_path / "val")
    shown = zoo_json(val, [entry_json(val, e, set()) for e in val.entries])
    assert shown["chosen_by"] == "validation" and shown["validation"]["images"] == 5000
    assert shown["pareto"]["params"] == [a.id for a in ENTRY_ARCHS[:3]] and "test top-1 reported" in shown["choice"]
    assert [(e["top1"], e["val_top1"]) for e in shown["entries"]] == list(zip(ACCURACY, VAL_ACCURACY, strict=True))
    assert shown["entries"][0]["top1_interval"] == [round(x, 3) for x in wilson_interval(84.0, 10_000)]
    old = zoo_json(zoo, [entry_json(zoo, e, set()) for e in zoo.entries])
    assert (old["chosen_by"], old["validation"]) == (CHOSEN_ON_TEST, None)
    assert all(e["val_top1"] is None and e["val_top5"] is None for e in old["entries"])
