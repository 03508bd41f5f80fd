"""`python -m training pick`: a zoo's entries searched bucket by bucket in a uniformly trained MBConv supernet, on
held-out images with each path's BatchNorm recalibrated, then evaluated and packaged with the search as selector."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from training.config import PickConfig, TrainConfig
from training.evaluate import load_supernet
from training.pick import pick_buckets, validation_fitness
from training.preferred import Buckets
from zoo.family import get_family
from zoo.store import Zoo

ROOT = Path(__file__).resolve().parent.parent


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "training", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=600)


@pytest.fixture(scope="module")
def picked(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("pick") / "run"
    steps = ["train", "--out", str(run), "--space", "mbconv-tiny", "--sampler", "uniform", "--sandwich", "1",
             "--epochs", "0.03", "--batch-size", "64", "--warmup-epochs", "0.005", "--no-progress"]
    pick = ["pick", "--run", str(run), "--evaluations", "3", "--population", "2", "--val-images", "500"]
    for command in (steps, pick):
        done = _cli(*command)
        assert done.returncode == 0, done.stderr
    return run


def test_each_bucket_holds_its_best_scored_arch_and_the_scores_are_val_top1(picked):
    doc = json.loads((picked / "pick" / "preferred.json").read_text())
    assert doc["selector"]["method"] == "search" and doc["family"] == "mbconv"
    supernet = load_supernet(picked / "supernet.safetensors")
    space, family = supernet.space, get_family("mbconv")
    buckets = Buckets.default(space, "params")
    filled = [b for b in doc["buckets"] if b["entries"]]
    assert len(doc["buckets"]) == buckets.count and len(filled) >= 3
    fitness, words = validation_fitness(TrainConfig.load(picked / "config.json"), supernet, 500)
    # one image of the 500: this briefly trained supernet is near chance, its logits nearly tied, and a path scored
    # in another process (and order: pick scores the extremes first) can flip one of them by float rounding
    one_image = 100 / 500 + 1e-9
    assert "the first 500 of the 5000 images held out" in words and "recalibrated" in words
    for b in filled:
        (entry,) = b["entries"]
        arch = family.arch_from_dict(entry["arch"])
        assert b["low"] <= family.params(space, arch) < b["high"]
        assert fitness(arch) == pytest.approx(entry["score"], abs=one_image)
    for extreme in family.extreme_archs(space):  # scored beside the searches: its bucket's entry is at least as good
        k = buckets.index(family.params(space, extreme))
        if k is not None:
            assert doc["buckets"][k]["entries"][0]["score"] >= fitness(extreme) - one_image


@pytest.mark.slow  # evaluates on the 10k test images, packages
def test_a_picked_set_evaluates_and_packages_with_the_search_as_selector(picked, tmp_path):
    preferred = picked / "pick" / "preferred.json"
    done = _cli("evaluate", "--run", str(picked), "--preferred", str(preferred))
    assert done.returncode == 0, done.stderr
    done = _cli("package", "--run", str(picked), "--out", str(tmp_path / "zoo"), "--name", "mbconv-tiny-test")
    assert done.returncode == 0, done.stderr
    zoo = Zoo.load(tmp_path / "zoo")
    ids = {e["id"] for b in json.loads(preferred.read_text())["buckets"] for e in b["entries"]}
    assert {e.id for e in zoo.entries} == ids
    assert zoo.doc["selector"]["method"] == "search" and zoo.chosen_by.startswith("val")
    assert all(e.val_top1 is not None for e in zoo.entries)


@pytest.mark.slow  # evaluates on the 10k test images, packages
def test_packaging_refuses_a_preferred_set_other_than_the_evaluated_one(picked, tmp_path):
    preferred = picked / "pick" / "preferred.json"
    assert _cli("evaluate", "--run", str(picked), "--preferred", str(preferred)).returncode == 0
    evaluation = json.loads((picked / "eval_test.json").read_text())
    other = json.loads(preferred.read_text())
    other["buckets"] = [b for b in other["buckets"] if b["entries"]][:1]
    (tmp_path / "one.json").write_text(json.dumps(other))
    evaluation["preferred"] = str(tmp_path / "one.json")
    (picked / "eval_test.json").write_text(json.dumps(evaluation))
    done = _cli("package", "--run", str(picked), "--out", str(tmp_path / "zoo"), "--name", "x")
    assert done.returncode == 2 and "measured other archs than" in done.stderr, done.stderr


def test_pick_settings_are_checked():
    with pytest.raises(ValueError, match="algorithm must be one of"):
        PickConfig(algorithm="darts")
    done = _cli("pick", "--run", "nowhere", "--evaluations", "0")
    assert done.returncode == 2 and "--evaluations" in done.stderr


def test_a_finer_bucket_grid_doubles_the_buckets_of_a_ratio_grid_over_the_same_range():
    small = get_family("mbconv").spaces["mbconv-small"]
    default, finer = Buckets.default(small, "params"), pick_buckets(small, 2 ** 0.5)
    assert finer.count == 2 * default.count == 12
    assert (finer.edges()[0][0], finer.edges()[-1][1]) == pytest.approx((default.low, default.high))
    assert pick_buckets(small, None) == default


def test_the_cli_picks_on_a_bucket_grid_of_the_ratio_asked_each_bucket_holding_its_own(picked, tmp_path):
    done = _cli("pick", "--run", str(picked), "--evaluations", "3", "--population", "2", "--val-images", "500",
                "--bucket-ratio", "2", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    doc = json.loads((tmp_path / "preferred.json").read_text())
    space, family = load_supernet(picked / "supernet.safetensors").space, get_family("mbconv")
    smallest = family.cost_range(space)[0][0]  # the tiny space's default buckets are a width grid: from its smallest
    assert doc["selector"]["bucket_ratio"] == 2 and doc["buckets"][0]["low"] == smallest
    assert all(b["high"] / b["low"] == pytest.approx(2) for b in doc["buckets"])
    assert sum(bool(b["entries"]) for b in doc["buckets"]) >= 3
    for b in doc["buckets"]:
        assert all(b["low"] <= family.params(space, family.arch_from_dict(e["arch"])) < b["high"]
                   for e in b["entries"])
    done = _cli("pick", "--run", str(picked), "--bucket-ratio", "1")
    assert done.returncode == 2 and "--bucket-ratio" in done.stderr


@pytest.mark.slow  # two picks, in three processes
def test_buckets_searched_side_by_side_give_the_same_picks_and_scores(picked, tmp_path):
    """`--jobs 2` splits the buckets over two one-thread processes; every bucket's search is seeded alike, so at one
    thread the picks and their scores equal those of one process searching every bucket in turn."""
    docs = []
    for jobs in ("1", "2"):
        done = subprocess.run([sys.executable, "-m", "training", "pick", "--run", str(picked), "--evaluations", "3",
                               "--population", "2", "--val-images", "500", "--jobs", jobs, "--out",
                               str(tmp_path / jobs)], capture_output=True, text=True, cwd=ROOT, timeout=600,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert done.returncode == 0, done.stderr
        docs.append(json.loads((tmp_path / jobs / "preferred.json").read_text()))
    alone, side_by_side = docs
    assert side_by_side["buckets"] == alone["buckets"] and sum(bool(b["entries"]) for b in alone["buckets"]) >= 3
    assert side_by_side["stats"]["archs_scored"] == alone["stats"]["archs_scored"]
    assert side_by_side["selector"] == alone["selector"]
    done = _cli("pick", "--run", str(picked), "--jobs", "0")
    assert done.returncode == 2 and "--jobs" in done.stderr
